"""Cron expressions of ``[triggers] crons``: which are accepted, and when they fire.

The grammar is the classic five fields (minute, hour, day of month, month, day of week; names such
as ``MON-FRI`` and ``JAN`` allowed), or one of the nicknames below, evaluated in UTC by
``croniter`` (a maintained library; the rules are not re-implemented here). Deliberately refused,
although croniter accepts them: a sixth field (croniter reads it as seconds, which no other cron
does) and Jenkins' ``H`` hashes. An expression that never fires (``0 0 30 2 *``) is refused too,
so a typo cannot deploy a trigger that silently never runs.

Pure: time comes in as milliseconds since the epoch.
"""

from __future__ import annotations

import datetime
import re
from typing import Final

from croniter import CroniterBadCronError, CroniterBadDateError, CroniterNotAlphaError, croniter

__all__ = ["MAX_CRONS", "NICKNAMES", "check_cron", "next_tick_ms"]

# Per function (Workers allows 3 on its free plan and 250 an account on paid ones).
MAX_CRONS: Final = 8
NICKNAMES: Final = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
# Far enough to find the next tick of any expression that fires at all (a 29 February on a
# Monday, say), near enough to fail fast.
_SEARCH_YEARS: Final = 30
# The reference point from which check_cron asks for a next tick (pure: not "now").
_REFERENCE: Final = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
_BAD: Final = (CroniterBadCronError, CroniterNotAlphaError, ValueError, KeyError)


def check_cron(expression: str) -> str | None:
    """Why ``expression`` is not accepted, or ``None`` when it is."""
    text = expression.strip()
    if text != expression or not text:
        return "no leading or trailing spaces, and not empty"
    if text.startswith("@"):
        if text not in NICKNAMES:
            return f"unknown nickname; use one of {', '.join(NICKNAMES)}"
        return None
    fields = text.split()
    if len(fields) != 5:
        return f"{len(fields)} fields; a cron has 5: minute hour day-of-month month day-of-week"
    tokens = (t for f in fields for t in re.split(r"[,/-]", f))
    if any(t.upper() == "H" or t.upper().startswith("H(") for t in tokens):
        return "'H' (hashed) fields are not supported; give the minute or hour"
    try:
        _iter(text, _REFERENCE).get_next(float)
    except CroniterBadDateError:
        return "it never fires (no such date)"
    except _BAD as err:
        return str(err) or type(err).__name__
    return None


def next_tick_ms(expression: str, after_ms: int) -> int:
    """The first tick of ``expression`` strictly after ``after_ms`` (ms since the epoch, UTC)."""
    start = datetime.datetime.fromtimestamp(after_ms / 1000, tz=datetime.UTC)
    tick: float = _iter(expression, start).get_next(float)
    out = round(tick * 1000)
    if out <= after_ms:  # croniter works in whole seconds; a tick is never at or before `after`
        out = next_tick_ms(expression, after_ms + 1000 - after_ms % 1000)
    return out


def _iter(expression: str, start: datetime.datetime) -> croniter:
    return croniter(expression, start, max_years_between_matches=_SEARCH_YEARS)
