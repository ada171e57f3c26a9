"""DA / TM / DT values in one sortable spelling, so that the index can range-match with plain
string comparison on SQLite and PostgreSQL alike.

Stored values are normalised when written (`normalized_*`); query bounds are widened to the
whole period their precision names (`period`), so "StudyTime=1030" or "-2020" include every
value inside that minute or year, the reading PS3.4 C.2.2.2.5 gives partial values.
"""

from __future__ import annotations

import re
from typing import Literal

from scp_node.index.errors import IndexingError

TemporalVR = Literal["DA", "TM", "DT"]

_DATE = re.compile(r"^\d{8}$")
_TIME = re.compile(r"^(\d{2})(\d{2})?(\d{2})?(\.\d{1,6})?$")
_DATETIME = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\.\d{1,6})?([+-]\d{4})?$")

# Fill-ins for the components a partial DT leaves out: (start of period, end of period).
_DT_FILL = [("01", "12"), ("01", "31"), ("00", "23"), ("00", "59"), ("00", "59")]  # MM DD HH MM SS


# Allowed range of each component after the year: month, day, hour, minute, second (leap: 60).
_RANGES = [(1, 12), (1, 31), (0, 23), (0, 59), (0, 60)]


class InvalidValue(IndexingError):
    """A query value that is not a valid DA, TM or DT."""


def normalized_date(value: str) -> str:
    """YYYYMMDD; the retired ACR-NEMA spelling YYYY.MM.DD is accepted. Unparseable: ''."""
    text = value.strip().replace(".", "")
    return text if _DATE.match(text) else ""


def normalized_time(value: str) -> str:
    """HHMMSS[.FFFFFF]; missing minutes and seconds become 00, old HH:MM:SS loses its colons."""
    try:
        return period("TM", value.strip().replace(":", ""))[0]
    except InvalidValue:
        return ""


def normalized_datetime(value: str) -> str:
    """YYYYMMDDHHMMSS[.FFFFFF]; the UTC offset is dropped (the index keeps local time)."""
    try:
        return period("DT", value.strip())[0]
    except InvalidValue:
        return ""


def period(vr: TemporalVR, value: str) -> tuple[str, str]:
    """The first and last normalised values that a (possibly partial) value stands for."""
    if vr == "DA":
        if not _DATE.match(value):
            raise InvalidValue(f"{value!r} is not a DA (YYYYMMDD)")
        _check_ranges(value, [value[4:6], value[6:8]], _RANGES[:2])
        return value, value
    if vr == "TM":
        match = _TIME.match(value)
        if not match:
            raise InvalidValue(f"{value!r} is not a TM (HHMMSS.FFFFFF)")
        hours, minutes, seconds, fraction = match.groups()
        if fraction and not seconds:
            raise InvalidValue(f"{value!r}: a TM fraction needs seconds")
        _check_ranges(value, [hours, minutes, seconds], _RANGES[2:])
        if fraction:
            return value, value
        start = hours + (minutes or "00") + (seconds or "00")
        end = hours + (minutes or "59") + (seconds or "59") + ".999999"
        return start, end
    match = _DATETIME.match(value)
    if not match:
        raise InvalidValue(f"{value!r} is not a DT (YYYYMMDDHHMMSS.FFFFFF&ZZXX)")
    year, *parts, fraction, _offset = match.groups()
    if fraction and None in parts:
        raise InvalidValue(f"{value!r}: a DT fraction needs all components before it")
    _check_ranges(value, parts, _RANGES)
    start = end = year
    for part, (first, last) in zip(parts, _DT_FILL, strict=True):
        start += part or first
        end += part or last
    if fraction:
        return start + fraction, end + fraction
    return start, end + ".999999"


def split_range(vr: TemporalVR, value: str) -> tuple[str, str] | None:
    """(lower, upper) of a range query such as 20200101-, -1030 or A-B; None if not a range.

    A DT with a negative UTC offset (…-0500) also contains a hyphen; it is a single value when
    the part after the hyphen is a plausible offset (-1400 to -0000).
    """
    if "-" not in value or (vr == "DT" and _has_utc_offset(value)):
        return None
    if value.count("-") != 1:
        raise InvalidValue(f"{value!r} is not a range (one hyphen)")
    lower, upper = value.split("-")
    if not lower and not upper:
        raise InvalidValue("a range needs at least one bound")
    return lower, upper


def _has_utc_offset(value: str) -> bool:
    match = _DATETIME.match(value)
    offset = match.group(8) if match else None
    return bool(offset) and int(offset[1:3]) <= 14 and int(offset[3:]) < 60


def _check_ranges(value: str, parts: list[str | None], ranges: list[tuple[int, int]]) -> None:
    for part, (low, high) in zip(parts, ranges, strict=True):
        if part is not None and not low <= int(part) <= high:
            raise InvalidValue(f"{value!r}: component {part} outside {low:02d}-{high:02d}")
