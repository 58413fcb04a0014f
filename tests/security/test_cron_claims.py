"""A function cannot reach the cron claims that decide which location runs a tick (#14).

The claims live in the strong KV's home bucket beside every namespace's strong keys, so a
function that could name a claim key could take a tick over, fence the real runner or stop a
schedule. Functions name only a binding; the node maps it to the manifest's namespace, and a
strong key is ``<namespace>.<base64url key>``. These check both halves against any input: no
manifest declares a namespace that starts a claim, and no (namespace, key) maps onto one.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgefn.bundle import parse_manifest
from edgefn.edge.cron_policy import claim_key
from edgefn.errors import ManifestError
from edgefn.state.driver import home_key

NAMESPACES = st.from_regex(r"\A[a-z0-9_-]{1,63}\Z")


@pytest.mark.parametrize("namespace", ["=cron", "=cron.fn", "=", "=cron.>", "cron.x", "*"])
def test_a_manifest_cannot_declare_a_claim_namespace(namespace: str) -> None:
    doc = f'name = "x"\n[[kv_namespaces]]\nbinding = "KV"\nnamespace = "{namespace}"\n'
    with pytest.raises(ManifestError, match="namespace"):
        parse_manifest(doc, path="edgefn.toml")


@given(namespace=NAMESPACES, key=st.text(max_size=200), fn=st.text(min_size=1, max_size=40))
def test_no_namespace_and_key_reach_a_claim(namespace: str, key: str, fn: str) -> None:
    home = home_key(namespace, key)
    assert not home.startswith("=")
    assert home != claim_key(fn, "* * * * *")
    # The namespace's watch (``<namespace>.>``) sees exactly one more token: never a claim.
    assert home.count(".") == 1
