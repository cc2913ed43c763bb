"""``opsflow probes import`` of 130,000 rows: a few seconds, close to a bare COPY, in flat memory.

Baseline: ``psql \\copy`` of the same file into a plain table with the same
columns — the floor for loading a CSV into PostgreSQL. opsflow also validates
every row first, dedups, creates partitions and skips rows already stored.

Memory (SPEC §7, an import streams): the import command's peak RSS for the
file and for a file 10 times its size, measured in the same run; the larger
may take at most :data:`MAX_PEAK_GROWTH` times the smaller's.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import tempfile
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.common import BenchResult
from opsflow.embedded import EmbeddedPostgres, client_bin, ensure_database

ROWS = 130_000
LIMIT_SECONDS = 5.0
#: Peak RSS of importing the 10x file over that of the 1x file (flat: the same, give or take noise).
MAX_PEAK_GROWTH = 1.3
#: The 1x file of the memory measurement under ``--quick`` (the 10x is ten times that).
QUICK_MEMORY_ROWS = 30_000


def _write_csv(path: Path, rows: int) -> None:
    start = datetime(2026, 10, 1, tzinfo=UTC)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["service", "checked_at", "ok", "latency_ms", "status_code", "error"])
        for index in range(rows):
            ok = index % 101 != 0
            writer.writerow(
                [
                    f"svc-{index % 90}",
                    (start + timedelta(seconds=60 * (index // 90))).isoformat(),
                    "true" if ok else "false",
                    f"{5 + index % 300}.25" if ok else "",
                    200 if ok else 503,
                    "" if ok else "HTTP 503",
                ]
            )


def _timed(command: list[str], env: dict[str, str]) -> float:
    import time

    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env=env)
    return time.perf_counter() - started


# Runs the CLI and, at exit, prints its own VmHWM: the peak of this image alone. (``wait4``'s ru_maxrss is
# not: Linux carries the parent's peak into a child across fork and exec, so after another benchmark has
# grown this process, every child would report at least that.)
_MEASURED_CLI = (
    "import atexit, sys\n"
    "def _peak():\n"
    "    status = open('/proc/self/status').read()\n"
    "    print('VmHWM_kB', status.split('VmHWM:')[1].split()[0], file=sys.stderr)\n"
    "atexit.register(_peak)\n"
    "sys.argv = ['opsflow', *sys.argv[1:]]\n"
    "from opsflow.cli import main\n"
    "main()\n"
)


def peak_rss_mb(command: list[str], env: dict[str, str]) -> float:
    """Run ``opsflow`` with ``command``'s arguments (after ``-m opsflow``) to the end; its peak resident
    memory in MB, as the process itself measured it (``VmHWM``)."""
    arguments = command[command.index("opsflow") + 1 :] if "opsflow" in command else command
    done = subprocess.run(
        [sys.executable, "-c", _MEASURED_CLI, *arguments], capture_output=True, text=True, env=env, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{command} exited {done.returncode}: {(done.stdout + done.stderr)[-2000:]}")
    peaks = [line.split()[1] for line in done.stderr.splitlines() if line.startswith("VmHWM_kB ")]
    if not peaks:
        raise RuntimeError(f"{command}: no peak memory reported")
    return int(peaks[-1]) / 1024


def _fresh_store(server: EmbeddedPostgres) -> dict[str, str]:
    """The environment of an import into a new, migrated database of ``server``."""
    database = f"bench_{uuid.uuid4().hex[:8]}"
    ensure_database(server.url(), database)
    url = server.url(database)
    # Migrations first, so the timing is the import alone.
    subprocess.run(
        [sys.executable, "-c", f"from opsflow.store import OpsStore; OpsStore({url!r}).migrate()"],
        check=True,
    )
    return {**os.environ, "OPSFLOW_STORE_URL": url}


def run(quick: bool) -> BenchResult:
    repeats = 1 if quick else 3
    memory_rows = QUICK_MEMORY_ROWS if quick else ROWS
    import_command = [sys.executable, "-m", "opsflow", "probes", "import"]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "probes.csv"
        _write_csv(path, ROWS)
        server = EmbeddedPostgres.start(Path(tmp) / "pg", keep_running=False)
        try:
            figures, baselines = [], []
            for _ in range(repeats):
                env = _fresh_store(server)
                url = env["OPSFLOW_STORE_URL"]
                figures.append(_timed([*import_command, str(path)], env))
                psql = [str(client_bin("psql")), url, "-v", "ON_ERROR_STOP=1", "-q"]
                subprocess.run(
                    [
                        *psql,
                        "-c",
                        "create table raw_probes (service text, checked_at timestamptz, ok boolean,"
                        " latency_ms double precision, status_code integer, error text)",
                    ],
                    check=True,
                )
                baselines.append(_timed([*psql, "-c", f"\\copy raw_probes from '{path}' csv header"], env))
            # Peak memory of the whole command: the file, then one ten times its size, each into a fresh store.
            peaks, sizes = [], []
            for rows in (memory_rows, 10 * memory_rows):
                sample = Path(tmp) / f"probes-{rows}.csv"
                if rows == ROWS:
                    sample = path
                else:
                    _write_csv(sample, rows)
                sizes.append(sample.stat().st_size / 1e6)
                peaks.append(peak_rss_mb([*import_command, str(sample)], _fresh_store(server)))
                if sample != path:
                    sample.unlink()
        finally:
            server.stop()
    figure, baseline = min(figures), min(baselines)
    growth = peaks[1] / peaks[0]
    return BenchResult(
        name="history-import",
        figure=figure,
        unit="s",
        baseline=baseline,
        baseline_name="psql \\copy into a plain table",
        ratio=figure / baseline,
        target=f"figure < {LIMIT_SECONDS:g} s, peak RSS 10x file <= {MAX_PEAK_GROWTH:g} x 1x file",
        met=figure < LIMIT_SECONDS and growth <= MAX_PEAK_GROWTH,
        notes=(
            f"{ROWS} rows, best of {repeats}, whole command incl. interpreter start-up and validation; "
            f"peak RSS {peaks[0]:.0f} MB for {memory_rows} rows ({sizes[0]:.0f} MB file), "
            f"{peaks[1]:.0f} MB for {10 * memory_rows} rows ({sizes[1]:.0f} MB file): x{growth:.2f}"
            + (" (--quick: smaller memory files)" if quick else "")
        ),
    )
