"""RFC 3339 timestamps as the Gemini API writes them (protobuf's JSON ``Timestamp``), and the
durations between them, in numbers and in words.

Google writes 0, 3, 6 or 9 fractional digits and a ``Z``: ``2024-03-14T15:11:23.766989274Z``.
``datetime.fromisoformat`` on Python 3.10 rejects both the ``Z`` and more than six digits, so
jobspec parses them here, on every Python it supports. Digits past the microsecond are
dropped (a datetime holds no more).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

_RFC3339 = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})[Tt ](?P<time>\d{2}:\d{2}:\d{2})"
    r"(?:\.(?P<fraction>\d+))?(?P<zone>[Zz]|[+-]\d{2}:\d{2})")


def parse(text: str | None) -> datetime | None:
    """The aware datetime ``text`` names, or None when it is absent or not RFC 3339."""
    if not text:
        return None
    found = _RFC3339.fullmatch(text.strip())
    if not found:
        return None
    try:
        moment = datetime.strptime(f"{found['date']}T{found['time']}", "%Y-%m-%dT%H:%M:%S")
        if found["fraction"]:
            moment = moment.replace(microsecond=int(found["fraction"][:6].ljust(6, "0")))
        zone = found["zone"]
        if zone in ("Z", "z"):
            return moment.replace(tzinfo=timezone.utc)
        sign = 1 if zone[0] == "+" else -1
        offset = timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
        return moment.replace(tzinfo=timezone(sign * offset))
    except ValueError:  # 2024-02-30, 25:00:00, an offset of 24 hours or more
        return None


def seconds_between(start: str | None, end: str | None) -> float | None:
    """Seconds from ``start`` to ``end``, or None when either is missing or unreadable."""
    first, last = parse(start), parse(end)
    if first is None or last is None:
        return None
    return round((last - first).total_seconds(), 3)


def duration_text(seconds: float) -> str:
    """``45s``, ``3m 20s``, ``2h 05m``."""
    whole = round(seconds)
    if whole < 60:
        return f"{max(whole, 1)}s"
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    return f"{whole // 3600}h {whole % 3600 // 60:02d}m"
