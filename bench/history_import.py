"""``opsflow probes import`` of 130,000 rows: a few seconds, close to a bare COPY.

Baseline: ``psql \\copy`` of the same file into a plain table with the same
columns — the floor for loading a CSV into PostgreSQL. opsflow also validates
every row first, dedups, creates partitions and skips rows already stored.
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


def run(quick: bool) -> BenchResult:
    repeats = 1 if quick else 3
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "probes.csv"
        _write_csv(path, ROWS)
        server = EmbeddedPostgres.start(Path(tmp) / "pg", keep_running=False)
        try:
            figures, baselines = [], []
            for _ in range(repeats):
                database = f"bench_{uuid.uuid4().hex[:8]}"
                ensure_database(server.url(), database)
                url = server.url(database)
                env = {**os.environ, "OPSFLOW_STORE_URL": url}
                # Migrations first, so the timing is the import alone.
                subprocess.run(
                    [sys.executable, "-c", f"from opsflow.store import OpsStore; OpsStore({url!r}).migrate()"],
                    check=True,
                )
                figures.append(_timed([sys.executable, "-m", "opsflow", "probes", "import", str(path)], env))
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
        finally:
            server.stop()
    figure, baseline = min(figures), min(baselines)
    return BenchResult(
        name="history-import",
        figure=figure,
        unit="s",
        baseline=baseline,
        baseline_name="psql \\copy into a plain table",
        ratio=figure / baseline,
        target=f"figure < {LIMIT_SECONDS:g} s",
        met=figure < LIMIT_SECONDS,
        notes=f"{ROWS} rows, best of {repeats}, whole command incl. interpreter start-up and validation",
    )
