"""Timestamps of the three log families, turned into epoch seconds cheaply.

Most lines in a busy log fall in a minute that the previous line already used, so
the expensive part (the calendar arithmetic) is cached per minute and only seconds
are converted per line; fractions are dropped, second resolution being plenty for
hourly timelines and minute-long windows.  Stamps without a zone (classic syslog, plain
Exim mainlog) are read as UTC so that results do not depend on the machine running
the report; classic syslog has no year either, see :func:`set_reference_year`.
"""

from __future__ import annotations

import time

MONTHS = {
    m.encode(): i
    for i, m in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"),
        start=1,
    )
}


def _timegm(tm: tuple[int, int, int, int, int, int]) -> int:
    """calendar.timegm without importing calendar (workers stay small)."""
    y, m, d, hh, mm, ss = tm
    if not (1 <= m <= 12 and 1 <= d <= 31 and 0 <= hh < 24 and 0 <= mm < 60):
        raise ValueError("bad date")
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    days = era * 146097 + doe - 719468
    return days * 86400 + hh * 3600 + mm * 60 + ss


_now = time.gmtime()
_ref_year = _now.tm_year
_ref_month = _now.tm_mon
_minute_cache: dict[bytes, float] = {}
_fast_cache: dict[bytes, float] = {}  # minute + last six bytes -> the minute's epoch


def set_reference_year(year: int | None) -> None:
    """Pin the year given to classic-syslog stamps (they carry none).

    Without it, a month later than the current one is taken as last year's, the
    same guess syslog readers have always made.
    """
    global _ref_year, _ref_month
    if year is None:
        now = time.gmtime()
        _ref_year, _ref_month = now.tm_year, now.tm_mon
    else:
        _ref_year, _ref_month = year, 13
    _minute_cache.clear()
    _fast_cache.clear()


def rfc3339(ts: bytes) -> float | None:
    """``2023-03-14T00:00:31.185246+01:00`` (fraction and zone optional, ``Z`` ok)."""
    # Fast path: the zone is decided by the last six bytes, so the minute and those six
    # bytes fix the minute's epoch; most lines of a log hit this.
    base = _fast_cache.get(ts[:16] + ts[-6:])
    if base is not None:
        try:
            return base + int(ts[17:19])
        except ValueError:
            return None
    if len(ts) < 19 or ts[10:11] != b"T":
        return None
    tail = ts[19:]
    zone = b""
    if tail:
        if tail[-1:] == b"Z":
            zone = b"Z"
        elif len(tail) >= 6 and tail[-6:-5] in (b"+", b"-") and tail[-3:-2] == b":":
            zone = tail[-6:]
        elif len(tail) >= 5 and tail[-5:-4] in (b"+", b"-") and tail[-4:].isdigit():
            zone = tail[-5:]
    key = ts[:16] + zone
    base = _minute_cache.get(key)
    if base is None:
        try:
            tm = (int(ts[0:4]), int(ts[5:7]), int(ts[8:10]), int(ts[11:13]), int(ts[14:16]), 0)
            base = float(_timegm(tm))
        except ValueError:
            return None
        if zone and zone != b"Z":
            sign = -1 if zone[:1] == b"+" else 1
            digits = zone[1:].replace(b":", b"")
            try:
                base += sign * (int(digits[:2]) * 3600 + int(digits[2:4]) * 60)
            except ValueError:
                return None
        if len(_minute_cache) > 50_000:
            _minute_cache.clear()
        _minute_cache[key] = base
    try:
        seconds = int(ts[17:19])
    except ValueError:
        return None
    if len(_fast_cache) > 50_000:
        _fast_cache.clear()
    _fast_cache[ts[:16] + ts[-6:]] = base
    return base + seconds


def bsd(month: bytes, day: bytes, clock: bytes) -> float | None:
    """``Mar`` ``7`` ``02:09:33`` (optionally ``02:09:33.123456``), year inferred."""
    key = month + b" " + day + b" " + clock[:5]
    base = _minute_cache.get(key)
    if base is None:
        mon = MONTHS.get(month)
        if mon is None:
            return None
        try:
            year = _ref_year - 1 if mon > _ref_month else _ref_year
            tm = (year, mon, int(day), int(clock[0:2]), int(clock[3:5]), 0)
            base = float(_timegm(tm))
        except ValueError:
            return None
        if len(_minute_cache) > 50_000:
            _minute_cache.clear()
        _minute_cache[key] = base
    try:
        return base + int(clock[6:8])
    except ValueError:
        return None


def exim(date: bytes, clock: bytes, zone: bytes = b"") -> float | None:
    """``2020-06-19`` ``04:51:49[.345]`` and an optional ``+0200`` zone."""
    key = date + clock[:5] + zone
    base = _minute_cache.get(key)
    if base is None:
        try:
            tm = (
                int(date[0:4]),
                int(date[5:7]),
                int(date[8:10]),
                int(clock[0:2]),
                int(clock[3:5]),
                0,
            )
            base = float(_timegm(tm))
            if zone:
                sign = -1 if zone[:1] == b"+" else 1
                base += sign * (int(zone[1:3]) * 3600 + int(zone[3:5]) * 60)
        except ValueError:
            return None
        if len(_minute_cache) > 50_000:
            _minute_cache.clear()
        _minute_cache[key] = base
    try:
        return base + int(clock[6:8])
    except ValueError:
        return None
