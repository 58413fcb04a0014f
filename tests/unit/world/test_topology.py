"""Topology TOML files: built-in ids, custom locations, and every error path."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgefn.errors import ConfigError
from edgefn.world import get_location, load_topology


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "topo.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_builtin_and_custom_locations(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[[locations]]
id = "FRA"

[[locations]]
id = "nrt"
capacity = 7
cost_per_hour = 0.5
thermal_soft_c = 60
thermal_hard_c = 72.5

[[locations]]
id = "lab1"
city = "Lab"
lat = 48.1
lon = 11.6
country = "Germany"
carbon_g_per_kwh = 12
""",
    )
    fra, nrt, lab = load_topology(path)
    assert fra == get_location("fra")
    assert nrt.capacity == 7
    assert nrt.cost_per_hour == 0.5
    assert (nrt.thermal_soft_c, nrt.thermal_hard_c) == (60.0, 72.5)
    assert (fra.thermal_soft_c, fra.thermal_hard_c) == (80.0, 95.0)  # the default budget
    assert lab.id == "lab1"
    assert lab.region == "eu-west"
    assert lab.continent == "EU"
    assert lab.carbon_g_per_kwh == 12
    assert lab.cost_per_hour > 0


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        ("[[locations]\n", "", "not valid TOML"),
        ("x = 1\n", "locations", "no [[locations]]"),
        ('[[locations]]\nid = "fra"\nbogus = 1\n', "locations[0].bogus", "unknown key"),
        ("[[locations]]\nid = 3\n", "locations[0].id", "id must be"),
        ('[[locations]]\nid = "x1"\nlat = 1.0\nlon = 2.0\n', "locations[0].city", "missing 'city'"),
        ('[[locations]]\nid = "x1"\ncity = "X"\nlat = 91\nlon = 0\n', "locations[0].lat", "[-90"),
        (
            '[[locations]]\nid = "x1"\ncity = "X"\nlat = 1\nlon = "e"\n',
            "locations[0].lon",
            "number",
        ),
        ('[[locations]]\nid = "x1"\ncity = 5\nlat = 1\nlon = 2\n', "locations[0].city", "string"),
        (
            '[[locations]]\nid = "x1"\ncity = "X"\nlat = 1\nlon = 2\nregion = "mars"\n',
            "locations[0].region",
            "unknown region",
        ),
        ('[[locations]]\nid = "fra"\ncapacity = -1\n', "locations[0].capacity", "capacity"),
        ('[[locations]]\nid = "fra"\ncost_per_hour = true\n', "locations[0].cost_per_hour", "num"),
        ('[[locations]]\nid = "fra"\n[[locations]]\nid = "FRA"\n', "locations[1].id", "duplicate"),
        ("locations = [1]\n", "locations[0]", "must be a table"),
        ('[[locations]]\nid = "fra"\nthermal_soft_c = 200\n', "locations[0].thermal_soft_c", "150"),
        (
            '[[locations]]\nid = "fra"\nthermal_hard_c = "hot"\n',
            "locations[0].thermal_hard_c",
            "num",
        ),
        (
            '[[locations]]\nid = "fra"\nthermal_soft_c = 96\n',
            "locations[0].thermal_soft_c",
            "below",
        ),
        (
            '[[locations]]\nid = "fra"\nthermal_soft_c = 70\nthermal_hard_c = 70\n',
            "locations[0].thermal_soft_c",
            "must be below thermal_hard_c",
        ),
    ],
)
def test_errors_name_file_and_key(tmp_path: Path, text: str, key: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_topology(path)
    err = info.value
    assert err.path == str(path)
    assert err.key == key
    assert message in err.message
    assert str(path) in str(err)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_topology(tmp_path / "nope.toml")
