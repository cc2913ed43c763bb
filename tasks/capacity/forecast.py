"""The capacity forecasting engine: when does each metric reach its threshold (SPEC §6 "Capacity").

Pure: numpy only, no I/O, no Prefect, nothing computed at import time. The steps, per metric:

1. **Window and daily max.** Samples in ``(as_of - window, as_of]`` only; one value per UTC day, the
   day's maximum (capacity is about peaks), placed at the time of the sample that attained it. The fit
   uses whole days only: the window's partial first and last days (today, until as_of) are left out of
   the fit, as their max misses part of the daily cycle; today's max is still ``current``.
2. **Level shifts** on the first differences of the daily series: a difference is a candidate when
   it leaves the robust band ``|diff - median| > 6 * 1.4826 * MAD`` (after taking the typical daily
   growth out). A candidate undone within a week by a jump of the opposite sign and similar size
   is an excursion (a spike, a weekend dip), not a shift; a shift must also keep the level moved
   (median of the next days vs the previous ones, detrended, at least 3 days after it).
3. **Sawtooth.** Three or more downward shifts with similar spacing, the last one recent, are
   cleanups on a cadence (retention, log rotation): they are not "level shifts" for the fit.
   "Runway with cleanups" is the trend of the peaks (the maximum before each cleanup); "runway if
   cleanups stop" extends the growth rate between cleanups from the current value.
4. **Theil–Sen** (median of pairwise slopes, own vectorised implementation with Sen's rank
   confidence interval) on the daily series after the last shift — or on the peaks for a sawtooth.
   Fewer than 7 days after the last shift: ``insufficient``, no forecast.
5. **Band** calibrated by rolling-origin backtests on the metric's own history: at several origins
   the fit on the points so far predicts every later point; each prediction error beyond the day
   to day noise says how many times the slope interval it needed. The 85th percentile of those
   factors (at least 1) widens the slope interval; ``band_coverage`` is measured on the last third
   of the origins with the factor calibrated on the first two thirds (out of sample). The band's
   edges also allow the day-to-day noise of the level. Too little history: the 95% Theil–Sen
   interval alone. ``low <= mid <= high`` always holds, ``None`` (beyond a year) ordering as +inf.

A metric whose latest daily value is already at/over its threshold has crossed: all days 0 (even with
insufficient history — a full disk is not "insufficient history"), and ``forecast_check`` fails it.

Timestamps: a sequence of aware ``datetime`` (converted one by one, slower), or — fastest — a numpy
array of ``datetime64`` (UTC, as numpy has no zones) or of epoch seconds (float or int).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import numpy as np

DAY_SECONDS = 86400.0
HORIZON_DAYS = 365.0  # a crossing further out than this is reported as None ("does not cross")
MIN_HISTORY_DAYS = 7  # SPEC §6: fewer days after the last level shift -> insufficient
SHIFT_K = 6.0  # robust z of a first difference to be a level-shift candidate
PERSIST_DAYS = 7  # days compared before/after a candidate to confirm the level stayed moved
MIN_AFTER_DAYS = 3  # a candidate younger than this cannot be confirmed yet
RECENT_DAYS = 14  # growth_change: the recent slope's window
BAND_QUANTILE = 0.85  # target coverage of the calibrated band in the backtests
MAX_BAND_FACTOR = 50.0  # a cap so one wild backtest cannot make the band meaningless
MAX_ORIGINS = 12  # backtest origins per metric (cost is one partition of the prefix's slopes each)
Z95 = 1.959963984540054  # normal quantile for the 95% Theil–Sen interval (no scipy import needed)
Z85 = 1.4395314709384563  # two-sided 85% normal quantile: the level noise allowed at the band's edges
MAD_TO_SIGMA = 1.4826
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


@dataclass(frozen=True)
class Forecast:
    """One metric's forecast. Days count from ``as_of``; ``None`` days mean "not within a year"."""

    metric: str
    threshold: float
    current: float | None  # latest daily value (max of the last day)
    samples: int  # raw samples in the window
    slope_per_day: float | None  # Theil–Sen slope after the last level shift (peaks' slope for a sawtooth)
    days_to_threshold: float | None  # mid; 0 when already at/over; None when flat/shrinking/beyond a year
    days_to_threshold_low: float | None  # earliest plausible crossing (pessimistic edge), <= mid
    days_to_threshold_high: float | None  # latest plausible crossing; None when the slow edge never crosses
    crossing_date: date | None  # (as_of + days_to_threshold).date(), in as_of's zone
    insufficient: bool  # fewer than 7 days of history after the last level shift
    history_days: float  # days of daily history after the last shift (calendar days, inclusive)
    last_shift: date | None  # first day at the new level of the last shift (cadence cleanups excluded)
    band_coverage: float | None  # out-of-sample share of backtests inside the calibrated band
    backtest_error_pct: float | None  # median |error| of the backtests' projections, % of the value
    growth_change: bool  # the recent slope's interval lies outside the long-term slope's interval
    recent_slope_per_day: float | None  # Theil–Sen over the last 14 days
    slope_interval: tuple[float, float] | None  # long-term slope's 95% interval
    sawtooth: bool  # cleaned up on a cadence (recurring drops)
    days_if_cleanups_stop: float | None  # runway from the current value at the between-cleanup growth rate
    fit: tuple[float, float] | None  # (level at as_of, slope per day) of the mid line, for charts
    daily: tuple[tuple[date, float], ...]  # every day of the window incl. the partial ones (for charts)
    # Additions beyond the agreed interface:
    cleanup_period_days: float | None = None  # median spacing of the cadence cleanups (sawtooth only)
    growth_between_cleanups_per_day: float | None = None  # pooled Theil–Sen slope within cleanup cycles
    band_slopes: tuple[float, float] | None = None  # (slow, fast) slopes of the band's edges
    band_factor: float | None = None  # how many times the slope interval the backtests asked for (>= 1)


@dataclass(frozen=True)
class _Daily:
    """The window's daily maxima: UTC day numbers, x in days relative to as_of (<= 0), values."""

    day: np.ndarray
    x: np.ndarray
    y: np.ndarray


@dataclass(frozen=True)
class _Line:
    """A fitted line: level at as_of, slope, its 95% interval, the backtests' band factor and results, and the
    level's day-to-day noise (85% two-sided) that the band's edges allow."""

    level: float
    slope: float
    interval: tuple[float, float]
    factor: float
    coverage: float | None
    error_pct: float | None
    noise: float


# ---------------------------------------------------------------------------------------------- input


def _epoch_seconds(ts: Sequence[datetime] | np.ndarray) -> np.ndarray:
    """Epoch seconds (float64) of ``ts``; raises ValueError on naive datetimes (their zone is unknown)."""
    if isinstance(ts, np.ndarray) and ts.dtype != object:
        if np.issubdtype(ts.dtype, np.datetime64):
            return ts.astype("datetime64[us]").astype(np.int64) / 1e6
        return ts.astype(np.float64, copy=False)
    if any(t.utcoffset() is None for t in ts):
        raise ValueError("timestamps must be timezone-aware datetimes (or datetime64/epoch seconds)")
    return np.fromiter((t.timestamp() for t in ts), dtype=np.float64, count=len(ts))


def _daily_max(seconds: np.ndarray, values: np.ndarray, as_of: float) -> _Daily:
    """Max per UTC day, at the time of the (latest) sample that attained it. ``seconds`` sorted."""
    day = np.floor(seconds / DAY_SECONDS).astype(np.int64)
    starts = np.flatnonzero(np.r_[True, day[1:] != day[:-1]])
    peak = np.maximum.reduceat(values, starts)
    counts = np.diff(np.r_[starts, len(values)])
    # the index of the last sample equal to its day's max, without a Python loop over days
    hit = np.where(values == np.repeat(peak, counts), np.arange(len(values)), -1)
    at = np.maximum.reduceat(hit, starts)
    return _Daily(day=day[starts], x=(seconds[at] - as_of) / DAY_SECONDS, y=peak)


# ---------------------------------------------------------------------------------------------- Theil–Sen


def _median(a: np.ndarray) -> float:
    """Median of a non-empty 1-d array: np.partition directly (np.median's overhead dominates at n < 5000)."""
    n = len(a)
    k = n // 2
    if n % 2:
        return float(np.partition(a, k)[k])
    part = np.partition(a, (k - 1, k))
    return float(part[k - 1] + part[k]) / 2.0


@functools.lru_cache(maxsize=256)
def _pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Pair indices (j, i), i < j, ordered by j: the pairs of the first k points are a prefix."""
    later, earlier = np.tril_indices(n, -1)
    return later, earlier


def _pair_slopes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """All pairwise slopes, ordered so that ``slopes[: k * (k - 1) // 2]`` are those of the first k points."""
    later, earlier = _pairs(len(x))
    return (y[later] - y[earlier]) / (x[later] - x[earlier])


def _slope_stats(slopes: np.ndarray, n: int, z: float = Z95) -> tuple[float, float, float]:
    """(median, low, high) of ``n`` points' pairwise slopes: Sen's rank interval, as scipy.stats.theilslopes."""
    m = len(slopes)
    sigma = math.sqrt(n * (n - 1) * (2 * n + 5) / 18.0)
    high = min(round((m + z * sigma) / 2.0), m - 1)
    low = max(round((m - z * sigma) / 2.0) - 1, 0)
    mid_low, mid_high = (m - 1) // 2, m // 2
    part = np.partition(slopes, sorted({low, mid_low, mid_high, high}))
    return float(part[mid_low] + part[mid_high]) / 2.0, float(part[low]), float(part[high])


def theil_sen(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float]:
    """(slope, intercept at x=0, slope low, slope high) — the 95% interval; x distinct, len >= 2."""
    slope, low, high = _slope_stats(_pair_slopes(x, y), len(x))
    return slope, _median(y - slope * x), low, high


# ---------------------------------------------------------------------------------------------- level shifts


def _excursions(candidates: np.ndarray, jumps: np.ndarray, day: np.ndarray) -> np.ndarray:
    """Drop candidates undone within a week by an opposite jump of similar size (spikes, weekend dips).

    The undoing jump need not be a candidate itself (a weekend dip's Monday rise may fall just short of the
    threshold); it must be of opposite sign and between half and twice the size.
    """
    keep = np.ones(len(candidates), dtype=bool)
    undone: set[int] = set()
    for a, i in enumerate(candidates.tolist()):
        if i in undone:
            keep[a] = False
            continue
        later = np.flatnonzero((day[1:] > day[i + 1]) & (day[1:] <= day[i + 1] + PERSIST_DAYS - 1))
        size = np.abs(jumps[later])
        match = later[(jumps[later] * jumps[i] < 0) & (size >= 0.5 * abs(jumps[i])) & (size <= 2.0 * abs(jumps[i]))]
        if match.size:
            keep[a] = False
            undone.add(int(match[0]))
    return candidates[keep]


def _runs(candidates: np.ndarray, jumps: np.ndarray) -> list[tuple[int, int]]:
    """Candidates on consecutive days with the same sign, as (first, last) runs: one event spread over two
    days (a cleanup at 03:00 leaves the old peak in that day's max, so the drop shows on two differences)."""
    runs: list[tuple[int, int]] = []
    for i in candidates.tolist():
        if runs and i == runs[-1][1] + 1 and jumps[i] * jumps[runs[-1][1]] > 0:
            runs[-1] = (runs[-1][0], i)
        else:
            runs.append((i, i))
    return runs


def _level_shifts(day: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Confirmed level shifts: (index of the first day at the new level, signed size), in time order."""
    none = (np.empty(0, dtype=np.int64), np.empty(0))
    if len(y) < 4:
        return none
    dx = np.diff(day).astype(np.float64)
    rate = _median(np.diff(y) / dx)  # the typical daily growth, so growth over gaps is no jump
    jumps = np.diff(y) - rate * dx
    jumps = jumps - _median(jumps)
    # the floor keeps a noise-free series (MAD 0) from calling rounding errors shifts
    scale = max(MAD_TO_SIGMA * _median(np.abs(jumps)), 1e-9 * float(np.max(np.abs(y))), 1e-12)
    candidates = _excursions(np.flatnonzero(np.abs(jumps) > SHIFT_K * scale), jumps, day)
    level = y - rate * (day - day[0])
    found = []
    for first, last in _runs(candidates, jumps):
        jump = float(jumps[first : last + 1].sum())
        after = (day > day[last]) & (day <= day[last + 1] + PERSIST_DAYS - 1)
        if np.count_nonzero(after) < MIN_AFTER_DAYS:
            continue  # too young to tell a shift from a spike: Theil–Sen shrugs it off meanwhile
        before = (day <= day[first]) & (day > day[first] - PERSIST_DAYS)
        moved = _median(level[after]) - _median(level[before])
        if moved * jump > 0 and abs(moved) >= 0.5 * abs(jump):
            found.append((last + 1, moved))
    if not found:
        return none
    index, size = zip(*found, strict=True)
    return np.array(index, dtype=np.int64), np.array(size)


def _cadence(day: np.ndarray, shifts: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, float] | None:
    """The downward shifts that recur on a cadence (>= 3, spacing within 25%, the last one recent), and the
    period in days; None when the drops are not a sawtooth."""
    drops = shifts[sizes < 0]
    if len(drops) < 3:
        return None
    gaps = np.diff(day[drops]).astype(np.float64)
    period = _median(gaps)
    if period < 2 or np.any(np.abs(gaps - period) > max(1.0, 0.25 * period)):
        return None
    if day[-1] - day[drops[-1]] > 1.5 * period + 1:
        return None  # cleanups stopped: the drops are history, the last one a plain level shift
    return drops, period


# ---------------------------------------------------------------------------------------------- band


def _backtest_factors(x: np.ndarray, y: np.ndarray, slopes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Fit the first k points, predict every later one: (interval factor each error needed, |error| / |value|)."""
    s, low, high = _slope_stats(slopes[: k * (k - 1) // 2], k)
    residuals = y[:k] - s * x[:k]
    level = _median(residuals)
    noise = Z85 * MAD_TO_SIGMA * _median(np.abs(residuals - level))
    error = y[k:] - (level + s * x[k:])
    horizon = x[k:] - x[k - 1]
    width = np.where(error > 0, high - s, s - low) * horizon
    excess = np.maximum(np.abs(error) - noise, 0.0)  # what the day-to-day noise does not explain
    factor = np.where(excess > 0, excess / np.maximum(width, 1e-12 * (abs(s) + 1.0)), 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = np.abs(error) / np.abs(y[k:])
    return factor, relative[np.isfinite(relative)]


def _calibrate(
    x: np.ndarray, y: np.ndarray, slopes: np.ndarray, min_fit: int
) -> tuple[float, float | None, float | None]:
    """Rolling-origin backtests: (band factor >= 1, out-of-sample coverage, median |error| %).

    The factor is the 85th percentile of what each backtest needed; coverage is judged on the last third
    of the origins with the factor calibrated on the first two thirds. Fewer than 3 origins: (1, None, None).
    """
    n = len(x)
    if n - min_fit < 3:
        return 1.0, None, None
    origins = np.unique(np.linspace(min_fit, n - 1, num=min(MAX_ORIGINS, n - min_fit)).astype(np.int64))
    factors, errors = zip(*(_backtest_factors(x, y, slopes, int(k)) for k in origins), strict=True)
    split = max(1, (2 * len(origins)) // 3)
    early, late = np.concatenate(factors[:split]), np.concatenate(factors[split:])
    calibrated = min(max(1.0, float(np.quantile(early, BAND_QUANTILE))), MAX_BAND_FACTOR)
    coverage = float(np.mean(late <= calibrated)) if late.size else None
    every = np.concatenate(factors)
    factor = min(max(1.0, float(np.quantile(every, BAND_QUANTILE))), MAX_BAND_FACTOR)
    relative = np.concatenate(errors)
    error_pct = 100.0 * _median(relative) if relative.size else None
    return factor, coverage, error_pct


def _fit_line(x: np.ndarray, y: np.ndarray, min_fit: int) -> _Line:
    """Theil–Sen on (x, y) with its backtest-calibrated band."""
    slopes = _pair_slopes(x, y)
    slope, low, high = _slope_stats(slopes, len(x))
    residuals = y - slope * x
    level = _median(residuals)
    noise = Z85 * MAD_TO_SIGMA * _median(np.abs(residuals - level))
    factor, coverage, error_pct = _calibrate(x, y, slopes, min_fit)
    return _Line(level, slope, (low, high), factor, coverage, error_pct, noise)


def _runway(threshold: float, level: float, slope: float) -> float | None:
    """Days until ``level`` growing at ``slope`` per day reaches ``threshold``: 0 when already there,
    None when it never does within a year. Non-increasing in both level and slope (the band relies on it)."""
    if level >= threshold:
        return 0.0
    if slope <= 0:
        return None
    days = (threshold - level) / slope
    return days if days <= HORIZON_DAYS else None


def _band(line: _Line, threshold: float) -> tuple[float | None, float | None, float | None, tuple[float, float]]:
    """(low, mid, high) days and the (slow, fast) band slopes; low <= mid <= high by monotonicity of _runway."""
    fast = line.slope + line.factor * (line.interval[1] - line.slope)
    slow = line.slope - line.factor * (line.slope - line.interval[0])
    low = _runway(threshold, line.level + line.noise, fast)
    mid = _runway(threshold, line.level, line.slope)
    high = _runway(threshold, line.level - line.noise, slow)
    return low, mid, high, (slow, fast)


# ---------------------------------------------------------------------------------------------- growth


def _growth_change(day: np.ndarray, x: np.ndarray, y: np.ndarray, line: _Line) -> tuple[float | None, bool]:
    """(recent slope, changed): changed when the last 14 days' slope interval and the long-term one do not
    overlap and the slopes differ by more than 20% (comparing intervals, not a point to an interval, so a
    steady but noisy metric does not fire on the recent slope's own noise)."""
    recent = day > day[-1] - RECENT_DAYS
    k = int(np.count_nonzero(recent))
    if k < MIN_HISTORY_DAYS or len(day) - k < MIN_HISTORY_DAYS:
        return None, False  # no long-term history beyond the recent window to compare with
    slope, low, high = _slope_stats(_pair_slopes(x[recent], y[recent]), k)
    apart = low > line.interval[1] or high < line.interval[0]
    return slope, apart and abs(slope - line.slope) > 0.2 * abs(line.slope)


def _within_cycle_growth(daily: _Daily, start: int, drops: np.ndarray) -> float | None:
    """Theil–Sen over the pairs of days inside the same cleanup cycle: the growth the cleanups undo."""
    x, y = daily.x[start:], daily.y[start:]
    cycle = np.searchsorted(drops - start, np.arange(len(x)), side="right")
    later, earlier = _pairs(len(x))
    same = cycle[later] == cycle[earlier]
    if not same.any():
        return None
    later, earlier = later[same], earlier[same]
    return float(_median((y[later] - y[earlier]) / (x[later] - x[earlier])))


# ---------------------------------------------------------------------------------------------- forecast


def _utc_date(day: int) -> date:
    return date.fromordinal(_EPOCH_ORDINAL + int(day))


def _finish(
    base: dict[str, object],
    as_of: datetime,
    line: _Line,
    band: tuple[float | None, float | None, float | None, tuple[float, float]],
    **extra: object,
) -> Forecast:
    """The Forecast of a fitted line; a metric already at/over its threshold has crossed (all days 0)."""
    low, mid, high, slopes = band
    current, threshold = base["current"], base["threshold"]
    if isinstance(current, float) and isinstance(threshold, float) and current >= threshold:
        low = mid = high = 0.0
    return Forecast(
        **base,  # type: ignore[arg-type]
        slope_per_day=line.slope,
        days_to_threshold=mid,
        days_to_threshold_low=low,
        days_to_threshold_high=high,
        crossing_date=None if mid is None else (as_of + timedelta(days=mid)).date(),
        insufficient=False,
        band_coverage=line.coverage,
        backtest_error_pct=line.error_pct,
        slope_interval=line.interval,
        fit=(line.level, line.slope),
        band_slopes=slopes,
        band_factor=line.factor,
        **extra,  # type: ignore[arg-type]
    )


def _insufficient(base: dict[str, object], as_of: datetime) -> Forecast:
    """No forecast (SPEC §6: null forecasts) — except that a metric already over its threshold has crossed."""
    current, threshold = base["current"], base["threshold"]
    crossed = 0.0 if isinstance(current, float) and isinstance(threshold, float) and current >= threshold else None
    return Forecast(
        **base,  # type: ignore[arg-type]
        slope_per_day=None,
        days_to_threshold=crossed,
        days_to_threshold_low=crossed,
        days_to_threshold_high=crossed,
        crossing_date=as_of.date() if crossed is not None else None,
        insufficient=True,
        band_coverage=None,
        backtest_error_pct=None,
        growth_change=False,
        recent_slope_per_day=None,
        slope_interval=None,
        sawtooth=False,
        days_if_cleanups_stop=None,
        fit=None,
    )


def _sawtooth_forecast(
    daily: _Daily, start: int, drops: np.ndarray, period: float, base: dict[str, object], as_of: datetime
) -> Forecast:
    """Runway with cleanups from the trend of the peaks (each complete cycle's max), runway if they stop
    from the current value at the growth rate inside the cycles."""
    bounds = np.r_[start, drops]
    peaks = [a + int(np.argmax(daily.y[a:b])) for a, b in itertools.pairwise(bounds)]
    line = _fit_line(daily.x[peaks], daily.y[peaks], min_fit=4)
    threshold = float(base["threshold"])  # type: ignore[arg-type]
    growth = _within_cycle_growth(daily, start, drops)
    stop = None if growth is None else _runway(threshold, float(base["current"]), growth)  # type: ignore[arg-type]
    return _finish(
        base,
        as_of,
        line,
        _band(line, threshold),
        growth_change=False,  # two peaks in 14 days say nothing about a change of growth
        recent_slope_per_day=None,
        sawtooth=True,
        days_if_cleanups_stop=stop,
        cleanup_period_days=period,
        growth_between_cleanups_per_day=growth,
    )


def _trend_forecast(daily: _Daily, start: int, base: dict[str, object], as_of: datetime) -> Forecast:
    """Theil–Sen on the daily series after the last level shift."""
    x, y = daily.x[start:], daily.y[start:]
    line = _fit_line(x, y, min_fit=MIN_HISTORY_DAYS)
    recent, changed = _growth_change(daily.day[start:], x, y, line)
    return _finish(
        base,
        as_of,
        line,
        _band(line, float(base["threshold"])),  # type: ignore[arg-type]
        growth_change=changed,
        recent_slope_per_day=recent,
        sawtooth=False,
        days_if_cleanups_stop=None,
    )


def _window(
    ts: Sequence[datetime] | np.ndarray, values: Sequence[float] | np.ndarray, now: float, window_days: float
) -> tuple[np.ndarray, np.ndarray]:
    """The finite samples in ``(now - window, now]``, sorted by time."""
    seconds = _epoch_seconds(ts)
    vals = np.asarray(values, dtype=np.float64)
    if seconds.shape != vals.shape:
        raise ValueError(f"{len(seconds)} timestamps but {len(vals)} values")
    keep = (seconds > now - window_days * DAY_SECONDS) & (seconds <= now) & np.isfinite(vals)
    seconds, vals = seconds[keep], vals[keep]
    if seconds.size > 1 and np.any(np.diff(seconds) < 0):
        order = np.argsort(seconds, kind="stable")
        seconds, vals = seconds[order], vals[order]
    return seconds, vals


def forecast(
    metric: str,
    ts: Sequence[datetime] | np.ndarray,
    values: Sequence[float] | np.ndarray,
    *,
    threshold: float,
    as_of: datetime,
    window_days: float = 90.0,
) -> Forecast:
    """Forecast when ``metric`` reaches ``threshold`` (see the module docstring for the method).

    ``ts``: aware datetimes, or a numpy array of datetime64 (UTC) or epoch seconds (fastest); samples outside
    ``(as_of - window_days, as_of]`` and non-finite values are ignored. ``as_of`` must be aware. Metrics are
    assumed to grow toward the threshold; a flat or shrinking one never crosses (None).
    """
    if as_of.utcoffset() is None:
        raise ValueError("as_of must be timezone-aware")
    now = as_of.timestamp()
    seconds, vals = _window(ts, values, now, window_days)
    base: dict[str, object] = {"metric": metric, "threshold": float(threshold), "samples": int(seconds.size)}
    if not seconds.size:
        return _insufficient({**base, "current": None, "history_days": 0.0, "last_shift": None, "daily": ()}, as_of)
    daily = _daily_max(seconds, vals, now)
    fit = _complete_days(daily, now, now - window_days * DAY_SECONDS)
    start, structural, cadence = _segments(fit)
    first = fit.day[start] if structural.size else daily.day[0]  # a partial first day is history all the same
    base |= {
        "current": float(daily.y[-1]),
        "history_days": float(daily.day[-1] - first + 1),
        "last_shift": _utc_date(fit.day[start]) if structural.size else None,
        "daily": tuple(zip(map(_utc_date, daily.day.tolist()), daily.y.tolist(), strict=True)),
    }
    if base["history_days"] < MIN_HISTORY_DAYS or len(fit.y) - start < 2:  # type: ignore[operator]
        return _insufficient(base, as_of)
    if cadence is not None:
        drops = cadence[0][cadence[0] > start]
        return _sawtooth_forecast(fit, start, drops, cadence[1], base, as_of)
    return _trend_forecast(fit, start, base, as_of)


def _complete_days(daily: _Daily, now: float, window_start: float) -> _Daily:
    """The days observed whole: the window's first and last UTC days are usually partial, and a partial
    day's max misses part of the daily cycle (today's max before the afternoon peak is an outlier low)."""
    low = 1 if daily.day[0] * DAY_SECONDS < window_start and len(daily.day) > 1 else 0
    high = len(daily.day) - 1 if (daily.day[-1] + 1) * DAY_SECONDS > now and len(daily.day) - low > 1 else None
    return _Daily(day=daily.day[low:high], x=daily.x[low:high], y=daily.y[low:high])


def _segments(fit: _Daily) -> tuple[int, np.ndarray, tuple[np.ndarray, float] | None]:
    """(index where the fit starts: after the last level shift, the structural shifts, the cleanup cadence)."""
    shifts, sizes = _level_shifts(fit.day, fit.y)
    cadence = _cadence(fit.day, shifts, sizes)
    structural = shifts if cadence is None else np.setdiff1d(shifts, cadence[0])
    start = int(structural[-1]) if structural.size else 0
    if cadence is not None and np.count_nonzero(cadence[0] > start) < 3:
        cadence, structural = None, shifts  # a jump after the cleanups began leaves too few cycles to trend
        start = int(structural[-1]) if structural.size else 0
    return start, structural, cadence


# ---------------------------------------------------------------------------------------------- checks


def _days(days: float | None) -> str:
    return "beyond a year" if days is None else f"{days:.0f} days"


def forecast_check(f: Forecast, warn_within_days: float, fail_within_days: float) -> tuple[str, str]:
    """SPEC §6 ``forecast``: fail when ``days_to_threshold_low <= fail_within`` (already crossed included),
    warn when ``<= warn_within``; insufficient history warns. Returns (status, one-line detail)."""
    if f.current is not None and f.current >= f.threshold:
        return "fail", f"already at or over the threshold: {f.current:.6g} >= {f.threshold:.6g}"
    if f.insufficient:
        return "warn", (
            f"insufficient history: {f.history_days:.0f} days since the last level shift ({MIN_HISTORY_DAYS} needed)"
        )
    low = f.days_to_threshold_low
    status = "ok"
    if low is not None and low <= fail_within_days:
        status = "fail"
    elif low is not None and low <= warn_within_days:
        status = "warn"
    slope = f"{f.slope_per_day:+.4g}/day" if f.slope_per_day is not None else "no slope"
    if f.days_to_threshold is None:
        detail = f"trend ({slope}) does not reach {f.threshold:.6g} within a year; earliest plausible: {_days(low)}"
    else:
        detail = (
            f"reaches {f.threshold:.6g} around {f.crossing_date} (in {f.days_to_threshold:.0f} days, band "
            f"{_days(low)} to {_days(f.days_to_threshold_high)}, trend {slope})"
        )
    if f.sawtooth:
        detail += (
            f"; runway with cleanups every {f.cleanup_period_days:.0f} days, "
            f"if cleanups stop: {_days(f.days_if_cleanups_stop)}"
        )
    return status, detail


def growth_change_check(f: Forecast) -> tuple[str, str]:
    """``growth_change``: warn when the last 14 days' slope left the long-term slope's interval."""
    if f.recent_slope_per_day is None or f.slope_per_day is None or f.slope_interval is None:
        reason = "a sawtooth (cleanups on a cadence)" if f.sawtooth else "too little history"
        return "ok", f"not assessed: {reason}"
    low, high = f.slope_interval
    comparison = (
        f"{f.recent_slope_per_day:+.4g}/day over the last {RECENT_DAYS} days vs {f.slope_per_day:+.4g}/day "
        f"long-term (interval {low:+.4g} to {high:+.4g})"
    )
    if f.growth_change:
        return "warn", f"growth changed: {comparison}"
    return "ok", f"steady: {comparison}"


def drift_check(f: Forecast, previous_crossing: date | None, warn_within_days: float) -> tuple[str, str] | None:
    """``drift``: warn when the crossing date moved earlier by more than ``warn_within / 4`` days since the
    previous run; None when there is nothing to compare (no previous crossing, or no crossing now)."""
    if previous_crossing is None or f.crossing_date is None:
        return None
    earlier = (previous_crossing - f.crossing_date).days
    limit = warn_within_days / 4.0
    if earlier > limit:
        return "warn", (
            f"crossing moved {earlier} days earlier since the previous run ({previous_crossing} -> "
            f"{f.crossing_date}, more than {limit:.3g} days)"
        )
    return "ok", f"crossing {f.crossing_date} (previous run {previous_crossing}, {-earlier:+d} days)"
