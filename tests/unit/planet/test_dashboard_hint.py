"""What `edgefn up` and `make demo` print about the dashboard: its URL and where the token is."""

from __future__ import annotations

from edgefn.planet.credentials import dashboard_hint


def test_hint_names_the_url_and_the_credentials_file_never_a_token() -> None:
    text = dashboard_hint("http://127.0.0.1:4222/", "/s/demo/credentials.json")
    first, *rest = text.splitlines()
    assert first == "dashboard: http://127.0.0.1:4222/dashboard"
    assert any('"token" of /s/demo/credentials.json' in line for line in rest)
    assert any("--scope read --state-dir /s/demo" in line for line in rest)
    assert "edgefn_" not in text
