"""A KV error crossing from the node to function code keeps its message and its one hint."""

from __future__ import annotations

import pytest

from edgefn.errors import KVConflict, KVLimitError
from edgefn.runtime import protocol as p
from edgefn.runtime.worker import kv_value


def test_a_conflict_reaches_function_code_with_one_hint_and_its_revision() -> None:
    sent = KVConflict("key 'n' is at revision 7, not 6", key="n", revision=7)
    res = p.KVResult(
        id=1,
        call_id=1,
        ok=False,
        error_kind="conflict",
        error_message=str(sent),
        value={"key": "n", "revision": 7},
    )
    with pytest.raises(KVConflict) as info:
        kv_value(res)
    err = info.value
    assert (err.message, err.hint, err.key, err.revision) == (sent.message, sent.hint, "n", 7)
    assert str(err) == str(sent)
    assert str(err).count("hint:") == 1


def test_other_errors_keep_message_and_hint_apart() -> None:
    sent = KVLimitError("value of 'k' is 2 MiB, over 1 MiB", hint="store less")
    res = p.KVResult(id=1, call_id=1, ok=False, error_kind="limit", error_message=str(sent))
    with pytest.raises(KVLimitError) as info:
        kv_value(res)
    assert (info.value.message, info.value.hint) == (sent.message, "store less")
