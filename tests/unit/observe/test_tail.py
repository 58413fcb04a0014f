"""The live tail's pure part: sessions with expiry, pushed-down filters, sampling to a budget."""

from __future__ import annotations

import random

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from edgefn.errors import UsageError
from edgefn.observe.tail import (
    MAX_TTL_MS,
    TailAnnounce,
    TailBudget,
    TailEvent,
    TailRequest,
    TailTap,
    parse_sample,
    parse_status_class,
)

S1, S2 = "a" * 16, "b" * 16


def _tap(**budget: int | float) -> TailTap:
    return TailTap("fra", budget=TailBudget(**budget), rng=random.Random(7))  # type: ignore[arg-type]


def _ann(
    session: str = S1, function: str = "hello", ttl_ms: int = 6000, **kw: object
) -> TailAnnounce:
    return TailAnnounce(session=session, function=function, ttl_ms=ttl_ms, **kw)  # type: ignore[arg-type]


def _req(
    i: int = 0, status: int = 200, function: str = "hello", path: str = "/", ms: float = 0.0
) -> TailRequest:
    # Instantaneous by default: the request starts when it is offered, after any announce.
    return TailRequest(
        f"r{i}", 1_700_000_000_000 + i, function, "v1", "GET", path, status, ms, False
    )


def test_a_request_that_began_before_the_session_opened_is_not_its_to_show() -> None:
    """Its console lines may have been printed before anything kept them: a session shows only
    requests that started after it opened here, so every event carries its whole log."""
    tap = _tap()
    tap.announce(_ann(S1), now_ms=100)
    tap.announce(_ann(S2), now_ms=104)
    tap.offer(_req(1, ms=6.0), now_ms=105)  # began at 99: before both sessions
    tap.offer(_req(2, ms=3.0), now_ms=105)  # began at 102: after S1 opened, before S2
    tap.offer(_req(3, ms=1.0), now_ms=105)  # began at 104: after both
    got = sorted((e.session, e.request_id) for e in tap.take(100))
    assert got == [(S1, "r2"), (S1, "r3"), (S2, "r3")]
    tap.check_invariants()


def test_a_request_of_an_unwatched_function_queues_nothing() -> None:
    tap = _tap()
    assert not tap.watching("hello")
    assert tap.offer(_req(), now_ms=0) == 0
    assert tap.take(10) == []


def test_a_session_sees_its_function_until_it_expires_or_closes() -> None:
    tap = _tap()
    assert tap.announce(_ann(ttl_ms=1000), now_ms=0)
    assert tap.watching("hello")
    assert not tap.watching("other")
    assert tap.offer(_req(1), now_ms=10) == 1
    [event] = tap.take(10)
    assert (event.session, event.request_id, event.location, event.sample) == (S1, "r1", "fra", 1.0)
    # Renewed before it ran out: still alive past the first expiry.
    tap.announce(_ann(ttl_ms=1000), now_ms=900)
    assert tap.expire(now_ms=1500) == []
    assert tap.expire(now_ms=1900) == [S1]
    assert not tap.watching("hello")
    tap.announce(_ann(), now_ms=2000)
    tap.announce(_ann(ttl_ms=0), now_ms=2001)  # the core's goodbye
    assert not tap.watching("hello")
    tap.check_invariants()


def test_an_expired_session_gets_nothing_even_before_the_sweep() -> None:
    tap = _tap()
    tap.announce(_ann(ttl_ms=100), now_ms=0)
    assert tap.offer(_req(), now_ms=100) == 0


def test_the_ttl_is_capped_whatever_the_announcement_asks() -> None:
    tap = _tap()
    tap.announce(_ann(ttl_ms=MAX_TTL_MS), now_ms=0)
    assert tap.expire(now_ms=MAX_TTL_MS) == [S1]


def test_location_filter_a_node_not_named_keeps_no_session() -> None:
    tap = _tap()
    assert not tap.announce(_ann(locations=("ams",)), now_ms=0)
    assert not tap.watching("hello")
    assert tap.announce(_ann(locations=("ams", "fra")), now_ms=0)


def test_status_class_and_search_filters() -> None:
    tap = _tap()
    tap.announce(_ann(S1, status_class=5), now_ms=0)
    tap.announce(_ann(S2, search="CheckOut"), now_ms=0)
    tap.offer(_req(1, 200, path="/home"), now_ms=1)
    tap.offer(_req(2, 503, path="/home"), now_ms=1)
    tap.offer(_req(3, 200, path="/checkout/pay"), now_ms=1)
    tap.log("hello", "r4", "info", "user opened the CHECKOUT page")
    tap.offer(_req(4, 200, path="/x"), now_ms=1)
    got = sorted((e.session, e.request_id) for e in tap.take(100))
    assert got == [(S1, "r2"), (S2, "r3"), (S2, "r4")]


def test_log_lines_ride_on_their_request_bounded() -> None:
    tap = _tap(logs_per_request=2)
    tap.log("hello", "r1", "info", "not watched yet: dropped")
    tap.announce(_ann(), now_ms=0)
    for i in range(5):
        tap.log("hello", "r1", "info", f"line {i} " + "x" * 2000)
    tap.log("other", "r1", "info", "another function's line is not kept")
    tap.offer(_req(1), now_ms=1)
    [event] = tap.take(1)
    assert [line.message[:6] for line in event.logs] == ["line 0", "line 1"]
    assert all(len(line.message) == 512 for line in event.logs)


def test_errors_are_always_sent_others_are_sampled_to_the_budget() -> None:
    tap = _tap(events_per_s=10)
    tap.announce(_ann(ttl_ms=MAX_TTL_MS), now_ms=0)
    # One window of 100 ok requests and 20 errors, at 100 per second.
    for i in range(100):
        tap.offer(_req(i, 200), now_ms=i * 10)
    for i in range(20):
        tap.offer(_req(1000 + i, 500), now_ms=999)
    first = tap.take(1000)
    assert len([e for e in first if e.status == 500]) == 20
    assert len([e for e in first if e.status == 200]) == 10  # the window's hard cap
    # The next windows: sampled at p = 10/100, so about 10 per window, never more.
    kept = []
    for w in range(1, 11):
        for i in range(100):
            tap.offer(_req(w * 1000 + i, 200), now_ms=w * 1000 + i * 10)
        kept.append(len(tap.take(1000)))
    assert all(n <= 10 for n in kept), kept
    assert 60 <= sum(kept) <= 100, kept
    tap.check_invariants()


def test_every_event_carries_its_measured_sampled_fraction() -> None:
    tap = _tap(events_per_s=10)
    tap.announce(_ann(), now_ms=0)
    for w in range(5):
        for i in range(100):
            tap.offer(_req(w * 1000 + i), now_ms=w * 1000 + i * 10)
        tap.offer(_req(w * 1000 + 999, 502), now_ms=w * 1000 + 999)
        events = tap.take(1000)
    oks = [e.sample for e in events if e.status == 200]
    errors = [e.sample for e in events if e.status == 502]
    assert errors == [1.0]
    assert all(0.03 <= s <= 0.2 for s in oks), oks


def test_the_client_sample_rate_applies_before_the_budget() -> None:
    tap = _tap(events_per_s=1000)
    tap.announce(_ann(sample=0.25), now_ms=0)
    for i in range(400):
        tap.offer(_req(i), now_ms=i)
    events = tap.take(1000)
    assert 60 <= len(events) <= 140
    assert 0.15 <= events[-1].sample <= 0.35


def test_the_budget_is_shared_between_sessions() -> None:
    tap = _tap(events_per_s=20)
    tap.announce(_ann(S1), now_ms=0)
    tap.announce(_ann(S2), now_ms=0)
    for i in range(200):
        tap.offer(_req(i), now_ms=i * 5)
    events = tap.take(1000)
    assert len([e for e in events if e.session == S1]) == 10
    assert len([e for e in events if e.session == S2]) == 10


def test_a_full_queue_drops_and_counts_and_lowers_the_fraction() -> None:
    tap = _tap(queue_max=5, errors_per_s=1000)
    tap.announce(_ann(), now_ms=0)
    for i in range(8):
        tap.offer(_req(i, 500), now_ms=1)
    assert tap.statistics().dropped_queue_full == 3
    assert len(tap.take(100)) == 5
    tap.offer(_req(9, 500), now_ms=2)
    [event] = tap.take(1)
    assert event.sample == round(6 / 9, 4)


def test_errors_are_capped_per_node_in_a_storm() -> None:
    tap = _tap(errors_per_s=5)
    tap.announce(_ann(), now_ms=0)
    for i in range(20):
        tap.offer(_req(i, 500), now_ms=1)
    assert len(tap.take(100)) == 5
    assert tap.statistics().capped == 15


def test_sessions_are_bounded_and_refusals_counted() -> None:
    tap = _tap(sessions_max=2)
    assert tap.announce(_ann(S1), now_ms=0)
    assert tap.announce(_ann(S2, function="other"), now_ms=0)
    assert not tap.announce(_ann("c" * 16), now_ms=0)
    assert tap.statistics().refused_sessions == 1
    assert tap.announce(_ann(S1), now_ms=1)  # a renewal is never refused


def test_the_wire_structs_refuse_out_of_bounds_fields() -> None:
    good = msgspec.json.encode(_ann())
    assert msgspec.json.decode(good, type=TailAnnounce) == _ann()
    for bad in (
        {"session": "x", "function": "hello", "ttl_ms": 1},
        {"session": S1, "function": "a.b", "ttl_ms": 1},
        {"session": S1, "function": "hello", "ttl_ms": MAX_TTL_MS + 1},
        {"session": S1, "function": "hello", "ttl_ms": 1, "sample": 0},
        {"session": S1, "function": "hello", "ttl_ms": 1, "search": "x" * 257},
        {"session": S1, "function": "hello", "ttl_ms": 1, "locations": ["x" * 65]},
        {"session": S1, "function": "hello", "ttl_ms": 1, "extra": 1},
    ):
        with pytest.raises(msgspec.ValidationError):
            msgspec.json.decode(msgspec.json.encode(bad), type=TailAnnounce)
    tap = _tap()
    tap.announce(_ann(), now_ms=0)
    tap.offer(_req(), now_ms=1)
    [event] = tap.take(1)
    assert msgspec.json.decode(msgspec.json.encode(event), type=TailEvent) == event


@pytest.mark.parametrize(("text", "want"), [("", 0), ("5xx", 5), ("2XX", 2), (" 4xx ", 4)])
def test_status_classes_parse(text: str, want: int) -> None:
    assert parse_status_class(text) == want


@pytest.mark.parametrize("text", ["7xx", "500", "5x", "xx", "0xx", "5xxx"])
def test_bad_status_classes_say_what_to_use(text: str) -> None:
    with pytest.raises(UsageError, match="not a status class") as err:
        parse_status_class(text)
    assert "5xx" in err.value.hint


@pytest.mark.parametrize("text", ["0", "2", "-0.5", "nan", "abc", "inf"])
def test_bad_sample_rates_say_what_to_use(text: str) -> None:
    with pytest.raises(UsageError, match=r"not in \(0, 1\]"):
        parse_sample(text)
    assert parse_sample("0.1") == 0.1


@settings(max_examples=60, deadline=None)
@given(
    rate_per_window=st.integers(min_value=0, max_value=400),
    error_share=st.floats(min_value=0, max_value=0.5),
    budget=st.integers(min_value=1, max_value=50),
    seed=st.integers(min_value=0, max_value=1000),
)
def test_non_errors_never_exceed_the_budget_and_errors_all_pass(
    rate_per_window: int, error_share: float, budget: int, seed: int
) -> None:
    """Any load: per window, non-errors sent ≤ the budget; every error sent (under its cap)."""
    tap = TailTap("fra", budget=TailBudget(events_per_s=budget), rng=random.Random(seed))
    tap.announce(_ann(ttl_ms=MAX_TTL_MS), now_ms=0)
    rng = random.Random(seed)
    for w in range(5):
        errors = 0
        for i in range(rate_per_window):
            error = rng.random() < error_share
            errors += error
            tap.offer(
                _req(i, 500 if error else 200), now_ms=w * 1000 + i * 999 // max(1, rate_per_window)
            )
        events = tap.take(10_000)
        assert len([e for e in events if e.status == 200]) <= budget
        assert len([e for e in events if e.status == 500]) == errors
        assert all(0 < e.sample <= 1 for e in events)
        tap.check_invariants()


class TapMachine(RuleBasedStateMachine):
    """Sessions come, renew, close and expire; requests and lines arrive: invariants hold and
    only live sessions of the request's function ever get an event."""

    def __init__(self) -> None:
        super().__init__()
        self.tap = TailTap(
            "fra",
            budget=TailBudget(sessions_max=4, queue_max=16, pending_max=8),
            rng=random.Random(0),
        )
        self.now = 0
        self.live: dict[str, tuple[str, int]] = {}  # model: session -> (function, expires)

    @rule(
        s=st.sampled_from([S1, S2, "c" * 16, "d" * 16, "e" * 16]),
        f=st.sampled_from(["hello", "other"]),
        ttl=st.integers(0, 3000),
    )
    def announce(self, s: str, f: str, ttl: int) -> None:
        kept = self.tap.announce(_ann(s, f, ttl), self.now)
        if kept:
            self.live[s] = (f, self.now + ttl)
        else:
            self.live.pop(s, None)

    @rule(dt=st.integers(0, 1500))
    def tick(self, dt: int) -> None:
        self.now += dt
        self.tap.expire(self.now)
        self.live = {s: v for s, v in self.live.items() if v[1] > self.now}

    @rule(
        f=st.sampled_from(["hello", "other"]),
        status=st.sampled_from([200, 404, 500]),
        i=st.integers(0, 20),
    )
    def request(self, f: str, status: int, i: int) -> None:
        self.tap.log(f, f"r{i}", "info", "x")
        self.tap.offer(_req(i, status, function=f), self.now)
        for event in self.tap.take(100):
            assert event.session in self.live
            assert self.live[event.session][0] == event.function

    @invariant()
    def holds(self) -> None:
        self.tap.check_invariants()
        assert {a.session for a in self.tap.sessions()} == set(self.live)


TestTapMachine = TapMachine.TestCase
TestTapMachine.settings = settings(max_examples=50, stateful_step_count=40, deadline=None)
