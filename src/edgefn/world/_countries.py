"""Per-country grid carbon intensity and per-region compute price, for locations' cost and carbon.

Carbon: approximate average grid intensity of electricity generation in gCO2e/kWh, rounded to
10 g, from Ember's Global Electricity Review / Our World in Data "carbon intensity of electricity"
(2022 values, 2021 where 2022 is missing; small islands from their oil-heavy generation mix).
Countries not listed fall back to their continent's typical value.

Price: the on-demand price of one general-purpose 2-vCPU instance-hour in US dollars, as the
ratio of a region's price to US-East in public cloud price lists (2023; for example about 1.6 for
São Paulo, 1.3 for Tokyo or Sydney). A location's ``cost_per_hour`` is that price for the unit of
capacity the planner places, so only ratios between locations matter.
"""

from __future__ import annotations

from types import MappingProxyType

__all__ = ["CARBON_G_PER_KWH", "carbon_for", "cost_for"]

BASE_COST_PER_HOUR = 0.096

CARBON_G_PER_KWH: MappingProxyType[str, float] = MappingProxyType(
    {
        "Albania": 30, "Algeria": 490, "Angola": 170, "Argentina": 350, "Armenia": 200,
        "Australia": 550, "Austria": 110, "Azerbaijan": 470, "Bahrain": 500, "Bangladesh": 560,
        "Barbados": 600, "Belarus": 440, "Belgium": 150, "Bhutan": 20, "Bolivia": 400,
        "Botswana": 850, "Brazil": 100, "Brunei": 570, "Bulgaria": 400, "Burkina Faso": 470,
        "Cambodia": 400, "Canada": 130, "Chile": 300, "China": 580, "Colombia": 160,
        "Costa Rica": 30, "Croatia": 200, "Cyprus": 620, "Czech Republic": 450, "DR Congo": 30,
        "Denmark": 150, "Djibouti": 600, "Dominican Republic": 550, "Ecuador": 160, "Egypt": 470,
        "Estonia": 400, "Fiji": 300, "Finland": 80, "France": 60, "French Polynesia": 450,
        "Georgia": 110, "Germany": 380, "Ghana": 400, "Greece": 350, "Grenada": 650, "Guam": 650,
        "Guatemala": 330, "Guyana": 650, "Honduras": 350, "Hong Kong": 650, "Hungary": 200,
        "Iceland": 30, "India": 630, "Indonesia": 600, "Iraq": 600, "Ireland": 330, "Israel": 500,
        "Italy": 350, "Ivory Coast": 420, "Jamaica": 550, "Japan": 480, "Jordan": 400,
        "Kazakhstan": 650, "Kenya": 80, "Kuwait": 550, "Laos": 250, "Latvia": 120,
        "Lebanon": 600, "Lithuania": 160, "Luxembourg": 80, "Macau": 450, "Madagascar": 480,
        "Malaysia": 580, "Maldives": 600, "Mauritius": 600, "Mexico": 400, "Moldova": 600,
        "Mongolia": 750, "Mozambique": 120, "Myanmar": 400, "Namibia": 100, "Nepal": 20,
        "Netherlands": 320, "New Caledonia": 650, "New Zealand": 110, "Nigeria": 400,
        "North Macedonia": 450, "Norway": 30, "Oman": 480, "Pakistan": 400, "Panama": 180,
        "Paraguay": 30, "Peru": 250, "Philippines": 600, "Poland": 650, "Portugal": 180,
        "Puerto Rico": 600, "Qatar": 480, "Reunion": 600, "Romania": 260, "Russia": 360,
        "Rwanda": 300, "Saudi Arabia": 560, "Senegal": 500, "Serbia": 600, "Singapore": 470,
        "Slovakia": 120, "South Africa": 700, "South Korea": 440, "Spain": 170, "Sri Lanka": 500,
        "Suriname": 350, "Sweden": 40, "Switzerland": 50, "Taiwan": 560, "Tanzania": 350,
        "Thailand": 500, "Trinidad and Tobago": 500, "Tunisia": 450, "Turkey": 420, "Uganda": 50,
        "Ukraine": 250, "United Arab Emirates": 450, "United Kingdom": 250,
        "United States": 380, "Uzbekistan": 500, "Vietnam": 450, "Zimbabwe": 500,
    }
)  # fmt: skip

_CONTINENT_CARBON: MappingProxyType[str, float] = MappingProxyType(
    {"AF": 450, "AS": 550, "EU": 280, "NA": 380, "OC": 500, "SA": 200}
)

_REGION_PRICE_RATIO: MappingProxyType[str, float] = MappingProxyType(
    {
        "af": 1.32,
        "as-east": 1.27,
        "as-south": 1.08,
        "eu-east": 1.14,
        "eu-west": 1.16,
        "me": 1.30,
        "na-east": 1.00,
        "na-west": 1.05,
        "oc": 1.26,
        "sa": 1.59,
    }
)


def carbon_for(country: str, continent: str) -> float:
    """Grid carbon intensity for a country, or its continent's typical value."""
    return float(CARBON_G_PER_KWH.get(country, _CONTINENT_CARBON.get(continent, 450.0)))


def cost_for(region: str) -> float:
    """Price of one unit of capacity for an hour in ``region``, in US dollars."""
    return round(BASE_COST_PER_HOUR * _REGION_PRICE_RATIO.get(region, 1.2), 4)
