"""The pure link table: partitions cut exactly the links that leave the set; heal undoes them."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgefn.bus import (
    CutLink,
    Heal,
    HealLink,
    LinkTable,
    LinkTableError,
    Partition,
    SetDelay,
    SetLinkRtt,
)


def two_region_links() -> LinkTable:
    """core -- hub-eu -- {loc-fra, loc-ams}; core -- hub-us -- loc-iad."""
    table = LinkTable()
    table.add("core~hub-eu", "core", "hub-eu", rtt_ms=20)
    table.add("core~hub-us", "core", "hub-us", rtt_ms=80)
    table.add("hub-eu~loc-fra", "hub-eu", "loc-fra", rtt_ms=4)
    table.add("hub-eu~loc-ams", "hub-eu", "loc-ams", rtt_ms=6)
    table.add("hub-us~loc-iad", "hub-us", "loc-iad", rtt_ms=3)
    return table


def test_partition_of_a_hub_cuts_its_uplink_and_its_locations() -> None:
    """Isolating hub-eu alone cuts every link touching it and nothing else."""
    table = two_region_links()
    out = table.handle(Partition(frozenset({"hub-eu"})))
    assert out == [CutLink("core~hub-eu"), CutLink("hub-eu~loc-ams"), CutLink("hub-eu~loc-fra")]
    table.check_invariants()
    assert {s.name for s in table.links() if s.cut} == {
        "core~hub-eu",
        "hub-eu~loc-ams",
        "hub-eu~loc-fra",
    }


def test_partition_of_a_region_keeps_links_inside_it() -> None:
    """A region partitioned as a whole talks to itself; only its uplink to the core is cut."""
    table = two_region_links()
    separating = table.partition({"hub-eu", "loc-fra", "loc-ams"})
    assert separating == {"core~hub-eu"}
    assert [s.name for s in table.links() if s.cut] == ["core~hub-eu"]


def test_partitions_add_up_and_report_links_already_cut() -> None:
    table = two_region_links()
    table.partition({"loc-fra"})
    out = table.handle(Partition(frozenset({"hub-eu"})))
    assert out == [CutLink("core~hub-eu"), CutLink("hub-eu~loc-ams")]  # loc-fra's was cut already
    assert table.partition({"hub-eu"}) == {"core~hub-eu", "hub-eu~loc-ams", "hub-eu~loc-fra"}


def test_heal_heals_every_cut_link_once() -> None:
    table = two_region_links()
    table.partition({"core"})
    out = table.handle(Heal())
    assert out == [HealLink("core~hub-eu"), HealLink("core~hub-us")]
    assert table.handle(Heal()) == []
    stats = table.statistics()
    assert (stats.links_cut, stats.partitions_total, stats.heals_total) == (0, 1, 2)


def test_delay_finds_the_link_in_either_order() -> None:
    table = two_region_links()
    assert table.handle(SetDelay("hub-eu", "core", 150)) == [SetLinkRtt("core~hub-eu", 150)]
    assert table.handle(SetDelay("core", "hub-eu", 150)) == []  # No change, no instruction.
    assert table.delay("loc-iad", "hub-us", 9) == "hub-us~loc-iad"
    assert table.link("hub-us~loc-iad").rtt_ms == 9


@pytest.mark.parametrize(
    ("action", "match"),
    [
        (lambda t: t.partition({"loc-xyz"}), "unknown endpoint"),
        (lambda t: t.partition(set()), "no endpoints"),
        (lambda t: t.delay("loc-fra", "loc-iad", 5), "no link joins"),
        (lambda t: t.delay("core", "nowhere", 5), "unknown endpoint"),
        (lambda t: t.delay("core", "hub-eu", -1), "out of range"),
        (lambda t: t.delay("core", "hub-eu", 10**6), "out of range"),
        (lambda t: t.add("core~hub-eu", "x", "y", rtt_ms=1), "already exists"),
        (lambda t: t.add("again", "hub-eu", "core", rtt_ms=1), "already joins"),
        (lambda t: t.add("loop", "core", "core", rtt_ms=1), "to itself"),
        (lambda t: t.add("", "p", "q", rtt_ms=1), "empty name"),
        (lambda t: t.add("neg", "p", "q", rtt_ms=-5), "out of range"),
        (lambda t: t.link("nope"), "unknown link"),
    ],
)
def test_bad_operations_raise_with_a_hint(action: object, match: str) -> None:
    table = two_region_links()
    with pytest.raises(LinkTableError, match=match) as info:
        action(table)  # type: ignore[operator]
    assert info.value.hint
    table.check_invariants()


def test_table_is_bounded() -> None:
    table = LinkTable(max_links=1)
    table.add("a~b", "a", "b", rtt_ms=1)
    with pytest.raises(LinkTableError, match="full"):
        table.add("a~c", "a", "c", rtt_ms=1)


@settings(max_examples=60, deadline=None)
@given(
    ops=st.lists(
        st.one_of(
            st.sets(
                st.sampled_from(["core", "hub-eu", "hub-us", "loc-fra", "loc-ams", "loc-iad"]),
                min_size=1,
            ).map(lambda s: ("partition", s)),
            st.just(("heal", set())),
        ),
        max_size=12,
    )
)
def test_cut_links_equal_the_union_of_separating_sets_since_last_heal(
    ops: list[tuple[str, set[str]]],
) -> None:
    """Model check: the cut set is exactly the union of links each partition separated."""
    table = two_region_links()
    expected: set[str] = set()
    for op, endpoints in ops:
        if op == "heal":
            table.heal()
            expected = set()
        else:
            expected |= table.partition(endpoints)
        table.check_invariants()
        assert {s.name for s in table.links() if s.cut} == expected
