"""[triggers] crons and prefer: accepted expressions, every refusal with its key and hint, next
ticks, and the claim delay a low-carbon preference gives a node's triggers."""

from __future__ import annotations

import pytest

from edgefn.bundle import parse_manifest
from edgefn.bundle.crons import MAX_CRONS, check_cron, next_tick_ms
from edgefn.edge.cron import triggers_of
from edgefn.edge.functions import ActiveFunction, ActiveVersion, FunctionTable
from edgefn.errors import ManifestError
from edgefn.runtime.sandbox import LoadSpec

JAN_1_2025_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z, a Wednesday
MIN = 60_000


def _parse(crons: str) -> object:
    return parse_manifest(f'name = "c"\n[triggers]\ncrons = {crons}\n', path="edgefn.toml")


def test_crons_parse_and_default_to_none() -> None:
    m = parse_manifest('name = "c"\n', path="edgefn.toml")
    assert m.triggers.crons == ()
    parsed = _parse('["*/5 * * * *", "0 3 * * MON-FRI", "@hourly"]')
    assert parsed.triggers.crons == ("*/5 * * * *", "0 3 * * MON-FRI", "@hourly")  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("crons", "key", "needle"),
    [
        ('"* * * * *"', "triggers.crons", "array of strings"),
        ("[5]", "triggers.crons[0]", "expected a string"),
        ('["* * * * * *"]', "triggers.crons[0]", "6 fields"),
        ('["61 * * * *"]', "triggers.crons[0]", "out of range"),
        ('["0 0 30 2 *"]', "triggers.crons[0]", "never fires"),
        ('["H * * * *"]', "triggers.crons[0]", "'H' (hashed)"),
        ('["@reboot"]', "triggers.crons[0]", "unknown nickname"),
        ('["* * * * *", "* * * * *"]', "triggers.crons[1]", "duplicate"),
        (str([f"{i} * * * *" for i in range(MAX_CRONS + 1)]), "triggers.crons", "at most"),
    ],
)
def test_bad_crons_name_the_key(crons: str, key: str, needle: str) -> None:
    with pytest.raises(ManifestError) as info:
        _parse(crons)
    assert info.value.key == key
    assert needle in str(info.value)


def test_unknown_trigger_key_is_refused_with_a_suggestion() -> None:
    with pytest.raises(ManifestError) as info:
        parse_manifest('name = "c"\n[triggers]\ncron = []\n', path="edgefn.toml")
    assert info.value.key == "triggers.cron"
    assert "crons" in str(info.value)


def test_hashed_check_does_not_refuse_day_names_with_an_h() -> None:
    assert check_cron("0 0 * * thu,fri") is None
    assert check_cron("0 0 * * THU") is None


def test_next_tick_is_strictly_after_and_in_utc() -> None:
    assert next_tick_ms("* * * * *", JAN_1_2025_MS) == JAN_1_2025_MS + MIN
    assert next_tick_ms("* * * * *", JAN_1_2025_MS + 1) == JAN_1_2025_MS + MIN
    assert next_tick_ms("*/5 * * * *", JAN_1_2025_MS + 5 * MIN - 1) == JAN_1_2025_MS + 5 * MIN
    assert next_tick_ms("0 3 * * *", JAN_1_2025_MS) == JAN_1_2025_MS + 3 * 60 * MIN
    # 2025-01-01 is a Wednesday: the next Monday 00:00 is the 6th.
    assert next_tick_ms("0 0 * * MON", JAN_1_2025_MS) == JAN_1_2025_MS + 5 * 24 * 60 * MIN


def test_prefer_low_carbon_is_parsed_and_reaches_the_triggers_a_node_follows() -> None:
    assert parse_manifest('name = "c"\n', path="edgefn.toml").triggers.prefer == "any"
    green = parse_manifest(
        'name = "g"\n[triggers]\ncrons = ["* * * * *"]\nprefer = "low_carbon"\n', path="t"
    )
    plain = parse_manifest('name = "p"\n[triggers]\ncrons = ["0 * * * *"]\n', path="t")
    assert green.triggers.prefer == "low_carbon"
    table = FunctionTable()
    for m in (green, plain):
        spec = LoadSpec(m.name, "v", "", "main.py", {}, 128, 100)
        table.activate(ActiveFunction(m.name, (ActiveVersion("v", 1.0, spec, m),)))
    asked: list[str] = []

    def delay(function: str) -> int:
        asked.append(function)
        return 1_500

    got = {t.function: t.claim_delay_ms for t in triggers_of(table, delay)}
    assert got == {"g": 1_500, "p": 0}  # only the function that prefers low carbon waits
    assert asked == ["g"]
    assert {t.claim_delay_ms for t in triggers_of(table)} == {0}


def test_an_unknown_preference_is_refused_with_what_to_write() -> None:
    with pytest.raises(ManifestError) as info:
        parse_manifest('name = "c"\n[triggers]\nprefer = "solar"\n', path="edgefn.toml")
    assert info.value.key == "triggers.prefer"
    assert "low_carbon" in str(info.value)
