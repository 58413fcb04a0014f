"""The incident book: correlation, severity, lifecycle, escalation; and the routes file."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgefn.errors import ConfigError, IncidentError
from edgefn.observe.anomaly import Alert
from edgefn.observe.incident_routes import Routes, load_routes, parse_routes
from edgefn.observe.incidents import BookOptions, IncidentBook, Notify, Save

T0 = 1_700_000_000_000
MIN = 60_000


def alert(
    loc: str,
    *,
    at: int = T0,
    fn: str = "checkout",
    version: str = "v7",
    region: str = "eu-west",
    signal: str = "5xx",
    active: bool = True,
    affected: int = 10,
) -> Alert:
    return Alert(
        function=fn,
        location=loc,
        signal=signal,  # type: ignore[arg-type]
        active=active,
        at_ms=at,
        since_ms=at - 5_000,
        version=version,
        region=region,
        affected=affected if active else 0,
    )


def notifications(out: list[Save | Notify]) -> list[str]:
    return [n.event for n in out if isinstance(n, Notify)]


def test_related_alerts_make_one_incident_and_unrelated_ones_their_own() -> None:
    book = IncidentBook()
    book.alert(alert("fra"))
    book.alert(alert("ams", at=T0 + 1000))
    book.alert(alert("fra", signal="p99", at=T0 + 2000))
    # Another function: its own incident. The same function much later with another version
    # and region: its own too.
    book.alert(alert("fra", fn="cart"))
    late = alert("iad", at=T0 + 30 * MIN, version="v8", region="na-east")
    book.alert(late)
    assert book.statistics().opened_total == 3
    first, cart, later = book.unresolved()
    assert (first.locations, first.signals, first.locations_total) == (
        ("ams", "fra"),
        ("5xx", "p99"),
        2,
    )
    assert first.title.startswith("version v7 of checkout: 5xx, slow p99 at 2 locations since ")
    assert cart.function == "cart"
    assert later.versions == ("v8",)
    book.check_invariants()


def test_an_incident_is_notified_once_after_the_group_wait_with_what_joined_it() -> None:
    book = IncidentBook(BookOptions(group_wait_ms=7_000))
    assert notifications(book.alert(alert("fra"))) == []
    book.alert(alert("ams", at=T0 + 5_000))
    assert book.tick(T0 + 6_999) == []
    out = book.tick(T0 + 7_000)
    assert notifications(out) == ["opened"]
    told = next(n for n in out if isinstance(n, Notify)).incident
    assert (told.locations, told.notified) == (("ams", "fra"), True)
    book.alert(alert("lhr", at=T0 + 8_000))
    assert notifications(book.tick(T0 + 20_000)) == []


def test_same_version_joins_even_outside_the_window() -> None:
    book = IncidentBook(BookOptions(window_ms=MIN, quiet_ms=60 * MIN))
    book.alert(alert("fra"))
    book.alert(alert("iad", at=T0 + 10 * MIN, region="na-east"))
    (inc,) = book.unresolved()
    assert inc.regions == ("eu-west", "na-east")


def test_severity_rises_with_requests_affected_and_never_falls() -> None:
    book = IncidentBook(BookOptions(major_requests=100, critical_requests=1000))
    book.alert(alert("fra", affected=50))
    assert book.unresolved()[0].severity == "minor"
    book.alert(alert("ams", affected=60))
    assert book.unresolved()[0].severity == "major"
    book.alert(alert("lhr", affected=2000))
    assert book.unresolved()[0].severity == "critical"
    book.alert(alert("lhr", active=False))
    assert book.unresolved()[0].severity == "critical"


def test_lifecycle_ack_resolve_and_their_errors() -> None:
    book = IncidentBook()
    book.alert(alert("fra"))
    (inc,) = book.unresolved()
    (saved,) = book.acknowledge(inc.id, by="ops (abc)", now_ms=T0 + 1)
    assert isinstance(saved, Save)
    assert (saved.incident.state, saved.incident.acknowledged_by) == ("acknowledged", "ops (abc)")
    with pytest.raises(IncidentError, match="is acknowledged, not open") as err:
        book.acknowledge(inc.id, by="x", now_ms=T0 + 2)
    assert not err.value.not_found
    (done,) = book.resolve(inc.id, by="ops (abc)", now_ms=T0 + 3)
    assert isinstance(done, Save)
    assert (done.incident.state, done.incident.resolved_ms) == ("resolved", T0 + 3)
    with pytest.raises(IncidentError, match="resolved already"):
        book.resolve(inc.id, by="x", now_ms=T0 + 4)
    with pytest.raises(IncidentError, match="no incident 99") as err:
        book.acknowledge(99, by="x", now_ms=T0)
    assert err.value.not_found
    # A resolved incident never reopens: the same alert again opens a new one.
    book.alert(alert("fra", at=T0 + 5))
    assert book.unresolved()[0].id == inc.id + 1


def test_quiet_incidents_resolve_themselves() -> None:
    book = IncidentBook(BookOptions(quiet_ms=5 * MIN))
    book.alert(alert("fra"))
    book.alert(alert("fra", at=T0 + MIN, active=False))
    assert notifications(book.tick(T0 + 3 * MIN)) == ["opened"]
    assert book.tick(T0 + 4 * MIN) == []
    (done,) = book.tick(T0 + 5 * MIN)
    assert isinstance(done, Save)
    assert (done.incident.state, done.incident.resolved_by) == ("resolved", "auto")
    assert book.unresolved() == []


def test_an_active_incident_never_auto_resolves_and_escalates_until_acknowledged() -> None:
    book = IncidentBook(BookOptions(group_wait_ms=0, escalate_after_ms=15 * MIN, max_escalations=2))
    book.alert(alert("fra"))
    assert notifications(book.tick(T0)) == ["opened"]
    assert notifications(book.tick(T0 + 14 * MIN)) == []
    assert notifications(book.tick(T0 + 15 * MIN)) == ["escalated"]
    assert notifications(book.tick(T0 + 20 * MIN)) == []
    assert notifications(book.tick(T0 + 30 * MIN)) == ["escalated"]
    assert notifications(book.tick(T0 + 60 * MIN)) == []  # at most 2
    (inc,) = book.unresolved()
    assert inc.escalations == 2
    book2 = IncidentBook(BookOptions(escalate_after_ms=15 * MIN))
    book2.alert(alert("fra"))
    book2.acknowledge(1, by="ops", now_ms=T0 + MIN)
    assert notifications(book2.tick(T0 + 60 * MIN)) == []  # acknowledged in time: never told
    assert notifications(book2.tick(T0 + 120 * MIN)) == []


def test_unreachable_locations_are_one_connectivity_incident() -> None:
    book = IncidentBook()
    book.alert(alert("fra", fn="", version="", signal="unreachable", affected=0))
    book.alert(alert("ams", fn="", version="", signal="unreachable", at=T0 + 3000))
    book.alert(alert("fra"))  # a function incident is another matter
    conn, fn = book.unresolved()
    assert (conn.kind, conn.locations, fn.kind) == ("connectivity", ("ams", "fra"), "function")
    assert conn.title.startswith("2 locations unreachable since ")
    assert conn.title.endswith("UTC: ams, fra")


def test_bounds_and_restore() -> None:
    book = IncidentBook(BookOptions(max_open=2, max_locations=2))
    for i, fn in enumerate(("a", "b", "c")):
        book.alert(alert("fra", fn=fn, at=T0 + i))
    assert len(book.unresolved()) == 2
    assert book.statistics().dropped_alerts_total == 1
    for loc in ("ams", "lhr", "cdg"):
        book.alert(alert(loc, fn="a"))
    a = book.unresolved()[0]
    assert (len(a.locations), a.locations_total) == (2, 4)
    restored = IncidentBook.restore([*book.unresolved()], BookOptions())
    assert [i.id for i in restored.unresolved()] == [1, 2]
    assert restored.next_id == 3
    restored.check_invariants()


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["alert", "clear", "ack", "resolve", "tick"]),
            st.sampled_from(["fra", "ams", "iad"]),
            st.sampled_from(["checkout", "cart", ""]),
            st.integers(0, 20 * MIN),
        ),
        max_size=60,
    )
)
def test_any_sequence_keeps_the_invariants(ops: list[tuple[str, str, str, int]]) -> None:
    """Each incident is notified as opened at most once; resolved incidents never come back."""
    book = IncidentBook()
    now = T0
    told: list[int] = []
    resolved: set[int] = set()
    for op, loc, fn, dt in ops:
        now += dt
        signal = "unreachable" if fn == "" else "5xx"
        out: list[Save | Notify] = []
        if op in ("alert", "clear"):
            out = book.alert(alert(loc, fn=fn, signal=signal, at=now, active=op == "alert"))
        elif op == "tick":
            out = book.tick(now)
        elif book.unresolved():
            target = book.unresolved()[0].id
            try:
                out = getattr(book, "acknowledge" if op == "ack" else "resolve")(
                    target, by="t", now_ms=now
                )
            except IncidentError:
                pass
        told += [n.incident.id for n in out if isinstance(n, Notify) and n.event == "opened"]
        resolved |= {
            s.incident.id for s in out if isinstance(s, Save) and s.incident.state == "resolved"
        }
        assert not resolved & {i.id for i in book.unresolved()}
        book.check_invariants()
    assert len(told) == len(set(told)) <= book.statistics().opened_total == book.next_id - 1


# -- routes ---------------------------------------------------------------------------------


def test_routes_by_region_with_a_default() -> None:
    routes = parse_routes(
        'default = "https://hooks.example.net/all"\n'
        '[regions]\neu-west = "http://127.0.0.1:9000/eu"\nna-east = "http://127.0.0.1:9000/na"\n'
    )
    assert routes.urls_for(("eu-west",)) == ["http://127.0.0.1:9000/eu"]
    assert routes.urls_for(("eu-west", "na-east", "as-east", "oc")) == [
        "http://127.0.0.1:9000/eu",
        "http://127.0.0.1:9000/na",
        "https://hooks.example.net/all",
    ]
    assert routes.urls_for(()) == ["https://hooks.example.net/all"]
    assert Routes(regions={"eu-west": "http://x/"}).urls_for(("oc",)) == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("default = ", "not valid TOML"),
        ('defualt = "http://x/"', "r.toml: defualt: unknown key"),
        ("default = 3", "r.toml: default: must be a URL string"),
        ('default = "ftp://x/"', "r.toml: default: 'ftp://x/' is not an http(s) URL with a host"),
        ('default = "http:///nohost"', "is not an http(s) URL with a host"),
        ('regions = "eu"', "r.toml: regions: must be a table"),
        ('[regions]\n"eu west" = "http://x/"', "r.toml: regions.eu west: is not a region name"),
        ("[regions]\neu = 1", "r.toml: regions.eu: must be a URL string"),
        ("", "r.toml: no routes"),
    ],
)
def test_a_bad_routes_file_names_the_file_and_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_routes(text, path="r.toml")
    assert message in str(err.value)
    assert err.value.hint


def test_load_routes_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml: file not found"):
        load_routes(tmp_path / "nope.toml")
    bad = tmp_path / "bin.toml"
    bad.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match=r"bin\.toml: cannot read"):
        load_routes(bad)
    good = tmp_path / "ok.toml"
    good.write_text('default = "http://127.0.0.1:1/x"\n')
    assert load_routes(good).default == "http://127.0.0.1:1/x"
