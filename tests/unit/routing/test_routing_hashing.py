"""Rendezvous hashing: deterministic owners, minimal disruption, weights respected."""

from __future__ import annotations

import math
from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from edgefn.routing import rendezvous_choose, rendezvous_rank, rendezvous_score

MEMBERS = st.lists(
    st.text("abcdefghij", min_size=1, max_size=4), min_size=2, max_size=8, unique=True
)
KEYS = st.lists(st.text(min_size=0, max_size=80), min_size=1, max_size=40)


def test_choose_is_the_first_of_the_rank_and_deterministic() -> None:
    members = ["fra", "lhr", "iad", "nrt"]
    for i in range(50):
        key = f"user-{i}"
        rank = rendezvous_rank(key, members)
        assert sorted(rank) == sorted(members)
        assert rendezvous_choose(key, members) == rank[0]
        assert rendezvous_choose(key, list(reversed(members))) == rank[0]


def test_zero_negative_and_nan_weights_never_own_a_key() -> None:
    members = {"a": 0.0, "b": -1.0, "c": math.nan, "d": math.inf}
    assert rendezvous_choose("k", members) is None
    assert rendezvous_rank("k", members) == []
    assert rendezvous_score("k", "a", 0.0) == -math.inf
    assert rendezvous_choose("k", {**members, "e": 1.0}) == "e"


def test_empty_members_give_none() -> None:
    assert rendezvous_choose("k", []) is None


def test_long_keys_and_length_prefix_distinguish_pairs() -> None:
    long_key = "x" * 500
    assert rendezvous_choose(long_key, ["a", "b", "c"]) in {"a", "b", "c"}
    assert rendezvous_score("ab", "c") != rendezvous_score("a", "bc")


def test_weights_give_proportional_ownership() -> None:
    """A member with weight 3 owns about three times the keys of a member with weight 1."""
    owners = Counter(rendezvous_choose(f"k{i}", {"big": 3.0, "small": 1.0}) for i in range(4000))
    assert 0.70 < owners["big"] / 4000 < 0.80


@given(members=MEMBERS, keys=KEYS, data=st.data())
def test_removing_a_member_moves_only_its_keys(
    members: list[str], keys: list[str], data: st.DataObject
) -> None:
    gone = data.draw(st.sampled_from(members))
    rest = [m for m in members if m != gone]
    for key in keys:
        before = rendezvous_choose(key, members)
        after = rendezvous_choose(key, rest)
        if before != gone:
            assert after == before
        else:
            assert after == rendezvous_rank(key, members)[1]


@given(members=MEMBERS, keys=KEYS, new=st.text("klmnop", min_size=1, max_size=4))
def test_adding_a_member_moves_keys_only_to_it(
    members: list[str], keys: list[str], new: str
) -> None:
    for key in keys:
        before = rendezvous_choose(key, members)
        after = rendezvous_choose(key, [*members, new])
        assert after in (before, new)


@given(members=MEMBERS, keys=KEYS, data=st.data())
def test_changing_one_weight_moves_keys_only_to_or_from_it(
    members: list[str], keys: list[str], data: st.DataObject
) -> None:
    changed = data.draw(st.sampled_from(members))
    factor = data.draw(st.floats(0.1, 10.0))
    before_w = dict.fromkeys(members, 1.0)
    after_w = {**before_w, changed: factor}
    for key in keys:
        before = rendezvous_choose(key, before_w)
        after = rendezvous_choose(key, after_w)
        if before != after:
            assert changed in (before, after)
