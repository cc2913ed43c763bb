"""``orchestration``: backup verification of 200 small sets as a Prefect flow, at most 2x the same work done directly.

Figure: wall seconds of one run of the real ``backup_verification`` flow (what ``opsflow run
backup-verification`` calls, in this process, against the same Prefect API it would use: Prefect's
temporary local server when ``PREFECT_API_URL`` is not set) over 200 backup sets (``--quick``: 50) on a
filesystem storage in a temp dir — 3 small backups a set, gzip (``sql_gz``) and plain (``file``) sets in
turn, each with its ``.sha256`` sidecar — with a real ops store (an embedded PostgreSQL): one ``verify[SET]``
task run per set, ledger rows and the result stored, the status page refreshed, the artifacts published.

Baseline: the same run's real work without Prefect — the config loaded, the store opened, then for each set
in a plain loop what the task does (``store.latest_verifications``, ``tasks.backups.verify_backup_set``,
``store.record_verifications``), and the result saved. Target: flow / direct <= 2.0.

Each side runs once to warm up (Prefect's temporary server starts on the first flow run, imports and the
page cache are warmed: one-off costs neither side pays per run), then both are timed, best of
:data:`REPEATS`; the ledger and results are emptied before every run, so each one reads and hashes every
object again. Every run must find every set ``ok``.

``python -m bench.orchestration --profile [--quick]`` prints cProfile's top entries of one warm flow run.
"""

from __future__ import annotations

import cProfile
import gzip
import hashlib
import io
import os
import pstats
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import BenchResult, wall_times
from opsflow.config import load_config
from opsflow.embedded import EmbeddedPostgres
from opsflow.results import RoutineResult
from opsflow.store import OpsStore

FULL_SETS = 200
QUICK_SETS = 50
WARM_SETS = 5
BACKUPS_PER_SET = 3
REPEATS = 2
MAX_RATIO = 2.0
ROUTINE = "backup-verification"


def write_sets(root: Path, count: int, now: datetime) -> None:
    """``count`` sets under ``root/set-NNN/``: 3 nightly backups each (a few KB), with sidecars."""
    for index in range(count):
        directory = root / f"set-{index:03d}"
        directory.mkdir(parents=True)
        gzipped = index % 2 == 0
        for night in range(BACKUPS_PER_SET):
            text = f"-- set {index} night {night}\n" + "insert into t values (1, 'row');\n" * (100 + 10 * night)
            data = gzip.compress(text.encode(), mtime=0) if gzipped else text.encode()
            name = f"{night}.sql.gz" if gzipped else f"{night}.log"
            path = directory / name
            path.write_bytes(data)
            written = (now - timedelta(hours=2 + 24 * (BACKUPS_PER_SET - 1 - night))).timestamp()
            os.utime(path, (written, written))
            (directory / f"{name}.sha256").write_text(f"{hashlib.sha256(data).hexdigest()}  {name}\n")


def write_config(path: Path, root: Path, count: int, store_url: str) -> Path:
    lines = [
        f"store: {{url: '{store_url}'}}",
        f"storages:\n  local: {{type: filesystem, path: '{root}'}}",
        "backups:",
    ]
    for index in range(count):
        backup_format = "sql_gz" if index % 2 == 0 else "file"
        lines.append(
            f"  - {{name: set-{index:03d}, storage: local, prefix: set-{index:03d}/, format: {backup_format}}}"
        )
    path.write_text("\n".join(lines) + "\n")
    return path


def direct(config_path: Path) -> list[str]:
    """The routine's real work without Prefect: each set's task body in a plain loop; the statuses."""
    from tasks.backups import remove_restore_leftovers, verify_backup_set

    config = load_config(config_path)
    store = OpsStore.open(config)
    now = datetime.now(UTC).replace(microsecond=0)
    remove_restore_leftovers()
    items = []
    for backup in config.backups:
        verification = verify_backup_set(
            backup, config.storages[backup.storage], now, store.latest_verifications(backup.name)
        )
        store.record_verifications([{**row, "flow_run_id": None} for row in verification.ledger_rows])
        items.append(verification.item)
    store.save_result(RoutineResult(routine=ROUTINE, as_of=now, items=items))
    return [item.status for item in items]


def through_prefect(config_path: Path) -> list[str]:
    """The real flow, as ``opsflow run backup-verification`` calls it; the statuses."""
    from flows._routine import routine_result
    from flows.backup_verification import backup_verification

    state = backup_verification(as_of=None, config_path=str(config_path), return_state=True)
    result = routine_result(state)
    if result is None or result.error:
        raise RuntimeError(f"backup-verification did not complete: {state.message}")
    return [item.status for item in result.items]


def prefect_floor(count: int) -> tuple[float, float]:
    """Prefect's own cost, measured here: (an empty flow run, seconds; one no-op task run, ms) — ``count``
    no-op task runs submitted as ``verify[SET]`` are, on the same thread pool, minus the empty run (best
    of 3 and of 2)."""
    from prefect import flow, task
    from prefect.cache_policies import NO_CACHE
    from prefect.task_runners import ThreadPoolTaskRunner

    from flows.backup_verification import VERIFY_CONCURRENCY

    @task(cache_policy=NO_CACHE, task_run_name="noop[{index}]")
    def noop(index: int) -> int:
        return index

    @flow(name="bench-noop", task_runner=ThreadPoolTaskRunner(max_workers=VERIFY_CONCURRENCY))
    def noops(tasks: int) -> None:
        futures = [noop.submit(index) for index in range(tasks)]
        for future in futures:
            future.result()

    noops(2)  # warm
    empty = min(wall_times(lambda: noops(0), 3))
    with_tasks = min(wall_times(lambda: noops(count), 2))
    return empty, 1000 * max(0.0, with_tasks - empty) / count


def forget_verifications(store: OpsStore) -> None:
    """Empty the ledger and results: the next run reads every object again, as the first one did."""
    with store.connection() as conn:
        conn.execute("truncate opsflow.backup_verifications, opsflow.routine_runs")


def timed(action: Callable[[], list[str]], store: OpsStore, count: int) -> float:
    forget_verifications(store)
    started = time.perf_counter()
    statuses = action()
    seconds = time.perf_counter() - started
    if len(statuses) != count or set(statuses) != {"ok"}:
        raise RuntimeError(f"expected {count} ok sets, got {statuses}")
    return seconds


@contextmanager
def bench_setup(count: int) -> Iterator[tuple[Path, Path, OpsStore]]:
    """(full config, warm-up config, store): sets on disk, an embedded PostgreSQL, ``$OPSFLOW_HOME`` in a temp dir."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # A loaded 2-core machine can take longer than Prefect's default 20 s to start its temporary server.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    with tempfile.TemporaryDirectory(prefix="opsflow-bench-orchestration-") as tmp:
        base = Path(tmp)
        previous_home = os.environ.get("OPSFLOW_HOME")
        os.environ["OPSFLOW_HOME"] = str(base / "home")
        server = EmbeddedPostgres.start(base / "pg", keep_running=False)
        try:
            url = server.ensure_database("opsflow")
            store = OpsStore(url)
            store.migrate()
            root = base / "backups"
            write_sets(root, count, datetime.now(UTC))
            full = write_config(base / "opsflow.yaml", root, count, url)
            warm = write_config(base / "warm.yaml", root, WARM_SETS, url)
            yield full, warm, store
        finally:
            server.stop()
            if previous_home is None:
                os.environ.pop("OPSFLOW_HOME", None)
            else:
                os.environ["OPSFLOW_HOME"] = previous_home


def quiet() -> None:
    from opsflow.logs import quiet_terminal

    quiet_terminal()


def run(quick: bool) -> BenchResult:
    from flows.backup_verification import VERIFY_CONCURRENCY

    count = QUICK_SETS if quick else FULL_SETS
    with bench_setup(count) as (config, warm, store):
        quiet()
        started = time.perf_counter()
        through_prefect(warm)  # starts Prefect's temporary server (when no PREFECT_API_URL): not timed
        warm_up = time.perf_counter() - started
        direct(warm)
        flow_times, direct_times = [], []
        for _ in range(REPEATS):  # interleaved: both sides see the same machine
            flow_times.append(timed(lambda: through_prefect(config), store, count))
            direct_times.append(timed(lambda: direct(config), store, count))
        empty_flow, per_task_ms = prefect_floor(count)
    figure, baseline = min(flow_times), min(direct_times)
    ratio = figure / baseline
    overhead_ms = 1000 * (figure - baseline) / count
    notes = (
        f"{'QUICK: ' if quick else ''}{count} sets x {BACKUPS_PER_SET} small backups (gzip and plain, with sidecars) "
        f"on a filesystem storage, embedded PostgreSQL store; flow best of {REPEATS} "
        f"({', '.join(f'{t:.2f}' for t in flow_times)} s), direct best of {REPEATS} "
        f"({', '.join(f'{t:.2f}' for t in direct_times)} s); flow - direct = {overhead_ms:.1f} ms per set; "
        f"Prefect's own floor, measured here: an empty flow run {empty_flow:.2f} s, a no-op task run "
        f"{per_task_ms:.1f} ms ({count} on {VERIFY_CONCURRENCY} threads); "
        f"server start-up excluded: a {WARM_SETS}-set warm-up flow run first ({warm_up:.1f} s, starts the API "
        f"{'at ' + os.environ['PREFECT_API_URL'] if os.environ.get('PREFECT_API_URL') else 'temporary server'}), "
        f"ledger and results emptied before each timed run"
    )
    floor = empty_flow + per_task_ms * count / 1000
    if ratio > MAX_RATIO:
        notes += (
            f"; MISSED by {ratio - MAX_RATIO:.2f} ({figure - MAX_RATIO * baseline:.2f} s): Prefect's floor alone "
            f"(the empty flow run and {count} no-op task runs) is {floor:.2f} s, {floor / baseline:.1f}x the direct run"
        )
    if quick:
        notes += f"; --quick: {QUICK_SETS} sets instead of {FULL_SETS}"
    return BenchResult(
        name="orchestration",
        figure=figure,
        unit="s",
        baseline=baseline,
        baseline_name="the same per-set functions called directly",
        ratio=ratio,
        target=f"ratio <= {MAX_RATIO:g}",
        met=ratio <= MAX_RATIO,
        notes=notes,
    )


def profile(quick: bool, top: int = 30) -> str:
    """cProfile's top entries (cumulative, then own time) of one warm flow run."""
    count = QUICK_SETS if quick else FULL_SETS
    with bench_setup(count) as (config, warm, store):
        quiet()
        through_prefect(warm)
        forget_verifications(store)
        profilers: list[cProfile.Profile] = []

        def in_thread(*_: Any) -> None:  # every thread started from here on profiles itself (task runs)
            sys.setprofile(None)
            thread_profiler = cProfile.Profile()
            profilers.append(thread_profiler)
            thread_profiler.enable()

        profiler = cProfile.Profile()
        threading.setprofile(in_thread)
        started = time.perf_counter()
        profiler.enable()
        through_prefect(config)
        profiler.disable()
        seconds = time.perf_counter() - started
        threading.setprofile(None)  # type: ignore[arg-type]
        forget_verifications(store)
        direct_seconds = timed(lambda: direct(config), store, count)
    out = io.StringIO()
    out.write(f"flow run (profiled) {seconds:.2f} s, direct {direct_seconds:.2f} s, {count} sets\n")
    out.write("== the flow's own thread ==\n")
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_callees(r"_routine.py:\d+\(finish\)")
    out.write(f"== the {len(profilers)} threads it started (task runs, Prefect's services) ==\n")
    if profilers:
        threads = pstats.Stats(*profilers, stream=out)
        threads.sort_stats("cumulative").print_stats(top)
        threads.sort_stats("tottime").print_stats(top)
    return out.getvalue()


def main(argv: list[str]) -> None:
    quick = "--quick" in argv
    if "--profile" in argv:
        print(profile(quick))
    else:
        print(run(quick))


if __name__ == "__main__":
    main(sys.argv[1:])
