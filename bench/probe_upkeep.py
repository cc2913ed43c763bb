"""``probe-upkeep``: what the every-minute uptime run does in the store besides probing stays flat as history grows.

After each probe run the flow writes the results, refreshes the SLA rollups of the
hours they touch and computes the error-budget burn rates over 5m–3d windows. At
1,000 services that must fit well inside the minute, and must not grow with the
history kept (the complaint against Uptime Kuma at ~1,000 monitors). Two stores
of 1,000 services with 60 s probes, generated inside PostgreSQL, rollups rebuilt
(not timed): one with 1 day of history (the baseline), one with 7 days (the
figure); then, in each, the median of 5 simulated probe runs (a run right after
midnight, which also settles the finished day, is timed separately in the notes).
Target: the ratio 7 days / 1 day ≤ 1.5. ``--quick``: 200 services, 1 vs 3 days.
"""

from __future__ import annotations

import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.common import BenchResult, median_seconds
from bench.sla_report import probe_config, store_with_probes
from opsflow import sla_store
from opsflow.config import Config
from opsflow.embedded import EmbeddedPostgres
from opsflow.history_csv import ProbeRow
from opsflow.store import OpsStore
from tasks.sla import burn_rates, rebuild_rollups

MAX_RATIO = 1.5
END = datetime(2026, 11, 22, tzinfo=UTC)


def _store_with_history(server: EmbeddedPostgres, name: str, config: Config, days: int) -> OpsStore:
    store = store_with_probes(server, name, config, END - timedelta(days=days), END)
    rebuild_rollups(store, config)
    return store


def _upkeep(store: OpsStore, config: Config) -> tuple[float, float]:
    """(first run after midnight, median of the next 5 runs) of write + rollup refresh + burn rates."""
    intervals = {s.name: s.interval for s in config.services}
    minute = iter(range(1_000))

    def one_run() -> None:
        now = END + timedelta(minutes=next(minute))
        rows = [ProbeRow(s.name, now, True, 50.0, 200, None) for s in config.services]
        store.write_probe_results(rows)
        with store.connection() as conn:
            sla_store.refresh_after_write(conn, intervals, [(r.service, r.checked_at) for r in rows])
        burn_rates(store, config, now + timedelta(seconds=5))

    started = time.perf_counter()
    one_run()
    first = time.perf_counter() - started
    return first, median_seconds(one_run, 5)


def run(quick: bool) -> BenchResult:
    services, days = (200, 3) if quick else (1000, 7)
    config = probe_config(services)
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedPostgres.start(Path(tmp) / "pg", keep_running=False)
        try:
            short = _store_with_history(server, "one_day", config, 1)
            long = _store_with_history(server, f"days_{days}", config, days)
            short_first, baseline = _upkeep(short, config)
            long_first, figure = _upkeep(long, config)
        finally:
            server.stop()
    ratio = figure / baseline
    return BenchResult(
        name="probe-upkeep",
        figure=figure,
        unit="s",
        baseline=baseline,
        baseline_name="the same run's upkeep with 1 day of history",
        ratio=ratio,
        target=f"ratio <= {MAX_RATIO:g} (flat in history)",
        met=ratio <= MAX_RATIO,
        notes=(
            f"{'QUICK: ' if quick else ''}{services} services, 60 s probes; per probe run: write + rollup refresh "
            f"+ burn rates (5 windows), median of 5: {figure:.3f} s with {days} days of history vs {baseline:.3f} s "
            f"with 1 day; the first run, after midnight, also settles the finished days and last week, here "
            f"rolling up the hours before the generated history too (once per store): {long_first:.2f} s vs "
            f"{short_first:.2f} s"
        ),
    )


if __name__ == "__main__":
    print(run(quick=True))
