"""The pure auth module: token format and hashing, scope rules (with Hypothesis), and the
registry's ownership rules for functions and KV namespaces."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgefn.bundle import parse_manifest
from edgefn.control.auth import (
    ADMIN,
    PUBLIC,
    READ,
    TokenRecord,
    bearer_token,
    check_scope,
    format_token,
    grants,
    hash_secret,
    parse_token,
    token_matches,
)
from edgefn.control.errors import ControlError, Forbidden, NotFound
from edgefn.control.registry import Registry, VersionInfo, summarize_manifest

TID, SECRET = "0123456789ab", "f" * 64
functions = st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True)
scopes = st.one_of(
    st.just(READ), st.just(ADMIN), st.just("deploy:*"), functions.map(lambda f: f"deploy:{f}")
)
needs = st.one_of(
    st.just(READ),
    st.just(ADMIN),
    st.just(PUBLIC),
    st.just("deploy:*"),
    functions.map(lambda f: f"deploy:{f}"),
)


def _record(secret: str = SECRET, revoked_ms: int | None = None) -> TokenRecord:
    return TokenRecord(TID, "n", (READ,), "default", hash_secret(TID, secret), 1, None, revoked_ms)


def test_token_round_trip_and_malformed_tokens() -> None:
    token = format_token(TID, SECRET)
    assert token == f"edgefn_{TID}_{SECRET}"
    parsed = parse_token(token)
    assert parsed is not None
    assert (parsed.token_id, parsed.secret) == (TID, SECRET)
    for bad in (
        "",
        "edgefn",
        f"edgefn_{TID}",
        f"xx_{TID}_{SECRET}",
        f"edgefn_{TID}_{SECRET}_x",
        f"edgefn_{TID.upper()}_{SECRET}",
        f"edgefn_{TID}_{SECRET[:-1]}",
    ):
        assert parse_token(bad) is None, bad
    assert bearer_token(f"Bearer {token}") == parsed
    assert bearer_token(f"bearer {token}") == parsed
    assert bearer_token(f"Basic {token}") is None
    assert bearer_token(None) is None


def test_hash_matches_only_the_right_unrevoked_secret() -> None:
    parsed = parse_token(format_token(TID, SECRET))
    assert parsed is not None
    assert token_matches(_record(), parsed)
    assert not token_matches(_record("e" * 64), parsed)
    assert not token_matches(_record(revoked_ms=5), parsed)
    assert SECRET not in str(_record().public())
    assert "secret_sha256" not in _record().public()


def test_scope_validation() -> None:
    for ok in (READ, ADMIN, "deploy:*", "deploy:hello", "deploy:a_b-1"):
        assert check_scope(ok) == ok
    for bad in ("", "root", "deploy:", "deploy:a.b", "deploy:*x", "READ", "deploy:a b"):
        with pytest.raises(ControlError, match="unknown scope"):
            check_scope(bad)


@given(held=st.frozensets(scopes, max_size=4), need=needs)
def test_grants_matches_a_simple_model(held: frozenset[str], need: str) -> None:
    """The model: public is open; admin is everything; deploy:* covers every deploy:<f>; any
    deploy scope covers read; otherwise the exact scope is needed."""
    model = (
        need == PUBLIC
        or ADMIN in held
        or need in held
        or (need == READ and any(s.startswith("deploy:") for s in held))
        or (need.startswith("deploy:") and need != "deploy:*" and "deploy:*" in held)
    )
    assert grants(held, need) == model


@given(held=st.frozensets(scopes, max_size=4), fn=functions, other=functions)
def test_grants_properties(held: frozenset[str], fn: str, other: str) -> None:
    # Adding a scope never takes a permission away (monotonic).
    for extra in (READ, ADMIN, f"deploy:{other}"):
        assert not grants(held, f"deploy:{fn}") or grants(held | {extra}, f"deploy:{fn}")
    # A deploy scope for one function never grants another, nor admin.
    if held == {f"deploy:{fn}"} and other != fn:
        assert not grants(held, f"deploy:{other}")
        assert not grants(held, ADMIN)
    assert grants({ADMIN}, f"deploy:{fn}")
    assert not grants(frozenset(), READ)


def _info(name: str, kv: str = "") -> VersionInfo:
    text = f'name = "{name}"\n' + (
        f'[[kv_namespaces]]\nbinding = "KV"\nnamespace = "{kv}"\n' if kv else ""
    )
    summary = summarize_manifest(parse_manifest(text, path="x"))
    return VersionInfo("abcdef123456", "abcdef123456" + "0" * 52, "sig", "k", 1, 10, summary)


def test_registry_ownership_of_functions_and_namespaces() -> None:
    """acme claims shop and namespace carts; default can use neither until acme shares carts."""
    reg = Registry()
    info = _info("shop", kv="carts")
    reg.add_version(info, now_ms=1, pinned=frozenset(), account="acme")
    assert [ns.namespace for ns in reg.claim_namespaces(info.manifest, "acme", now_ms=1)] == [
        "carts"
    ]
    assert reg.claim_namespaces(info.manifest, "default", now_ms=2) == []
    assert reg.owner("shop") == "acme"
    reg.check_function("shop", "acme", admin=False)
    reg.check_function("shop", "default", admin=True)
    with pytest.raises(Forbidden, match="belongs to account 'acme'") as err:
        reg.check_function("shop", "default", admin=False)
    assert err.value.extra["owner"] == "acme"
    theirs = _info("mine", kv="carts").manifest
    with pytest.raises(Forbidden, match="binding 'KV'") as err:
        reg.check_namespaces(theirs, "default", admin=False)
    assert err.value.extra == {"owner": "acme", "namespace": "carts", "binding": "KV"}
    with pytest.raises(Forbidden):
        reg.share_namespace("carts", "default", account="default", admin=False)
    with pytest.raises(NotFound):
        reg.share_namespace("nope", "default", account="acme", admin=False)
    shared = reg.share_namespace("carts", "default", account="acme", admin=False)
    assert shared.shared_with == ("default",)
    reg.check_namespaces(theirs, "default", admin=False)
    reg.check_invariants()


_QUEUES = """
[[queues.producers]]
binding = "JOBS"
queue = "jobs"
[[queues.consumers]]
queue = "jobs"
dead_letter_queue = "jobs-dlq"
"""


def test_registry_ownership_of_queues() -> None:
    """The first manifest naming a queue (or a dead-letter queue) claims it for its account."""
    reg = Registry()
    summary = summarize_manifest(parse_manifest('name = "worker"\n' + _QUEUES, path="x"))
    assert summary.queues == ("jobs", "jobs-dlq")
    assert summary.queue_consumers == (("jobs", "jobs-dlq"),)
    assert [q.queue for q in reg.claim_queues(summary, "acme", now_ms=1)] == ["jobs", "jobs-dlq"]
    assert reg.claim_queues(summary, "default", now_ms=2) == []
    assert [(q.queue, q.owner) for q in reg.queues()] == [("jobs", "acme"), ("jobs-dlq", "acme")]
    reg.check_queues(summary, "acme", admin=False)
    reg.check_queues(summary, "default", admin=True)
    only_dlq = summarize_manifest(
        parse_manifest(
            'name = "other"\n[[queues.producers]]\nbinding = "Q"\nqueue = "jobs-dlq"\n', path="x"
        )
    )
    with pytest.raises(Forbidden, match="queue 'jobs-dlq' belongs to account 'acme'") as err:
        reg.check_queues(only_dlq, "default", admin=False)
    assert err.value.extra == {"owner": "acme", "queue": "jobs-dlq"}
    assert "name a queue of your own" in (err.value.hint or "")
