"""Parsers and formatters for the units used in ``opsflow.yaml``.

Pure functions, no I/O, no third-party imports. Every parser raises
``ValueError`` with a short message meant for the user, naming the accepted
forms and quoting what it got::

    >>> parse_duration("26h")
    93600.0
    >>> parse_duration("1h30m")
    5400.0
    >>> parse_size("1.5GB")
    1500000000
    >>> parse_size("512KiB")
    524288
    >>> parse_percent("99.9%")
    99.9
    >>> format_duration(111600)
    '31h'
    >>> format_duration(0.25)
    '250ms'
    >>> parse_duration("6 hours")
    Traceback (most recent call last):
    ...
    ValueError: expected a duration like 90s, 15m, 6h or 30d, got '6 hours'

Durations: ``ms``, ``s``, ``m``, ``h``, ``d``, ``w`` (lower case, so ``m`` is
never mistaken for months), optionally combined largest unit first
(``1h30m``, ``1d 12h``); a bare number is seconds. Sizes: ``B``, ``KB``
(also ``kB``), ``MB``, ``GB``, ``TB``, ``PB`` are powers of 1000; ``KiB``,
``MiB``, ``GiB``, ``TiB``, ``PiB`` powers of 1024; a bare number is bytes.
Units are case-sensitive as written (``Mb`` would be megabits, so guessing is
worse than refusing). Percentages need the ``%`` sign and lie in 0..100.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, tzinfo
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

__all__ = [
    "DURATION_UNITS",
    "SIZE_UNITS",
    "format_duration",
    "format_local_time",
    "format_size",
    "parse_duration",
    "parse_percent",
    "parse_size",
]

#: Seconds per duration unit, largest first (the order compound forms must use).
DURATION_UNITS: dict[str, int] = {
    "w": 7 * 86400,
    "d": 86400,
    "h": 3600,
    "m": 60,
    "s": 1,
}
_MILLISECOND_UNIT = "ms"

#: Bytes per size unit.
SIZE_UNITS: dict[str, int] = {
    "B": 1,
    "KB": 1000,
    "kB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "TB": 1000**4,
    "PB": 1000**5,
    "KiB": 1024,
    "MiB": 1024**2,
    "GiB": 1024**3,
    "TiB": 1024**4,
    "PiB": 1024**5,
}

_NUMBER = r"(?:\d+(?:\.\d+)?|\.\d+)"
_BARE_NUMBER_RE = re.compile(rf"\s*({_NUMBER})\s*")
# One duration component: a number, optional blanks, a unit; "ms" before "m"
# so that "500ms" is not read as 500 minutes followed by junk.
_DURATION_PART_RE = re.compile(rf"\s*({_NUMBER})\s*(ms|[wdhms])(?![A-Za-z])\s*")
_SIZE_RE = re.compile(rf"\s*({_NUMBER})\s*([A-Za-z]+)?\s*")
_PERCENT_RE = re.compile(rf"\s*({_NUMBER})\s*%\s*")

_DURATION_HINT = "expected a duration like 90s, 15m, 6h or 30d"
_SIZE_HINT = "expected a size like 512KB, 1.5GB or 2TB"
_PERCENT_HINT = "expected a percentage like 80% or 99.9%"


def _quote(value: object) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _plain_number(value: object) -> Decimal | None:
    """A non-negative finite int/float (never bool) as Decimal, else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value < 0:
        return None
    # str() first: Decimal(0.1) would carry the binary float's noise.
    return Decimal(str(value))


def parse_duration(text: str | int | float) -> float:
    """Parse a duration into seconds.

    ``"90s"`` -> 90.0, ``"15m"`` -> 900.0, ``"500ms"`` -> 0.5, ``"1w"`` ->
    604800.0, ``"1h30m"`` -> 5400.0, ``"45"`` (or ``45``) -> 45.0.
    """
    number = _plain_number(text)
    if number is not None:
        return float(number)
    if not isinstance(text, str):
        raise ValueError(f"{_DURATION_HINT}, got {_quote(text)}")
    bare = _BARE_NUMBER_RE.fullmatch(text)
    if bare:
        return float(Decimal(bare.group(1)))

    total = Decimal(0)
    position = 0
    previous_rank = -1
    ranks = [*DURATION_UNITS, _MILLISECOND_UNIT]
    while position < len(text):
        part = _DURATION_PART_RE.match(text, position)
        if part is None:
            raise ValueError(f"{_DURATION_HINT}, got {_quote(text)}")
        amount, unit = Decimal(part.group(1)), part.group(2)
        rank = ranks.index(unit)
        if rank <= previous_rank:
            # "30m1h" or "1h1h": almost certainly a typo, not a sum.
            raise ValueError(f"{_DURATION_HINT} (combined units largest first, e.g. 1h30m), got {_quote(text)}")
        previous_rank = rank
        per_unit = Decimal("0.001") if unit == _MILLISECOND_UNIT else DURATION_UNITS[unit]
        total += amount * per_unit
        position = part.end()
    if previous_rank < 0:  # empty or blank string
        raise ValueError(f"{_DURATION_HINT}, got {_quote(text)}")
    return float(total)


def parse_size(text: str | int | float) -> int:
    """Parse a size into bytes (rounded to a whole byte).

    ``"512KB"`` -> 512000, ``"1.5GB"`` -> 1500000000, ``"1GiB"`` ->
    1073741824, ``"4096"`` (or ``4096``) -> 4096.
    """
    number = _plain_number(text)
    if number is None:
        if not isinstance(text, str):
            raise ValueError(f"{_SIZE_HINT}, got {_quote(text)}")
        match = _SIZE_RE.fullmatch(text)
        if match is None:
            raise ValueError(f"{_SIZE_HINT}, got {_quote(text)}")
        unit = match.group(2) or "B"
        if unit not in SIZE_UNITS:
            raise ValueError(f"{_SIZE_HINT}, got {_quote(text)}{_unit_case_hint(unit)}")
        number = Decimal(match.group(1)) * SIZE_UNITS[unit]
    return int(number.to_integral_value(rounding=ROUND_HALF_UP))


def _unit_case_hint(unit: str) -> str:
    for known in SIZE_UNITS:
        if known.lower() == unit.lower():
            return f" (units are case-sensitive: did you mean {known}?)"
    return ""


def parse_percent(text: str) -> float:
    """Parse a percentage written with a ``%`` sign: ``"80%"`` -> 80.0.

    The value must lie in 0..100 inclusive. A bare number is refused: ``0.999``
    and ``99.9`` would both be plausible readings of an availability target.
    """
    if not isinstance(text, str):
        raise ValueError(f"{_PERCENT_HINT}, got {_quote(text)}")
    match = _PERCENT_RE.fullmatch(text)
    if match is None:
        raise ValueError(f"{_PERCENT_HINT}, got {_quote(text)}")
    try:
        value = Decimal(match.group(1))
    except InvalidOperation:  # pragma: no cover - the regex admits only numbers
        raise ValueError(f"{_PERCENT_HINT}, got {_quote(text)}") from None
    if value > 100:
        raise ValueError(f"expected a percentage between 0% and 100%, got {_quote(text)}")
    return float(value)


def _trim(number: float, decimals: int) -> str:
    """``1.500`` -> ``"1.5"``, ``2.000`` -> ``"2"``."""
    text = f"{number:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def format_duration(seconds: float) -> str:
    """A short human form of a duration, for check details.

    Whole days print as days (``"30d"``); anything else as hours, minutes and
    seconds with zero parts left out, because "newest backup is 31h old, limit
    26h" compares at a glance where "1d7h" does not. Below one second,
    milliseconds. Millisecond precision; ``parse_duration`` reads every output.

    >>> [format_duration(s) for s in (111600, 93600, 5400, 2592000, 90.5, 0.25, 0)]
    ['31h', '26h', '1h30m', '30d', '1m30.5s', '250ms', '0s']
    """
    if not math.isfinite(seconds):
        raise ValueError(f"cannot format a non-finite duration: {seconds}")
    if seconds < 0:
        return "-" + format_duration(-seconds)
    if seconds == 0:
        return "0s"
    if seconds < 1:
        return _trim(seconds * 1000, 3) + "ms"
    # Integer milliseconds from here, so rounding cannot produce "60s".
    total_ms = round(seconds * 1000)
    day_ms = 86400 * 1000
    if total_ms % day_ms == 0:
        return f"{total_ms // day_ms}d"
    whole_seconds, millis = divmod(total_ms, 1000)
    hours, rest = divmod(whole_seconds, 3600)
    minutes, secs = divmod(rest, 60)
    parts: list[str] = []
    if hours:
        parts.append(f"{hours}h")
    if minutes:
        parts.append(f"{minutes}m")
    if millis:
        parts.append(f"{secs}.{millis:03d}".rstrip("0") + "s")
    elif secs:
        parts.append(f"{secs}s")
    return "".join(parts)


def format_size(num_bytes: int | float) -> str:
    """A short human form of a byte count in powers of 1000, for check details.

    >>> [format_size(n) for n in (0, 999, 1500, 1_500_000_000, 2 * 10**12)]
    ['0B', '999B', '1.5KB', '1.5GB', '2TB']
    """
    if not math.isfinite(num_bytes):
        raise ValueError(f"cannot format a non-finite size: {num_bytes}")
    if num_bytes < 0:
        return "-" + format_size(-num_bytes)
    for unit in ("PB", "TB", "GB", "MB", "KB"):
        scale = SIZE_UNITS[unit]
        if num_bytes >= scale:
            return _trim(num_bytes / scale, 2) + unit
    return f"{_trim(num_bytes, 2)}B"


def format_quantity(value: float, unit: str) -> str:
    """A metric's value in its threshold's unit (``bytes``, ``percent``, ``number``), for check details.

    >>> [format_quantity(v, u) for v, u in ((1.5e9, "bytes"), (81.234, "percent"), (0.8, "number"), (5000.0, "number"))]
    ['1.5GB', '81.2%', '0.8', '5000']
    """
    if unit == "bytes":
        return format_size(value)
    if unit == "percent":
        return f"{_trim(value, 1)}%"
    return f"{value:.4g}" if abs(value) < 1e6 else f"{value:.6g}"


def format_local_time(moment: datetime, zone: tzinfo) -> str:
    """An instant for people to read, in ``zone`` (the config's timezone) to the second, with the zone's
    abbreviation, for check details: ``2026-12-05 13:58:22 CET``. Fractions of a second are dropped.

    >>> from datetime import UTC
    >>> format_local_time(datetime(2026, 12, 5, 12, 58, 22, 681555, tzinfo=UTC), UTC)
    '2026-12-05 12:58:22 UTC'
    """
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"cannot place a naive time in a timezone: {moment.isoformat()}")
    local = moment.astimezone(zone).replace(microsecond=0)
    name = local.tzname()
    if not name:
        offset = local.strftime("%z")
        name = f"UTC{offset[:3]}:{offset[3:]}"
    return f"{local:%Y-%m-%d %H:%M:%S} {name}"
