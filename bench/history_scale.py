"""``history-scale``: what a year of probe history costs — size → time, memory (issue 19).

For 1, 3 and 13 months of 60 s probes of N services (N = 40, ~23 M rows at 13 months; ``--quick``: 8
services, 1 and 3 months only), generated inside PostgreSQL with ``generate_series`` (``bench/sla_report.py``'s
generator) and rolled up month by month (not timed). The sizes share one database and one oldest
month (13 months before the current one): each size adds the newer months it needs, so the oldest
month's report is the same report at every size and only the history after it grows. For each size:
rows, on-disk size (``pg_total_relation_size`` of the partitions and the three rollup tables), and
the wall time and peak RSS of

(a) the monthly SLA report of the oldest month (``tasks.sla.compute_sla``, median of 3),
(b) a rollup refresh of one hour across all services (``sla_store.refresh_rollups``, median of 3),
(c) ``opsflow probes import`` of one day's CSV (the command, as a user runs it: start-up included),

and, for a size of more than 3 months, the prune to 3 months (``store.raw_probe_retention``, the
store's ``drop_raw_probe_partitions``), the size after it and the oldest month's report after it.
Each measured step runs in a fresh Python process; its peak RSS (``VmHWM``) includes the
interpreter and its imports (Prefect): the "idle process" column is that floor.

Figure: the oldest month's report at the largest size; baseline: the same report at 1 month.
Target: ratio <= 2.0 (a month's report must not cost more as history grows).

13 months x 1,000 services (~570 M rows, ~70 GB) does not fit a 2-core machine's time budget
(generating ~15 s per million rows); ``python -m bench.history_scale --services 1000 --months 1,3,13``
runs it where it does. The costs measured grow with rows per month, not with months kept.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.common import BenchResult
from bench.sla_report import GENERATE_PROBES, probe_config

TARGET_RATIO = 2.0
KEEP_MONTHS = 3
REPEATS = 3
#: Generating and rolling up history costs ~15 s per million rows here: 40 services' 13 months take ~6 minutes,
#: and ``--quick`` (8 services, 3 months: ~1 M rows) stays within the quick run's budget.
FULL_SERVICES = 40
QUICK_SERVICES = 8


@dataclass
class Size:
    """One history size and what was measured on it (seconds, MB)."""

    months: int
    services: int
    rows: int = 0
    disk_mb: float = 0.0
    timings: dict[str, tuple[float, float]] = field(default_factory=dict)  # step -> (seconds, peak RSS MB)
    pruned_mb: float | None = None
    dropped: int = 0


def month_starts(count: int, now: datetime) -> list[datetime]:
    """The starts of the ``count`` whole UTC months before ``now``'s month, oldest first."""
    months = [now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)]
    for _ in range(count):
        months.insert(0, (months[0] - timedelta(days=1)).replace(day=1))
    return months[:-1]


def _next_month(month: datetime) -> datetime:
    return (month + timedelta(days=32)).replace(day=1)


# -- the measured steps, each in a fresh process --------------------------------------------------


def worker(spec: dict[str, object]) -> float:
    """Run one measured step (``spec["op"]``) and return its seconds (the median of :data:`REPEATS`)."""
    from opsflow import sla_store
    from opsflow.store import OpsStore
    from tasks.periods import Period
    from tasks.sla import compute_sla

    op = str(spec["op"])
    if op == "idle":
        return 0.0
    store = OpsStore(str(spec["url"]))
    config = probe_config(int(spec["services"]))  # type: ignore[call-overload]
    start = datetime.fromisoformat(str(spec["start"]))
    if op == "report":
        period = Period("month", f"{start:%Y-%m}", start, _next_month(start))
        return _median(lambda: compute_sla(store, config, period))
    services = [(s.name, s.interval) for s in config.services]

    def refresh() -> None:
        with store.connection() as conn:
            sla_store.refresh_rollups(conn, services, start, start + timedelta(hours=1))

    return _median(refresh)


def _median(action: Callable[[], object]) -> float:
    timings = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        action()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings)


def measured(args: Sequence[str], env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """Run ``args`` as a child process: (wall seconds, its peak RSS in MB, its stdout).

    The peak is the child's own ``VmHWM`` (read every 20 ms while it runs): ``wait4``'s ``ru_maxrss``
    would report this process's size instead, which Linux carries over into a child across ``exec``."""
    started = time.perf_counter()
    peak_kb = 0
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        child = subprocess.Popen(list(args), stdout=out, stderr=err, env=env)
        status = Path(f"/proc/{child.pid}/status")
        while child.poll() is None:
            with contextlib.suppress(OSError):  # gone between poll() and the read
                line = next((x for x in status.read_text().splitlines() if x.startswith("VmHWM:")), None)
                peak_kb = max(peak_kb, int(line.split()[1])) if line else peak_kb
            time.sleep(0.02)
        seconds = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        text, problem = out.read().decode(), err.read().decode().strip().splitlines()
    if child.returncode != 0:
        raise RuntimeError(f"{' '.join(args[2:5])} exited {child.returncode}: {problem[-1] if problem else ''}")
    return seconds, peak_kb / 1024, text


def step(spec: dict[str, object]) -> tuple[float, float]:
    """One :func:`worker` step in a fresh process: (its own seconds, the process's peak RSS MB)."""
    _, rss, out = measured([sys.executable, "-m", "bench.history_scale", "--worker", json.dumps(spec)])
    return float(out.strip().splitlines()[-1]), rss


# -- building the history ---------------------------------------------------------------------------


def build(url: str, months: Sequence[datetime], services: int) -> int:
    """Add ``months`` of history (generated month by month) and their rollups; return the rows added.
    The sizes share one database: each adds the newer months it needs to the ones already there."""
    from opsflow import sla_store
    from opsflow.store import OpsStore

    store = OpsStore(url)
    rows = 0
    names = [(s.name, s.interval) for s in probe_config(services).services]
    for month in months:
        with store.connection() as conn:
            conn.execute("select opsflow.ensure_probe_partition(%s)", (month,))
            cursor = conn.execute(GENERATE_PROBES, {"services": services, "start": month, "end": _next_month(month)})
            rows += cursor.rowcount
        with store.connection() as conn:
            conn.autocommit = True
            conn.execute(f"vacuum analyze opsflow.probe_results_{month:%Y_%m}")
        with store.connection() as conn:  # as the probe runs would have built them, month by month
            sla_store.rebuild(conn, names, month, _next_month(month))
    with store.connection() as conn:
        conn.autocommit = True
        conn.execute("analyze opsflow.probe_results")
        conn.execute("vacuum analyze opsflow.probe_hourly, opsflow.probe_daily, opsflow.probe_weekly")
    return rows


def disk_mb(url: str) -> float:
    """On-disk size of the probe partitions and the rollup tables (indexes and TOAST included)."""
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute(
            """select sum(pg_total_relation_size(c.oid)) from pg_class c
               where c.oid in (select inhrelid from pg_inherits where inhparent = 'opsflow.probe_results'::regclass)
                  or c.oid in ('opsflow.probe_hourly'::regclass, 'opsflow.probe_daily'::regclass,
                               'opsflow.probe_weekly'::regclass)"""
        ).fetchone()
    return float(row[0] or 0) / 1e6 if row else 0.0


def day_csv(path: Path, services: int, day: datetime) -> None:
    """One day of 60 s results of every service, in ``opsflow probes import``'s format."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["service", "checked_at", "ok", "latency_ms"])
        for i in range(services):
            for minute in range(1440):
                at = day + timedelta(minutes=minute)
                writer.writerow([f"svc-{i:04d}", at.strftime("%Y-%m-%dT%H:%M:%SZ"), "true", 40 + (i + minute) % 60])


def import_day(url: str, services: int, day: datetime, tmp: Path) -> tuple[float, float]:
    """``opsflow probes import`` of one day's CSV as a user runs it: (wall seconds, peak RSS MB)."""
    import yaml

    listed = [
        {"name": f"svc-{i:04d}", "url": f"https://svc-{i}.example.com/health", "interval": "60s"}
        for i in range(services)
    ]
    config = {"store": {"url": url}, "services": listed}
    (tmp / "opsflow.yaml").write_text(yaml.safe_dump(config))
    day_csv(tmp / "day.csv", services, day)
    env = {**os.environ, "OPSFLOW_HOME": str(tmp / "home")}
    args = [
        sys.executable,
        "-m",
        "opsflow",
        "probes",
        "import",
        str(tmp / "day.csv"),
        "--config",
        str(tmp / "opsflow.yaml"),
    ]
    seconds, rss, _ = measured(args, env)
    return seconds, rss


def measure_size(url: str, size: Size, months: Sequence[datetime], import_day_at: datetime, tmp: Path) -> None:
    """Measure ``size`` (its history ``months`` in place at ``url``), and prune it when longer than 3 months."""
    from opsflow.store import OpsStore

    size.disk_mb = disk_mb(url)
    spec: dict[str, object] = {"url": url, "services": size.services, "start": months[0].isoformat()}
    size.timings["idle"] = step({**spec, "op": "idle"})
    size.timings["report"] = step({**spec, "op": "report"})
    last_hour = _next_month(months[-1]) - timedelta(hours=1)
    size.timings["refresh"] = step({**spec, "op": "refresh", "start": last_hour.isoformat()})
    size.timings["import"] = import_day(url, size.services, import_day_at, tmp)
    if size.months > KEEP_MONTHS:
        store = OpsStore(url)
        services = [(s.name, s.interval) for s in probe_config(size.services).services]
        started = time.perf_counter()
        size.dropped = len(store.drop_raw_probe_partitions(months[-KEEP_MONTHS], services).dropped)
        size.timings["prune"] = (time.perf_counter() - started, 0.0)
        size.pruned_mb = disk_mb(url)
        size.timings["report after prune"] = step({**spec, "op": "report"})


def measure_all(server_url: str, sizes: Sequence[Size], tmp: Path) -> None:
    """Every size in turn (shortest first) in one new database, each adding the newer months it needs."""
    from opsflow.embedded import ensure_database, url_with_database
    from opsflow.store import OpsStore

    database = f"history_{uuid.uuid4().hex[:8]}"
    ensure_database(server_url, database)
    url = url_with_database(server_url, database)
    OpsStore(url).migrate()
    history = month_starts(max(size.months for size in sizes), datetime.now(UTC))
    have: list[datetime] = []
    rows = 0
    for index, size in enumerate(sizes):
        # Every size starts at the same month (its oldest, the one reported): only the history after it
        # grows, so the report's figure compares like with like (not a 4-week month with a 3-week one).
        months = history[: size.months]
        started = time.perf_counter()
        rows += build(url, [m for m in months if m not in have], size.services)
        have = list(months)
        size.rows = rows
        print(
            f"history-scale: {size.months} months x {size.services} built in {time.perf_counter() - started:.0f} s",
            file=sys.stderr,
        )
        # Each size imports another day of the current month (the same day again would insert nothing).
        measure_size(url, size, months, _next_month(history[-1]) + timedelta(days=index), tmp)


# -- the table ----------------------------------------------------------------------------------------


def table(sizes: Sequence[Size]) -> str:
    """The measured figures as a markdown table (seconds, MB)."""

    def cell(size: Size, name: str) -> str:
        if name not in size.timings:
            return "—"
        seconds, rss = size.timings[name]
        return f"{seconds:.3f} s / {rss:.0f} MB" if rss else f"{seconds:.1f} s"

    lines = [
        "| months | services | rows | on disk | oldest month's report | refresh 1 h | import 1 day (CLI) "
        "| prune to 3 months | on disk after | report after prune | idle process |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in sizes:
        after = "—" if s.pruned_mb is None else f"{s.pruned_mb:,.0f} MB"
        lines.append(
            f"| {s.months} | {s.services:,} | {s.rows:,} | {s.disk_mb:,.0f} MB | {cell(s, 'report')} "
            f"| {cell(s, 'refresh')} | {cell(s, 'import')} | {cell(s, 'prune')} | {after} "
            f"| {cell(s, 'report after prune')} | {s.timings['idle'][1]:.0f} MB |"
        )
    return "\n".join(lines)


def run(quick: bool, services: int | None = None, months: Sequence[int] | None = None) -> BenchResult:
    from opsflow.embedded import EmbeddedPostgres

    count = services or (QUICK_SERVICES if quick else FULL_SERVICES)
    sizes = [Size(length, count) for length in sorted(months or ((1, 3) if quick else (1, 3, 13)))]
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedPostgres.start(Path(tmp) / "pg", keep_running=False)
        try:
            measure_all(server.url("postgres"), sizes, Path(tmp))
        finally:
            server.stop()
    print(table(sizes), file=sys.stderr)
    figure, baseline = sizes[-1].timings["report"][0], sizes[0].timings["report"][0]
    ratio = figure / baseline
    return BenchResult(
        name="history-scale",
        figure=figure,
        unit="s",
        baseline=baseline,
        baseline_name=f"the same monthly report with {sizes[0].months} month(s) of history",
        ratio=ratio,
        target=f"ratio <= {TARGET_RATIO:g}",
        met=ratio <= TARGET_RATIO,
        notes=("QUICK: " if quick else "") + notes(sizes),
    )


def notes(sizes: Sequence[Size]) -> str:
    """The benchmark's one-line summary of the smallest and largest size."""
    first, largest = sizes[0], sizes[-1]
    text = (
        f"{largest.services} services x {'/'.join(str(s.months) for s in sizes)} months of 60 s probes; "
        f"oldest month's report {largest.timings['report'][0]:.3f} s at {largest.months} months "
        f"({largest.rows:,} rows, {largest.disk_mb:,.0f} MB) vs {first.timings['report'][0]:.3f} s at {first.months}"
    )
    after = largest.timings.get("report after prune")
    if after is not None:
        text += (
            f"; pruned to {KEEP_MONTHS} months in {largest.timings['prune'][0]:.1f} s ({largest.dropped} partitions "
            f"dropped, {largest.pruned_mb or 0:,.0f} MB left), oldest month's report after it {after[0]:.3f} s"
        )
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.history_scale", description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--services", type=int, help="services per size (default 40; --quick 8)")
    parser.add_argument("--months", help="history lengths, comma-separated (default 1,3,13; --quick 1,3)")
    args = parser.parse_args(argv)
    if args.worker:
        print(worker(json.loads(args.worker)))
        return 0
    lengths = [int(n) for n in args.months.split(",")] if args.months else None
    result = run(args.quick, args.services, lengths)
    print(json.dumps(result.as_dict()))
    return 0 if result.met else 1


if __name__ == "__main__":
    sys.exit(main())
