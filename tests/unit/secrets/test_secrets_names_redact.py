"""Secret names and values (validation) and log redaction."""

from __future__ import annotations

import json

import pytest

from edgefn.errors import UsageError
from edgefn.secrets.names import MAX_VALUE_BYTES, validate_secret_name, validate_secret_value
from edgefn.secrets.redact import REDACTED, Redactor


@pytest.mark.parametrize("name", ["API_KEY", "_x", "a1", "A" * 64])
def test_valid_names(name: str) -> None:
    assert validate_secret_name(name) == name


@pytest.mark.parametrize("name", ["", "1ABC", "API-KEY", "a.b", "A" * 65, "x y", "é"])
def test_invalid_names(name: str) -> None:
    with pytest.raises(UsageError, match="invalid secret name"):
        validate_secret_name(name)


def test_values_are_bounded_and_never_quoted() -> None:
    assert validate_secret_value("é") == "é".encode()
    assert len(validate_secret_value("x" * MAX_VALUE_BYTES)) == MAX_VALUE_BYTES
    with pytest.raises(UsageError) as info:
        validate_secret_value("Q" * (MAX_VALUE_BYTES + 1))
    assert "QQQQ" not in str(info.value)
    with pytest.raises(UsageError, match="empty"):
        validate_secret_value("")
    with pytest.raises(UsageError, match="Unicode"):
        validate_secret_value("\ud800")


def test_redacts_raw_and_json_escaped_forms() -> None:
    r = Redactor()
    value = 'p"a\\ss\nwörd'
    r.set_values("api", [value, "TOPSECRET"])
    line = json.dumps({"message": f"got {value} and TOPSECRET!"})
    out = r.redact(line)
    assert json.loads(out)["message"] == f"got {REDACTED} and {REDACTED}!"
    assert r.redact(f"raw {value}") == f"raw {REDACTED}"


def test_longest_value_wins_and_short_values_are_kept() -> None:
    r = Redactor()
    r.set_values("api", ["abcd", "abcdefgh", "xyz"])
    assert r.redact("abcdefgh abcd xyz") == f"{REDACTED} {REDACTED} xyz"


def test_previous_values_stay_redacted_one_generation() -> None:
    r = Redactor()
    r.set_values("api", ["first-value"])
    r.set_values("api", ["second-value"])
    assert r.redact("first-value second-value") == f"{REDACTED} {REDACTED}"
    r.set_values("api", ["third-value"])
    assert r.redact("first-value") == "first-value"
    r.set_values("api", [])
    assert r.redact("third-value second-value") == f"{REDACTED} second-value"


def test_empty_redactor_is_identity() -> None:
    assert Redactor().redact("anything") == "anything"
