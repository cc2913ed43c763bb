"""``capacity``: 1,000 metrics × 90 days of hourly samples forecast in under 10 s (SPEC §8).

Figure: wall seconds of ``tasks.capacity.forecast.forecast`` over every metric (median of 3 passes), the
timestamps given as one numpy array of epoch seconds (the engine's fastest input; lists of datetimes cost
about 1 ms more per metric to convert). The metrics are generated with a fixed seed, 2,160 hourly points
each, one of five shapes in turn: linear growth with a daily cycle, growth with a one-time cleanup step,
a weekly sawtooth (retention) over a growing base, flat, shrinking — slopes and thresholds varied.

Baseline: the same forecast done naively — Theil–Sen (``scipy.stats.theilslopes``) on the raw hourly points
of the whole window, no daily aggregation, no level shifts. It is the honest reference for speed (the same
estimator, the work the engine avoids by aggregating first: 2.3 M pairwise slopes per metric instead of
4,000); at ~0.1 s per metric it is timed on a sample of metrics (30; ``--quick``: 10) and scaled to all,
said so in ``notes``. Plain least squares (``numpy.polyfit`` on the raw points, what Prometheus
``predict_linear`` does) is timed on all metrics too and shown in ``notes`` with the accuracy of all three:
the median relative error of the crossing day against the noise-free trend's, on the growing metrics (the
cleanup-step ones separately — where least squares fails). Target: under 10 s at 1,000 metrics;
``--quick`` (200 metrics) scales the target to 2 s.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import numpy as np

from bench.common import BenchResult, median_seconds
from tasks.capacity.forecast import forecast

FULL_METRICS = 1000
QUICK_METRICS = 200
DAYS = 90
TARGET_SECONDS_PER_1000 = 10.0
AS_OF = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
SHAPES = ("linear", "cleanup", "sawtooth", "flat", "shrinking")


def generate(metrics: int, seed: int = 14) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(epoch seconds [hours], values [metrics, hours], thresholds, true crossing days or nan, shapes).

    The truth is the crossing of the noise-free trend (for the sawtooth: of its peaks) from AS_OF; nan when
    the metric never crosses.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(-DAYS * 24 + 1, 1) / 24.0  # days relative to AS_OF
    seconds = AS_OF.timestamp() + t * 86400.0
    since = t + DAYS
    shapes = [SHAPES[i % len(SHAPES)] for i in range(metrics)]
    slope = rng.uniform(0.2, 1.0, (metrics, 1))
    runway = rng.uniform(20, 200, metrics)
    values = 100 + slope * since + np.sin(2 * np.pi * (t % 1)) + rng.normal(0, 0.5, (metrics, t.size))
    level_now = 100 + slope[:, 0] * DAYS
    kinds = np.array(shapes)
    cleanup = kinds == "cleanup"
    values[cleanup] -= 40.0 * (t > -rng.uniform(15, 60, (int(cleanup.sum()), 1)))
    level_now[cleanup] -= 40.0
    saw = kinds == "sawtooth"
    # the sawtooth grows 6x its base rate between weekly cleanups; its peaks grow at the base rate
    values[saw] += 6 * slope[saw] * 7 * (((t + 2.3) % 7) / 7.0)
    level_now[saw] += 6 * slope[saw, 0] * 7
    thresholds = level_now + runway * slope[:, 0]
    truth = runway.copy()
    flat, shrinking = kinds == "flat", kinds == "shrinking"
    values[flat] -= slope[flat] * since
    values[shrinking] -= 2 * slope[shrinking] * since
    truth[flat | shrinking] = np.nan
    return seconds, values, thresholds, truth, shapes


def naive_theil_sen(seconds: np.ndarray, values: np.ndarray, threshold: float) -> float | None:
    """The baseline: Theil–Sen on every raw point of the window, crossing from the line's value at AS_OF."""
    from scipy.stats import theilslopes

    x = (seconds - AS_OF.timestamp()) / 86400.0
    fit = theilslopes(values, x, method="joint")
    return _crossing(threshold, fit.intercept, fit.slope)


def least_squares(seconds: np.ndarray, values: np.ndarray, threshold: float) -> float | None:
    """Plain least squares on the raw points (Prometheus ``predict_linear``)."""
    slope, intercept = np.polyfit((seconds - AS_OF.timestamp()) / 86400.0, values, 1)
    return _crossing(threshold, float(intercept), float(slope))


def _crossing(threshold: float, level: float, slope: float) -> float | None:
    if level >= threshold:
        return 0.0
    if slope <= 0 or (threshold - level) / slope > 365:
        return None
    return (threshold - level) / slope


def _error(days: list[float | None], truth: np.ndarray, mask: np.ndarray) -> float:
    """Median relative error of the crossing day on the metrics of ``mask`` (None counts as 365 days)."""
    found = np.array([365.0 if d is None else d for d in days])
    return float(np.median(np.abs(found[mask] - truth[mask]) / truth[mask])) if mask.any() else float("nan")


def run(quick: bool) -> BenchResult:
    metrics = QUICK_METRICS if quick else FULL_METRICS
    sample = 10 if quick else 30
    seconds, values, thresholds, truth, shapes = generate(metrics)
    results: list[object] = []

    def forecast_all() -> None:
        results[:] = [
            forecast(f"m{i}", seconds, values[i], threshold=float(thresholds[i]), as_of=AS_OF) for i in range(metrics)
        ]

    figure = median_seconds(forecast_all, 3)
    mids = [r.days_to_threshold for r in results]  # type: ignore[attr-defined]
    started = time.perf_counter()
    naive = [naive_theil_sen(seconds, values[i], float(thresholds[i])) for i in range(sample)]
    baseline = (time.perf_counter() - started) * metrics / sample
    started = time.perf_counter()
    lsq = [least_squares(seconds, values[i], float(thresholds[i])) for i in range(metrics)]
    lsq_seconds = time.perf_counter() - started
    growing = ~np.isnan(truth)
    cleanup = growing & (np.array(shapes) == "cleanup")
    engine_error, lsq_error = 100 * _error(mids, truth, growing), 100 * _error(lsq, truth, growing)
    target_seconds = TARGET_SECONDS_PER_1000 * metrics / FULL_METRICS
    return BenchResult(
        name="capacity",
        figure=figure,
        unit="s",
        baseline=baseline,
        baseline_name="naive Theil-Sen on raw hourly points (scipy), sampled and scaled",
        ratio=baseline / figure,
        target=f"< {target_seconds:g} s" + (" (10 s per 1,000 metrics, scaled)" if quick else ""),
        met=figure < target_seconds,
        notes=(
            f"{'QUICK: ' if quick else ''}{metrics:,} metrics x {DAYS} days hourly ({seconds.size:,} points each, "
            f"shapes {'/'.join(SHAPES)}); forecast {figure:.2f} s (median of 3, {1000 * figure / metrics:.2f} ms "
            f"per metric); naive Theil-Sen timed on {sample} metrics ({1000 * baseline / metrics:.0f} ms each) and "
            f"scaled to {metrics:,}: {baseline:.1f} s = {baseline / figure:.0f}x slower; least squares on raw points "
            f"{lsq_seconds:.2f} s for all. Median crossing error vs the noise-free trend, growing metrics: "
            f"engine {engine_error:.1f}%, least squares {lsq_error:.1f}%; "
            f"cleanup-step metrics: engine {100 * _error(mids, truth, cleanup):.1f}%, least squares "
            f"{100 * _error(lsq, truth, cleanup):.1f}%; on the {sample} sampled metrics: engine "
            f"{100 * _error(mids[:sample], truth[:sample], growing[:sample]):.1f}%, naive "
            f"Theil-Sen {100 * _error(naive, truth[:sample], growing[:sample]):.1f}%"
        ),
    )


if __name__ == "__main__":
    print(run(quick=True))
