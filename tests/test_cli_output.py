"""What ``opsflow run`` prints: a readable table and one line per phase for a red run, and for a routine
that could not complete, one line (and with ``--json`` one JSON document) — never a traceback."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from opsflow.cli import run
from tests.conftest import free_port
from tests.test_red_run import REPO, red_config  # noqa: F401 - the fixture

PASSWORD = "s3cret-store-pw"


def test_a_store_that_stays_down_exits_3_with_one_json_document(
    prefect_api: None, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tasks.retry.BACKOFF_SECONDS", 0.01)
    config = tmp_path / "opsflow.yaml"
    config.write_text(f"store: {{url: 'postgresql://ops:{PASSWORD}@127.0.0.1:{free_port()}/ops'}}\n")
    code = run(["run", "backup-verification", "--config", str(config), "--json"])
    captured = capsys.readouterr()
    assert code == 3
    document = json.loads(captured.out)  # exactly one document
    assert document["routine"] == "backup-verification" and document["status"] == "error"
    assert document["items"] == [] and document["error"].startswith("ops store unreachable")
    assert PASSWORD not in captured.out + captured.err
    assert "Traceback" not in captured.err
    lines = [line for line in captured.err.splitlines() if line.startswith("opsflow:")]
    assert lines == [f"opsflow: backup-verification could not complete: {document['error']}"]


def test_a_red_run_prints_a_table_and_one_line_per_phase(prefect_api: None, red_config: Path) -> None:  # noqa: F811
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()), "PYTHONPATH": str(REPO)}
    env.pop("PREFECT_LOGGING_LEVEL", None)  # as a user has it: Prefect's INFO chatter must still stay out
    done = subprocess.run(
        [sys.executable, "-m", "opsflow", "run", "backup-verification", "--config", str(red_config)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 1, done.stderr
    out = done.stdout.splitlines()
    assert out[0].startswith("backup-verification: FAIL · as of ")
    stale = next(i for i, line in enumerate(out) if "stale-db" in line)
    assert out[stale].split()[0] == "fail" and "newest 40h" in out[stale]
    assert out[stale + 1].split()[:2] == ["fail", "fresh:"]
    assert any(line.split()[:2] == ["ok", "shop-db"] for line in out)
    assert "\x1b[" not in done.stdout  # not a terminal: plain text
    err = done.stderr.splitlines()
    assert "Traceback" not in done.stderr and "Finished in state" not in done.stderr
    phases = [line for line in err if line.startswith("INFO opsflow.run: backup-verification:")]
    assert [line.split(": ", 2)[2].split()[0] for line in phases] == ["config", "checked", "result", "published"]
    assert all(re.match(r"(INFO|WARNING|ERROR) [\w.]+: \S", line) for line in err), done.stderr
