"""Unit parsers and formatters of opsflow.units: examples, errors and round trips."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from opsflow.units import (
    SIZE_UNITS,
    format_duration,
    format_local_time,
    format_size,
    parse_duration,
    parse_percent,
    parse_size,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90.0),
        ("15m", 900.0),
        ("6h", 21600.0),
        ("26h", 93600.0),
        ("30d", 2592000.0),
        ("1w", 604800.0),
        ("500ms", 0.5),
        ("1.5h", 5400.0),
        ("1h30m", 5400.0),
        ("1h 30m", 5400.0),
        ("1d12h", 129600.0),
        ("1m30.5s", 90.5),
        (" 2s ", 2.0),
        ("45", 45.0),
        ("0.25", 0.25),
        ("0s", 0.0),
        (45, 45.0),
        (2.5, 2.5),
    ],
)
def test_parse_duration(text: str | int | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text",
    ["6 hours", "", "   ", "h", "-5s", "5x", "1M", "30m1h", "1h1h", "5 s s", "1e3s", "nan"],
)
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=r"^expected a duration like 90s, 15m, 6h or 30d"):
        parse_duration(text)


def test_parse_duration_message_quotes_input() -> None:
    with pytest.raises(ValueError, match="6 hours") as excinfo:
        parse_duration("6 hours")
    assert str(excinfo.value) == "expected a duration like 90s, 15m, 6h or 30d, got '6 hours'"


@pytest.mark.parametrize("value", [True, None, -1, float("inf"), [1]])
def test_parse_duration_rejects_non_strings(value: object) -> None:
    with pytest.raises(ValueError, match=r"^expected a duration"):
        parse_duration(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "num_bytes"),
    [
        ("512KB", 512_000),
        ("1.5GB", 1_500_000_000),
        ("2TB", 2 * 10**12),
        ("1MB", 1_000_000),
        ("1PB", 10**15),
        ("1kB", 1000),
        ("100B", 100),
        ("1KiB", 1024),
        ("1.5MiB", 1_572_864),
        ("1GiB", 1024**3),
        ("1TiB", 1024**4),
        ("1 GB", 10**9),
        ("4096", 4096),
        ("0", 0),
        (0, 0),
        (1024, 1024),
        ("1.1GB", 1_100_000_000),  # exact decimal arithmetic, no float noise
    ],
)
def test_parse_size(text: str | int, num_bytes: int) -> None:
    assert parse_size(text) == num_bytes


@pytest.mark.parametrize("text", ["lots", "", "GB", "-1GB", "1.5XB", "1 G B", "1e3"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=r"^expected a size like 512KB, 1\.5GB or 2TB, got "):
        parse_size(text)


def test_parse_size_units_are_case_sensitive() -> None:
    with pytest.raises(ValueError, match="case-sensitive") as excinfo:
        parse_size("1.5gb")
    assert str(excinfo.value) == (
        "expected a size like 512KB, 1.5GB or 2TB, got '1.5gb' (units are case-sensitive: did you mean GB?)"
    )


@pytest.mark.parametrize(
    ("text", "percent"),
    [("80%", 80.0), ("99.9%", 99.9), ("0%", 0.0), ("100%", 100.0), (" 50 % ", 50.0), (".5%", 0.5)],
)
def test_parse_percent(text: str, percent: float) -> None:
    assert parse_percent(text) == percent


def test_parse_percent_out_of_range() -> None:
    with pytest.raises(ValueError, match="between 0% and 100%") as excinfo:
        parse_percent("120%")
    assert str(excinfo.value) == "expected a percentage between 0% and 100%, got '120%'"


@pytest.mark.parametrize("text", ["80", "0.8", "-5%", "%", "eighty%", ""])
def test_parse_percent_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=r"^expected a percentage like 80% or 99\.9%, got "):
        parse_percent(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (111600, "31h"),
        (93600, "26h"),
        (5400, "1h30m"),
        (0.25, "250ms"),
        (0.0005, "0.5ms"),
        (0, "0s"),
        (1, "1s"),
        (90, "1m30s"),
        (90.5, "1m30.5s"),
        (3605, "1h5s"),
        (86400, "1d"),
        (2592000, "30d"),
        (59.9996, "1m"),  # rounds to the millisecond without producing "60s"
        (-90, "-1m30s"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_format_duration_rejects_non_finite() -> None:
    with pytest.raises(ValueError, match="non-finite"):
        format_duration(math.inf)


@pytest.mark.parametrize(
    ("num_bytes", "text"),
    [
        (0, "0B"),
        (999, "999B"),
        (1500, "1.5KB"),
        (1_000_000, "1MB"),
        (1_500_000_000, "1.5GB"),
        (2 * 10**12, "2TB"),
        (123_456_789, "123.46MB"),
    ],
)
def test_format_size(num_bytes: int, text: str) -> None:
    assert format_size(num_bytes) == text


@pytest.mark.parametrize(
    ("moment", "zone", "text"),
    [
        (datetime(2026, 12, 5, 12, 58, 22, 681555, tzinfo=UTC), "Europe/Berlin", "2026-12-05 13:58:22 CET"),
        (datetime(2026, 7, 5, 12, 58, 22, 999999, tzinfo=UTC), "Europe/Berlin", "2026-07-05 14:58:22 CEST"),
        (datetime(2026, 12, 5, 12, 58, 22, tzinfo=UTC), "UTC", "2026-12-05 12:58:22 UTC"),
        # The day changes with the zone; an offset-carrying input is the same instant.
        (datetime(2026, 12, 5, 23, 30, tzinfo=timezone(timedelta(hours=-5))), "Asia/Tokyo", "2026-12-06 13:30:00 JST"),
        # Both 02:30 of the autumn change read apart by their abbreviation.
        (datetime(2026, 10, 25, 0, 30, tzinfo=UTC), "Europe/Berlin", "2026-10-25 02:30:00 CEST"),
        (datetime(2026, 10, 25, 1, 30, tzinfo=UTC), "Europe/Berlin", "2026-10-25 02:30:00 CET"),
    ],
)
def test_format_local_time(moment: datetime, zone: str, text: str) -> None:
    assert format_local_time(moment, ZoneInfo(zone)) == text


def test_format_local_time_without_a_zone_abbreviation_shows_the_offset() -> None:
    zone = timezone(timedelta(hours=5, minutes=30), name="")
    assert format_local_time(datetime(2026, 12, 5, 12, 0, tzinfo=UTC), zone) == "2026-12-05 17:30:00 UTC+05:30"


def test_format_local_time_refuses_a_naive_time() -> None:
    with pytest.raises(ValueError, match="naive"):
        format_local_time(datetime(2026, 12, 5, 12, 0), UTC)


# ------------------------------------------------------------------ properties


@given(st.integers(min_value=0, max_value=10**10))
def test_format_then_parse_duration_whole_seconds(seconds: int) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


@given(st.integers(min_value=1, max_value=10**9))
def test_format_then_parse_duration_milliseconds(millis: int) -> None:
    seconds = millis / 1000
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds, abs=1e-9)


@given(st.integers(min_value=0, max_value=10**6), st.sampled_from(["ms", "s", "m", "h", "d", "w"]))
def test_parse_duration_scales_by_unit(amount: int, unit: str) -> None:
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[unit]
    assert parse_duration(f"{amount}{unit}") == pytest.approx(amount * scale)


@given(
    st.integers(min_value=0, max_value=1000),
    st.integers(min_value=0, max_value=59),
    st.integers(min_value=0, max_value=59),
)
def test_compound_duration_is_the_sum(hours: int, minutes: int, seconds: int) -> None:
    assert parse_duration(f"{hours}h{minutes}m{seconds}s") == hours * 3600 + minutes * 60 + seconds


@given(st.integers(min_value=0, max_value=10**6), st.sampled_from(sorted(SIZE_UNITS)))
def test_parse_size_scales_by_unit(amount: int, unit: str) -> None:
    assert parse_size(f"{amount}{unit}") == amount * SIZE_UNITS[unit]


@given(st.integers(min_value=0, max_value=10**18))
def test_format_then_parse_size_is_close(num_bytes: int) -> None:
    # format_size keeps two decimals, so the round trip is exact to 0.5%.
    assert parse_size(format_size(num_bytes)) == pytest.approx(num_bytes, rel=5e-3, abs=0.5)


@given(st.decimals(min_value=0, max_value=100, places=3, allow_nan=False, allow_infinity=False))
def test_parse_percent_accepts_every_value_in_range(value: object) -> None:
    assert parse_percent(f"{value}%") == pytest.approx(float(str(value)))


@given(st.floats(min_value=100.001, max_value=1e6, allow_nan=False, allow_infinity=False))
def test_parse_percent_refuses_above_100(value: float) -> None:
    with pytest.raises(ValueError, match="between 0% and 100%"):
        parse_percent(f"{value:.3f}%")
