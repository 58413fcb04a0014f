"""Secrets on a real planet, checked from outside as an attacker would look.

One module-scoped 3-location planet started with the CLI. A secret is set with
``edgefn secret put`` (value on stdin); then, from outside the platform: the function serves it
at every location, another function's ``env`` has no such name, and the value's bytes appear in
no file under the planet's state directory (JetStream store, desired state on nodes, node logs
even though the function prints it and raises with it, supervisor logs), in no API response and
not in ``edgefn status --json``. Updating it rolls out everywhere; deleting it removes it.

Memory-reading checks (one worker reading another's memory) belong to the sandbox work and are
not made here.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.planet_helpers import Planet, PlanetFactory, PlanetSpec, edgefn, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

VALUE = "edgefn-secret-4f1d2c9a8b7e"
ROTATED = "edgefn-rotated-6b3a0f5e1d2c"

VAULT = """\
import hashlib

from edgefn import Response


async def fetch(request, env, ctx):
    if "API_TOKEN" not in env:
        return Response.text("absent")
    print("token in use:", env.API_TOKEN)
    if request.path == "/boom":
        raise RuntimeError(f"upstream refused token {env.API_TOKEN}")
    if request.path == "/hash":
        return Response.text(hashlib.sha256(env.API_TOKEN.encode()).hexdigest())
    return Response.text(env.API_TOKEN)
"""

OTHER = """\
from edgefn import Response


async def fetch(request, env, ctx):
    return Response.json({"names": dir(env), "has": "API_TOKEN" in env})
"""


def _function(root: Path, name: str, main: str) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "edgefn.toml").write_text(f'name = "{name}"\n', "utf-8")
    (d / "main.py").write_text(main, "utf-8")
    return d


@pytest.fixture(scope="module")
def planet(planet_factory: PlanetFactory, tmp_path_factory: pytest.TempPathFactory) -> Planet:
    p = planet_factory("planet", PlanetSpec(locations=3))
    src = tmp_path_factory.mktemp("functions")
    for name, main in (("vault", VAULT), ("other", OTHER)):
        p.deploy(_function(src, name, main))
    return p


def _everywhere(info: dict[str, Any], function: str, path: str = "/") -> dict[str, httpx.Response]:
    """The response of ``function`` at every location, asking each node directly."""
    return {
        loc["name"]: httpx.get(
            f"{loc['url']}{path}", headers={"host": f"{function}.localhost"}, timeout=10
        )
        for loc in info["locations"]
    }


def _served_everywhere(info: dict[str, Any], text: str) -> bool:
    return all(r.text == text for r in _everywhere(info, "vault").values())


def _files_containing(root: Path, needle: bytes) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                data = path.read_bytes()
            except OSError:  # a socket or a file removed meanwhile
                continue
            if needle in data:
                hits.append(str(path.relative_to(root)))
    return hits


def test_argv_values_are_refused(planet: tuple[dict[str, Any], Path]) -> None:
    _, state = planet
    res = edgefn("secret", "put", "vault", "API_TOKEN", VALUE, state_dir=state, check=False)
    assert res.returncode == 2
    assert "stdin" in res.stderr
    listed = edgefn("secret", "list", "vault", "--json", state_dir=state)
    assert listed["secrets"] == []


def test_secret_lifecycle_seen_from_outside(planet: tuple[dict[str, Any], Path]) -> None:
    info, state = planet
    out = edgefn(
        "secret", "put", "vault", "API_TOKEN", "--wait", "--json", state_dir=state, stdin=VALUE
    )
    assert out["generation"] == 1
    assert set(out["convergence_s"]) == {loc["name"] for loc in info["locations"]}
    assert VALUE not in str(out)

    # Served at every location; the hash route proves the value inside the function.
    assert _served_everywhere(info, VALUE)
    digest = hashlib.sha256(VALUE.encode()).hexdigest()
    assert {r.text for r in _everywhere(info, "vault", "/hash").values()} == {digest}
    # Another function's env has no such name.
    for r in _everywhere(info, "other").values():
        assert r.json()["has"] is False
        assert "API_TOKEN" not in r.json()["names"]
    # The function prints it and raises with it: the client sees neither.
    for r in _everywhere(info, "vault", "/boom").values():
        assert r.status_code == 500
        assert VALUE not in r.text

    # Not in status, not in any API answer.
    status = edgefn("status", "--json", state_dir=state)
    assert VALUE not in str(status)
    api = info["api_url"]
    for path in ("/v1/status", "/v1/functions", "/v1/functions/vault/secrets",
                 "/v1/functions/vault/versions", "/v1/functions/vault/deployments"):  # fmt: skip
        assert VALUE not in httpx.get(api + path, timeout=10).text
    listed = edgefn("secret", "list", "vault", "--json", state_dir=state)
    assert [s["name"] for s in listed["secrets"]] == ["API_TOKEN"]

    # Not in any file under the planet's state dir, in clear; node logs show it redacted.
    def redacted_in_logs() -> bool:
        logs = [Path(loc["log"]).read_text() for loc in info["locations"]]
        return all("upstream refused token [REDACTED]" in text for text in logs)

    wait_for(redacted_in_logs, timeout_s=10, what="redacted error lines in every node log")
    assert _files_containing(state, VALUE.encode()) == []
    assert _files_containing(state, digest.encode()) == []

    # Update: the new value is served everywhere.
    out = edgefn(
        "secret", "put", "vault", "API_TOKEN", "--wait", "--json", state_dir=state, stdin=ROTATED
    )
    assert out["generation"] == 2
    wait_for(lambda: _served_everywhere(info, ROTATED), timeout_s=30, what="rotated value")

    # Delete: gone everywhere.
    edgefn("secret", "delete", "vault", "API_TOKEN", "--wait", "--json", state_dir=state)
    wait_for(lambda: _served_everywhere(info, "absent"), timeout_s=30, what="secret deleted")
    assert edgefn("secret", "list", "vault", "--json", state_dir=state)["secrets"] == []
    for needle in (VALUE, ROTATED):
        assert _files_containing(state, needle.encode()) == []
