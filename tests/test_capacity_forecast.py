"""The capacity forecasting engine on generated series with known truth (SPEC §6 "Capacity", issue 14).

Every series is 90 days of hourly samples ending at ``AS_OF`` (mid-morning, so the last UTC day is partial,
as it is in production). The engine forecasts the *daily maximum*, so the truth each forecast is judged
against is the crossing of the noise-free daily maximum: the trend plus the expected maximum of a day's
periodic pattern and noise (``peak_offset``). Each forecast must also land within 15% of the crossing of the
bare trend; the parameters keep the peaks close enough to the trend for both to be meaningful.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pytest

from tasks.capacity.forecast import (
    Forecast,
    drift_check,
    forecast,
    forecast_check,
    growth_change_check,
    theil_sen,
)

AS_OF = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
DAYS = 90
#: sample times in days relative to AS_OF (<= 0), hourly
T = np.arange(-DAYS * 24 + 1, 1) / 24.0
SECONDS = AS_OF.timestamp() + T * 86400.0
#: days since the window's start: the trends below are written in it
SINCE = T + DAYS
HOUR_OF_DAY = ((SECONDS % 86400.0) / 3600.0).astype(int)
WEEKDAY = ((np.floor(SECONDS / 86400.0).astype(int) + 3) % 7).astype(int)  # 1970-01-01 was a Thursday (3)
TOLERANCE = 0.15


def peak_offset(pattern_by_hour: np.ndarray, sigma: float) -> float:
    """Expected max over a day's 24 hourly samples of ``pattern + N(0, sigma)``: how far the noise-free daily
    maximum sits above the trend (Monte Carlo, fixed seed)."""
    draws = np.random.default_rng(12345).standard_normal((20_000, 24))
    return float((pattern_by_hour + sigma * draws).max(axis=1).mean())


def crossing(threshold: float, level_at_as_of: float, slope: float) -> float:
    """Days from AS_OF until a line at ``level_at_as_of`` growing ``slope``/day reaches ``threshold``."""
    return (threshold - level_at_as_of) / slope


def assert_forecast_near(f: Forecast, truth: float, trend_truth: float) -> None:
    """Mid within 15% of both truths, the band ordered and containing the truth."""
    assert not f.insufficient
    mid, low, high = f.days_to_threshold, f.days_to_threshold_low, f.days_to_threshold_high
    assert mid is not None and low is not None, f
    assert abs(mid - truth) <= TOLERANCE * truth, (mid, truth)
    assert abs(mid - trend_truth) <= TOLERANCE * trend_truth, (mid, trend_truth)
    assert low <= mid <= (high if high is not None else np.inf)
    assert low <= truth <= (high if high is not None else np.inf), (low, truth, high)
    assert f.crossing_date == (AS_OF + timedelta(days=mid)).date()


def assert_ordered(f: Forecast) -> None:
    """low <= mid <= high with None as +inf."""
    inf = float("inf")
    low, mid, high = (
        inf if d is None else d for d in (f.days_to_threshold_low, f.days_to_threshold, f.days_to_threshold_high)
    )
    assert low <= mid <= high


# ---------------------------------------------------------------------------------------------- series


def linear_daily_cycle(seed: int) -> tuple[np.ndarray, float, float, float]:
    """Disk-like growth 0.5/day with a daily cycle (amplitude 1) and noise; threshold 125 (~80 days out).
    Returns (values, threshold, truth, trend_truth)."""
    rng = np.random.default_rng(seed)
    cycle = np.sin(2 * np.pi * HOUR_OF_DAY / 24.0)
    values = 40 + 0.5 * SINCE + cycle + rng.normal(0, 0.5, T.size)
    offset = peak_offset(np.sin(2 * np.pi * np.arange(24) / 24.0), 0.5)
    return values, 125.0, crossing(125.0, 85 + offset, 0.5), crossing(125.0, 85, 0.5)


def weekly_seasonal(seed: int) -> tuple[np.ndarray, float, float, float]:
    """Connections-like fraction: weekdays 0.02 above weekends, growing 0.002/day; threshold 0.8."""
    rng = np.random.default_rng(seed)
    values = 0.3 + 0.002 * SINCE + np.where(WEEKDAY < 5, 0.02, 0.0) + rng.normal(0, 0.005, T.size)
    offset = peak_offset(np.full(24, 0.02), 0.005)
    return values, 0.8, crossing(0.8, 0.48 + offset, 0.002), crossing(0.8, 0.48, 0.002)


def cleanup_step(seed: int) -> tuple[np.ndarray, float, float, float]:
    """Growth 0.5/day with a one-time cleanup of 25 units 30 days ago; threshold 100."""
    rng = np.random.default_rng(seed)
    values = 40 + 0.5 * SINCE - 25.0 * (T > -30) + rng.normal(0, 0.5, T.size)
    offset = peak_offset(np.zeros(24), 0.5)
    return values, 100.0, crossing(100.0, 60 + offset, 0.5), crossing(100.0, 60, 0.5)


def sawtooth(seed: int) -> tuple[np.ndarray, float, float, float]:
    """Retention: 3 units/day of logs removed weekly at 03:00 (the last cleanup 4 days before AS_OF) over a
    base growing 0.2/day; threshold 80. Returns (values, threshold, truth with cleanups, truth if they stop)."""
    rng = np.random.default_rng(seed)
    since_cleanup = (T + 4 + (9.5 - 3) / 24.0) % 7  # days since the last 03:00 cleanup
    values = 20 + 0.2 * SINCE + 3.0 * since_cleanup + rng.normal(0, 0.3, T.size)
    peak_at_as_of = 20 + 0.2 * DAYS + 3.0 * 7
    current = 20 + 0.2 * DAYS + 3.0 * since_cleanup[-1]
    return values, 80.0, crossing(80.0, peak_at_as_of, 0.2), crossing(80.0, current, 3.2)


# ---------------------------------------------------------------------------------------------- forecasts


@pytest.mark.parametrize("series", [linear_daily_cycle, weekly_seasonal, cleanup_step], ids=lambda s: s.__name__)
def test_growing_series_cross_near_the_truth(series) -> None:
    values, threshold, truth, trend_truth = series(seed=7)
    f = forecast("m", SECONDS, values, threshold=threshold, as_of=AS_OF)
    assert_forecast_near(f, truth, trend_truth)
    assert f.samples == T.size and len(f.daily) == 91  # a partial day at each end of the window
    assert f.band_coverage is not None and f.backtest_error_pct is not None
    assert not f.sawtooth and not f.growth_change


def test_cleanup_step_is_a_level_shift_and_the_fit_starts_after_it() -> None:
    values, threshold, _, _ = cleanup_step(seed=3)
    f = forecast("m", SECONDS, values, threshold=threshold, as_of=AS_OF)
    # the cleanup ran 29.96 days ago at 10:30: that day's max is still the old level, the next day is the first
    # at the new level
    assert f.last_shift == (AS_OF - timedelta(days=29.96)).date() + timedelta(days=1)
    assert f.history_days == 30
    assert f.slope_per_day == pytest.approx(0.5, rel=0.05)


def test_least_squares_would_have_failed_the_cleanup_step() -> None:
    """Why robustness matters: least squares over the window (Prometheus predict_linear) misses by far more."""
    values, threshold, truth, _ = cleanup_step(seed=3)
    f = forecast("m", SECONDS, values, threshold=threshold, as_of=AS_OF)
    x = np.array([(datetime.combine(d, datetime.min.time(), UTC) - AS_OF).total_seconds() / 86400 for d, _ in f.daily])
    y = np.array([v for _, v in f.daily])
    slope, intercept = np.polyfit(x, y, 1)
    least_squares = crossing(threshold, intercept, slope)
    assert abs(least_squares - truth) > 3 * TOLERANCE * truth
    assert f.days_to_threshold is not None and abs(f.days_to_threshold - truth) <= TOLERANCE * truth


def test_sawtooth_reports_both_runways() -> None:
    values, threshold, with_cleanups, if_stopped = sawtooth(seed=5)
    f = forecast("logs", SECONDS, values, threshold=threshold, as_of=AS_OF)
    assert f.sawtooth and f.cleanup_period_days == pytest.approx(7, abs=0.5)
    assert f.last_shift is None and not f.insufficient  # cleanups on a cadence are not level shifts
    assert_forecast_near(f, with_cleanups, with_cleanups)
    assert f.days_if_cleanups_stop is not None
    assert abs(f.days_if_cleanups_stop - if_stopped) <= TOLERANCE * if_stopped
    assert f.growth_between_cleanups_per_day == pytest.approx(3.2, rel=0.05)
    status, detail = forecast_check(f, warn_within_days=30, fail_within_days=7)
    assert status == "ok" and "if cleanups stop: " in detail


def test_flat_never_crosses() -> None:
    values = 50 + np.random.default_rng(1).normal(0, 1, T.size)
    f = forecast("m", SECONDS, values, threshold=100, as_of=AS_OF)
    assert f.days_to_threshold is None and f.crossing_date is None and f.days_to_threshold_high is None
    assert_ordered(f)
    assert forecast_check(f, 30, 7)[0] == "ok"


def test_shrinking_never_crosses() -> None:
    values = 80 - 0.2 * SINCE + np.random.default_rng(2).normal(0, 1, T.size)
    f = forecast("m", SECONDS, values, threshold=100, as_of=AS_OF)
    assert f.slope_per_day is not None and f.slope_per_day < 0
    assert f.days_to_threshold is None and f.days_to_threshold_low is None and f.days_to_threshold_high is None
    assert forecast_check(f, 30, 7) == ("ok", forecast_check(f, 30, 7)[1])


def test_already_crossed_is_zero_days_and_fails() -> None:
    values = 40 + 0.8 * SINCE + np.random.default_rng(3).normal(0, 1, T.size)
    f = forecast("m", SECONDS, values, threshold=100, as_of=AS_OF)
    assert (f.days_to_threshold, f.days_to_threshold_low, f.days_to_threshold_high) == (0.0, 0.0, 0.0)
    assert f.crossing_date == AS_OF.date()
    status, detail = forecast_check(f, 30, 7)
    assert status == "fail" and detail.startswith("already at or over the threshold")


def test_too_short_is_insufficient_with_null_forecasts() -> None:
    recent = T > -5
    values = 40 + 0.5 * SINCE + np.random.default_rng(4).normal(0, 0.5, T.size)
    f = forecast("m", SECONDS[recent], values[recent], threshold=100, as_of=AS_OF)
    assert f.insufficient and f.history_days < 7
    assert f.days_to_threshold is None and f.days_to_threshold_low is None and f.slope_per_day is None
    assert forecast_check(f, 30, 7) == (
        "warn",
        f"insufficient history: {f.history_days:.0f} days since the last level shift (7 needed)",
    )


def test_a_recent_level_shift_leaves_insufficient_history() -> None:
    values = 40 + 0.5 * SINCE + 30.0 * (T > -4) + np.random.default_rng(5).normal(0, 0.5, T.size)
    f = forecast("m", SECONDS, values, threshold=200, as_of=AS_OF)
    assert f.insufficient and f.last_shift == (AS_OF - timedelta(days=3.9)).date()
    assert forecast_check(f, 30, 7)[0] == "warn"


def test_a_single_spike_is_not_a_level_shift() -> None:
    values = 40 + 0.5 * SINCE + np.random.default_rng(6).normal(0, 0.5, T.size)
    values[(T > -20) & (T <= -19)] += 40.0
    f = forecast("m", SECONDS, values, threshold=125, as_of=AS_OF)
    assert f.last_shift is None and f.history_days >= 90
    assert f.slope_per_day == pytest.approx(0.5, rel=0.05)


def test_fast_grower_inside_fail_within_fails() -> None:
    values = 40 + 0.5 * SINCE + np.random.default_rng(8).normal(0, 0.1, T.size)
    truth = crossing(87.0, 85 + peak_offset(np.zeros(24), 0.1), 0.5)
    f = forecast("m", SECONDS, values, threshold=87.0, as_of=AS_OF)
    assert_forecast_near(f, truth, crossing(87.0, 85, 0.5))
    status, detail = forecast_check(f, warn_within_days=30, fail_within_days=7)
    assert status == "fail" and "reaches 87 around" in detail


def test_within_warn_but_not_fail_warns() -> None:
    values = 40 + 0.5 * SINCE + np.random.default_rng(9).normal(0, 0.1, T.size)
    f = forecast("m", SECONDS, values, threshold=95.0, as_of=AS_OF)  # ~20 days
    assert forecast_check(f, warn_within_days=30, fail_within_days=7)[0] == "warn"
    assert forecast_check(f, warn_within_days=10, fail_within_days=7)[0] == "ok"


# ---------------------------------------------------------------------------------------------- growth change, drift


def test_growth_change_fires_when_the_slope_doubles_in_the_last_two_weeks() -> None:
    values = 40 + 0.5 * SINCE + 0.5 * np.maximum(T + 14, 0) + np.random.default_rng(10).normal(0, 0.5, T.size)
    f = forecast("m", SECONDS, values, threshold=300, as_of=AS_OF)
    assert f.growth_change and f.recent_slope_per_day == pytest.approx(1.0, rel=0.15)
    status, detail = growth_change_check(f)
    assert status == "warn" and detail.startswith("growth changed: ")


@pytest.mark.parametrize("seed", range(5))
def test_growth_change_stays_quiet_on_a_steady_series(seed: int) -> None:
    values, threshold, _, _ = linear_daily_cycle(seed)
    f = forecast("m", SECONDS, values, threshold=threshold, as_of=AS_OF)
    assert not f.growth_change and growth_change_check(f)[0] == "ok"


def test_drift_warns_when_the_crossing_moves_earlier_by_more_than_a_quarter_of_warn_within() -> None:
    values, threshold, _, _ = linear_daily_cycle(seed=1)
    f = forecast("m", SECONDS, values, threshold=threshold, as_of=AS_OF)
    assert f.crossing_date is not None
    assert drift_check(f, None, 30) is None
    assert drift_check(dataclasses.replace(f, crossing_date=None), date(2027, 3, 1), 30) is None
    assert drift_check(f, f.crossing_date + timedelta(days=10), 30)[0] == "warn"  # type: ignore[index]
    assert drift_check(f, f.crossing_date + timedelta(days=5), 30)[0] == "ok"  # type: ignore[index]
    assert drift_check(f, f.crossing_date - timedelta(days=40), 30)[0] == "ok"  # type: ignore[index]


# ---------------------------------------------------------------------------------------------- engine details


def test_theil_sen_matches_scipy() -> None:
    from scipy.stats import theilslopes

    rng = np.random.default_rng(11)
    x = np.sort(rng.uniform(-90, 0, 60))
    y = 3 + 0.7 * x + rng.standard_t(2, 60)
    slope, intercept, low, high = theil_sen(x, y)
    reference = theilslopes(y, x, method="joint")  # intercept: median of y - slope * x
    assert (slope, intercept, low, high) == pytest.approx(
        (reference.slope, reference.intercept, reference.low_slope, reference.high_slope)
    )


def test_timestamps_as_datetimes_datetime64_or_epoch_seconds_agree() -> None:
    values, threshold, _, _ = linear_daily_cycle(seed=2)
    as_epoch = forecast("m", SECONDS, values, threshold=threshold, as_of=AS_OF)
    as_datetimes = forecast(
        "m", [datetime.fromtimestamp(s, UTC) for s in SECONDS], list(values), threshold=threshold, as_of=AS_OF
    )
    as_datetime64 = forecast(
        "m", (SECONDS * 1e6).astype("int64").astype("datetime64[us]"), values, threshold=threshold, as_of=AS_OF
    )
    assert as_epoch == as_datetimes == as_datetime64
    with pytest.raises(ValueError, match="timezone-aware"):
        forecast("m", [datetime(2026, 11, 30)], [1.0], threshold=2, as_of=AS_OF)


def test_only_the_window_counts_and_unsorted_input_is_fine() -> None:
    values, threshold, _, _ = linear_daily_cycle(seed=2)
    base = forecast("m", SECONDS, values, threshold=threshold, as_of=AS_OF)
    older = AS_OF.timestamp() - np.arange(91, 200) * 86400.0  # before the window: ignored
    later = AS_OF.timestamp() + np.arange(1, 5) * 3600.0  # after as_of: ignored
    order = np.random.default_rng(0).permutation(T.size + older.size + later.size)
    seconds = np.r_[SECONDS, older, later][order]
    noisy = np.r_[values, np.full(older.size, 1e6), np.full(later.size, -1e6)][order]
    assert forecast("m", seconds, noisy, threshold=threshold, as_of=AS_OF) == base


def test_no_samples_is_insufficient() -> None:
    f = forecast("m", [], [], threshold=1.0, as_of=AS_OF)
    assert f.insufficient and f.current is None and f.samples == 0 and f.daily == ()
    assert forecast_check(f, 30, 7)[0] == "warn"
