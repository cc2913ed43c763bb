"""``opsflow check-config`` start-up: must answer in under 1.5 s (nothing heavy imported at start).

Baseline: the bare interpreter (``python -c pass``) on the same machine, same run.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import BenchResult, median_seconds

LIMIT_SECONDS = 1.5
CONFIG = """\
timezone: UTC
storages:
  local: {type: filesystem, path: /var/backups}
backups:
  - {name: orders-db, storage: local, prefix: orders/, max_age: 26h}
services:
  - {name: api, url: "http://127.0.0.1:9/health", slo: {availability: 99.9%}}
"""


def run(quick: bool) -> BenchResult:
    repeats = 3 if quick else 7
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "opsflow.yaml"
        config.write_text(CONFIG)
        command = [sys.executable, "-m", "opsflow", "check-config", "--config", str(config)]
        subprocess.run(command, check=True, capture_output=True)  # warm the page cache
        figure = median_seconds(lambda: subprocess.run(command, check=True, capture_output=True), repeats)
    baseline = median_seconds(lambda: subprocess.run([sys.executable, "-c", "pass"], check=True), repeats)
    return BenchResult(
        name="startup",
        figure=figure,
        unit="s",
        baseline=baseline,
        baseline_name="python -c pass",
        ratio=figure / baseline,
        target=f"figure < {LIMIT_SECONDS} s",
        met=figure < LIMIT_SECONDS,
        notes=f"median of {repeats} runs of `opsflow check-config`",
    )
