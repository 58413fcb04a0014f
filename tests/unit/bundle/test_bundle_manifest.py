"""edgefn.toml parsing: a full valid manifest, defaults, and every error path with its message."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgefn.bundle import Limits, load_manifest, parse_manifest
from edgefn.errors import ManifestError

FULL = """
name = "shop-api"
main = "src/app.py"
routes = ["Example.com/api/*", { pattern = "*.shop.example/*" }]

[vars]
API_URL = "https://x"
RETRIES = 3
RATIO = 0.5
DEBUG = false

[limits]
cpu_ms = 50
memory_mb = 256
timeout_ms = 5000
max_body_kb = 64
subrequests = 0
requests_per_s = 10

[egress]
allow = ["api.example.com", "*.Example.org:443"]

[[kv_namespaces]]
binding = "CACHE"
namespace = "cache-v1"

[[kv_namespaces]]
binding = "SESSIONS"
namespace = "sessions_2"

[placement]
mode = "regions"
regions = ["eu", "us-east"]
affinity = "header:X-User"
retry_safe = true

[runtime]
preload = ["json", "email.utils"]
"""


def _err(text: str) -> ManifestError:
    with pytest.raises(ManifestError) as info:
        parse_manifest(text, path="fn/edgefn.toml")
    assert info.value.path == "fn/edgefn.toml"
    return info.value


def test_full_manifest_parses_every_section() -> None:
    m = parse_manifest(FULL, path="fn/edgefn.toml")
    assert m.name == "shop-api"
    assert m.main == "src/app.py"
    assert dict(m.vars) == {"API_URL": "https://x", "RETRIES": 3, "RATIO": 0.5, "DEBUG": False}
    assert m.limits == Limits(50, 256, 5000, 64, 0, 10.0)
    assert m.egress.allow == ("api.example.com", "*.example.org:443")
    assert [(k.binding, k.namespace) for k in m.kv_namespaces] == [
        ("CACHE", "cache-v1"),
        ("SESSIONS", "sessions_2"),
    ]
    assert m.placement.mode == "regions"
    assert m.placement.regions == ("eu", "us-east")
    assert m.placement.affinity == "header:x-user"
    assert m.placement.retry_safe is True
    assert [r.pattern for r in m.routes] == ["example.com/api/*", "*.shop.example/*"]
    assert m.runtime.preload == ("json", "email.utils")
    assert m.path == "fn/edgefn.toml"


def test_minimal_manifest_gets_defaults() -> None:
    m = parse_manifest('name = "a"', path="x")
    assert m.main == "main.py"
    assert m.limits == Limits()
    assert m.egress.allow is None
    assert m.placement.mode == "everywhere"
    assert m.kv_namespaces == ()
    assert dict(m.vars) == {}


@pytest.mark.parametrize(
    ("text", "key", "needle"),
    [
        ('name = "a"\ntimeout_ms = 3', "timeout_ms", "allowed keys"),
        ('name = "a"\n[limits]\ntimeout = 3', "limits.timeout", "did you mean 'timeout_ms'?"),
        ('name = "a"\n[placment]\nmode = "smart"', "placment", "did you mean 'placement'?"),
        (
            'name = "a"\n[[kv_namespaces]]\nbinding = "A"\nnamespace = "b"\nnamspace = "c"',
            "kv_namespaces[0].namspace",
            "did you mean 'namespace'?",
        ),
        ('name = "a"\n[egress]\nallowed = []', "egress.allowed", "did you mean 'allow'?"),
        ('name = "a"\n[runtime]\npreloads = []', "runtime.preloads", "did you mean 'preload'?"),
    ],
)
def test_unknown_keys_name_the_dotted_key_and_suggest(text: str, key: str, needle: str) -> None:
    err = _err(text)
    assert err.key == key
    assert "unknown key" in err.message
    assert needle in err.hint


@pytest.mark.parametrize(
    ("text", "key", "expected"),
    [
        ("name = 3", "name", "expected a string, got integer"),
        ('name = "a"\nmain = ["x"]', "main", "expected a string, got array"),
        ('name = "a"\nlimits = 3', "limits", "expected a table, got integer"),
        ('name = "a"\n[limits]\ncpu_ms = "50"', "limits.cpu_ms", "expected an integer, got string"),
        ('name = "a"\n[limits]\ncpu_ms = 5.5', "limits.cpu_ms", "expected an integer, got float"),
        ('name = "a"\n[limits]\nmemory_mb = true', "limits.memory_mb", "expected an integer"),
        (
            'name = "a"\n[limits]\nrequests_per_s = "x"',
            "limits.requests_per_s",
            "expected a number",
        ),
        ('name = "a"\n[vars]\nX = [1]', "vars.X", "expected a string, integer, float or boolean"),
        ('name = "a"\n[vars.X]\nY = 1', "vars.X", "got table"),
        ('name = "a"\n[egress]\nallow = "a.com"', "egress.allow", "expected an array of strings"),
        ('name = "a"\n[egress]\nallow = [1]', "egress.allow[0]", "expected a string, got integer"),
        ('name = "a"\nkv_namespaces = 1', "kv_namespaces", "expected an array of tables"),
        ('name = "a"\nkv_namespaces = [1]', "kv_namespaces[0]", "expected a table"),
        (
            'name = "a"\n[[kv_namespaces]]\nbinding = 1\nnamespace = "b"',
            "kv_namespaces[0].binding",
            "expected a string",
        ),
        (
            'name = "a"\n[placement]\nretry_safe = "yes"',
            "placement.retry_safe",
            "expected a boolean",
        ),
        ('name = "a"\n[placement]\nregions = "eu"', "placement.regions", "expected an array"),
        ('name = "a"\nroutes = "a.com/*"', "routes", "expected an array"),
        ('name = "a"\nroutes = [1]', "routes[0]", "expected a string"),
        ('name = "a"\n[runtime]\npreload = [true]', "runtime.preload[0]", "expected a string"),
    ],
)
def test_wrong_types_name_key_and_expected_type(text: str, key: str, expected: str) -> None:
    err = _err(text)
    assert err.key == key
    assert expected in err.message
    assert key in str(err)


@pytest.mark.parametrize("name", ["", "-a", "a-", "A", "a_b", "a.b", "x" * 64, "é"])
def test_bad_names(name: str) -> None:
    err = _err(f'name = "{name}"')
    assert err.key == "name"
    assert "a-z, 0-9" in err.hint


def test_name_of_63_chars_is_fine_and_name_is_required() -> None:
    assert parse_manifest(f'name = "{"a" * 63}"', path="x").name == "a" * 63
    err = _err("main = 'main.py'")
    assert err.key == "name"
    assert "missing" in err.message


@pytest.mark.parametrize(
    ("main", "needle"),
    [
        ("/abs/main.py", "not a relative path"),
        ("../main.py", "not a relative path"),
        ("src/../../x.py", "not a relative path"),
        ("src\\\\x.py", "not a relative path"),
        ("", "not a relative path"),
        ("main.js", "not a .py file"),
    ],
)
def test_bad_main(main: str, needle: str) -> None:
    err = _err(f'name = "a"\nmain = "{main}"')
    assert err.key == "main"
    assert needle in err.message


@pytest.mark.parametrize(
    ("key", "value", "bounds"),
    [
        ("cpu_ms", "0", "from 1 to 300000"),
        ("cpu_ms", "-5", "from 1 to 300000"),
        ("memory_mb", "8", "from 16 to 4096"),
        ("memory_mb", "1073741824", "from 16 to 4096"),
        ("timeout_ms", "900001", "from 1 to 900000"),
        ("max_body_kb", "0", "from 1 to 15360"),
        ("max_body_kb", "20000", "from 1 to 15360"),
        ("subrequests", "1001", "from 0 to 1000"),
        ("requests_per_s", "0", "from 0.001 to 1e+06"),
        ("scratch_mb", "0", "from 1 to 1024"),
        ("scratch_mb", "2048", "from 1 to 1024"),
    ],
)
def test_limits_out_of_bounds_say_the_range(key: str, value: str, bounds: str) -> None:
    err = _err(f'name = "a"\n[limits]\n{key} = {value}')
    assert err.key == f"limits.{key}"
    assert "out of range" in err.message
    assert bounds in err.hint


@pytest.mark.parametrize(
    ("body", "key", "needle"),
    [
        ('[vars]\n"not-ident" = 1', "vars.not-ident", "identifiers"),
        (
            '[[kv_namespaces]]\nbinding = "A"\nnamespace = "b"\n'
            '[[kv_namespaces]]\nbinding = "A"\nnamespace = "c"',
            "kv_namespaces[1].binding",
            "duplicate binding 'A'",
        ),
        (
            '[[kv_namespaces]]\nbinding = "my-cache"\nnamespace = "b"',
            "kv_namespaces[0].binding",
            "not an identifier",
        ),
        (
            '[[kv_namespaces]]\nbinding = "A"\nnamespace = "B!"',
            "kv_namespaces[0].namespace",
            "invalid namespace",
        ),
        ('[[kv_namespaces]]\nbinding = "A"', "kv_namespaces[0].namespace", "missing required key"),
        ('[egress]\nallow = ["bad host"]', "egress.allow[0]", "invalid host"),
        ('[egress]\nallow = ["a.com:70000"]', "egress.allow[0]", "invalid host"),
        ('[egress]\nallow = ["a.*.com"]', "egress.allow[0]", "invalid host"),
        ('[placement]\nmode = "nearest"', "placement.mode", "unknown mode"),
        ("[placement]\nmin_replicas = 2", "placement.min_replicas", "only to mode 'smart'"),
        ('[placement]\nmode = "smart"\nmin_replicas = 0', "placement.min_replicas", "out of range"),
        ('[placement]\nmode = "smart"\nmin_replicas = "2"', "placement.min_replicas", "integer"),
        ('[placement]\nmode = "smart"\nmax_latency_ms = 0', "placement.max_latency_ms", "range"),
        (
            '[placement]\nmode = "smart"\nmax_latency_ms = true',
            "placement.max_latency_ms",
            "number",
        ),
        ('[placement]\nmode = "regions"', "placement.regions", "needs at least one region"),
        ('[placement]\nregions = ["e u"]', "placement.regions[0]", "invalid region"),
        ('[placement]\naffinity = "query:x"', "placement.affinity", "invalid affinity"),
        ('[placement]\naffinity = "header:"', "placement.affinity", "invalid affinity"),
        ('routes = ["example.com"]', "routes[0]", "invalid route pattern"),
        ('routes = ["exa mple.com/*"]', "routes[0]", "invalid route pattern"),
        ('routes = [{ path = "x" }]', "routes[0].path", "unknown key"),
        ("routes = [{ }]", "routes[0].pattern", "missing required key"),
        ('[runtime]\npreload = ["os.path/x"]', "runtime.preload[0]", "invalid module name"),
        (f"[runtime]\npreload = {[f'm{i}' for i in range(65)]!r}", "runtime.preload", "at most 64"),
    ],
)
def test_bad_values(body: str, key: str, needle: str) -> None:
    err = _err(f'name = "a"\n{body}')
    assert err.key == key
    assert needle in err.message


def test_invalid_toml_names_line_and_column() -> None:
    err = _err('name = "a"\n[limits\ncpu_ms = 1\n')
    assert "invalid TOML at line 2, column 8" in err.message
    assert err.hint


def test_load_manifest_from_directory_and_file(tmp_path: Path) -> None:
    (tmp_path / "edgefn.toml").write_text('name = "a"\n', encoding="utf-8")
    (tmp_path / "main.py").write_text("async def fetch(r, e, c): ...\n", encoding="utf-8")
    assert load_manifest(tmp_path).path == str(tmp_path / "edgefn.toml")
    assert load_manifest(tmp_path / "edgefn.toml").name == "a"


def test_missing_manifest_says_how_to_create_one(tmp_path: Path) -> None:
    with pytest.raises(ManifestError) as info:
        load_manifest(tmp_path)
    assert "no manifest found" in info.value.message
    assert "edgefn new NAME" in info.value.hint
    assert str(tmp_path / "edgefn.toml") in str(info.value)


def test_missing_main_module_is_reported(tmp_path: Path) -> None:
    (tmp_path / "edgefn.toml").write_text('name = "a"\nmain = "app.py"\n', encoding="utf-8")
    with pytest.raises(ManifestError) as info:
        load_manifest(tmp_path)
    assert info.value.key == "main"
    assert "app.py" in info.value.message
    assert "async def fetch" in info.value.hint


def test_unreadable_manifest_is_reported(tmp_path: Path) -> None:
    (tmp_path / "edgefn.toml").write_bytes(b'name = "\xff"')
    with pytest.raises(ManifestError, match="cannot read manifest"):
        load_manifest(tmp_path)


def test_egress_allow_private_is_parsed_and_normalised() -> None:
    text = 'name = "a"\n[egress]\nallow_private = ["127.0.0.1:9000", "LocalHost:8080", "[::1]"]'
    m = parse_manifest(text, path="f/edgefn.toml")
    assert m.egress.allow is None
    assert m.egress.allow_private == ("127.0.0.1:9000", "localhost:8080", "[::1]")


@pytest.mark.parametrize(
    ("entry", "needle"),
    [
        ("127.0.0.1:0", "out of range"),
        ("127.0.0.1:70000", "out of range"),
        ("::1", "in brackets"),
        ("[localhost]:80", "must be IPv6"),
        ("local host", "not a hostname"),
        ("127.0.0.1:http", "port must be a number"),
        ("*.local", "not a hostname"),
        ("", "not a hostname"),
    ],
)
def test_bad_allow_private_entries_name_the_key_and_the_fix(entry: str, needle: str) -> None:
    with pytest.raises(ManifestError) as info:
        parse_manifest(f'name = "a"\n[egress]\nallow_private = ["{entry}"]', path="f/edgefn.toml")
    assert info.value.key == "egress.allow_private[0]"
    assert needle in str(info.value)
    assert "localhost:8080" in info.value.hint


def test_smart_placement_reads_its_replicas_and_latency_bound() -> None:
    m = parse_manifest(
        'name = "a"\n[placement]\nmode = "smart"\nmin_replicas = 3\nmax_latency_ms = 80\n'
        'regions = ["eu-west", "eu-east"]\n',
        path="a/edgefn.toml",
    )
    assert m.placement.mode == "smart"
    assert (m.placement.min_replicas, m.placement.max_latency_ms) == (3, 80.0)
    assert m.placement.regions == ("eu-west", "eu-east")
    default = parse_manifest('name = "a"\n[placement]\nmode = "smart"\n', path="a/edgefn.toml")
    assert (default.placement.min_replicas, default.placement.max_latency_ms) == (2, None)
