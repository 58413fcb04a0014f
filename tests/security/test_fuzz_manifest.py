"""Fuzz the edgefn.toml parser: any document gives a Manifest or a ManifestError naming the key."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgefn.bundle import Manifest, parse_manifest
from edgefn.errors import ManifestError

KEYS = {
    "": ["name", "main", "routes", "vars", "limits", "egress", "kv_namespaces", "placement",
         "runtime", "origins", "cdn", "durable_objects", "nmae"],
    "limits": ["cpu_ms", "memory_mb", "timeout_ms", "max_body_kb", "subrequests",
               "requests_per_s", "cpu"],
    "egress": ["allow", "allow_private", "alow"],
    "placement": ["mode", "regions", "affinity", "retry_safe"],
    "runtime": ["preload"],
    "kv_namespaces": ["binding", "namespace"],
    "origins": ["binding", "url", "cache", "bindng"],
    "cdn": ["origin", "viewer_request", "origin_request", "origin_response", "viewer_response"],
    "durable_objects": ["binding", "class_name"],
    "vars": ["API_URL", "x", "1bad", "with space"],
}  # fmt: skip

SCALARS = (
    st.text(max_size=20)
    | st.sampled_from(["hello", "main.py", "../x.py", "127.0.0.1:9000", "[::1]", "*.a.com",
                       "localhost:0", "header:x", "everywhere", "regions", "a.com/*", "json",
                       "http://127.0.0.1:8790", "https://x.com/b?q", "ORIGIN", "Room"])
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=True)
    | st.booleans()
)  # fmt: skip
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for key in draw(st.lists(st.sampled_from(KEYS[""]), max_size=8, unique=True)):
        if key in KEYS and draw(st.booleans()):
            table = {
                k: draw(VALUES) for k in draw(st.lists(st.sampled_from(KEYS[key]), max_size=4))
            }
            arrays = ("kv_namespaces", "origins", "durable_objects")
            doc[key] = [table] if key in arrays else table
        else:
            doc[key] = draw(VALUES)
    return doc


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return {"nan": "nan", "inf": "inf", "-inf": "-inf"}.get(repr(value), repr(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return '"' + "".join(c if c.isalnum() or c in " .:/*[]-_" else f"\\u{ord(c):04x}"
                             for c in value if ord(c) < 0xD800 or ord(c) > 0xDFFF) + '"'  # fmt: skip
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    assert isinstance(value, dict)
    return "{" + ", ".join(f"{_toml_value(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"


def _toml(doc: dict[str, Any]) -> str:
    return "\n".join(f"{k} = {_toml_value(v)}" for k, v in doc.items())


def _check(text: str, *, valid_toml: bool = False) -> None:
    try:
        manifest: Manifest | ManifestError = parse_manifest(text, path="fn/edgefn.toml")
    except ManifestError as caught:
        manifest = caught
    if isinstance(manifest, Manifest):
        return
    assert manifest.path == "fn/edgefn.toml"
    assert manifest.message
    assert str(manifest).startswith("fn/edgefn.toml")
    if valid_toml:  # a schema error, not a syntax error: it must say which key
        assert manifest.key, str(manifest)


@settings(max_examples=300)
@given(documents())
def test_generated_documents_parse_or_name_the_key(doc: dict[str, Any]) -> None:
    text = _toml(doc)
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError:  # our writer produced something TOML rejects: still fine
        _check(text)
    else:
        _check(text, valid_toml=True)


@settings(max_examples=200)
@given(st.text(max_size=200))
def test_arbitrary_text_never_crashes_the_parser(text: str) -> None:
    _check(text)


def test_error_names_the_key_for_a_wrong_type() -> None:
    with pytest.raises(ManifestError) as info:
        parse_manifest('name = "a"\n[egress]\nallow_private = [1]', path="fn/edgefn.toml")
    assert info.value.key == "egress.allow_private[0]"
