"""``$OPSFLOW_HOME`` is one place for every run of the system, whatever a run's working directory.

Its default, ``./.opsflow``, is read once against the directory a command starts in and handed on as
an absolute path: ``opsflow serve`` to the runs it starts (they start in the project directory),
``opsflow deploy`` into every deployment's ``job_variables.env`` (a worker's runs start wherever its
pull step says). A run started elsewhere then finds the same embedded store, spool and work directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from deployments.runner import PROJECT, serve_environment
from opsflow.cli import run
from tests.test_schedules import _environ, _post, running_prefect_server

#: Where a run puts its local state, by the code a run uses: the probe spool, the embedded store's
#: data directory (as ``resolve_store_url`` starts it), the run's work directory.
WHERE_A_RUN_KEEPS_STATE = """
import json
from opsflow.config import Config
from opsflow.embedded import home_dir
from tasks.resources import Resources
resources = Resources.from_config(Config())
print(json.dumps([str(resources.spool.path), str(home_dir() / "pgdata"), str(resources.workdir)]))
"""


def state_paths(home: Path) -> list[str]:
    return [str(home / "spool" / "probe_results.jsonl"), str(home / "pgdata"), str(home / "work")]


def where_a_run_keeps_state(cwd: Path, environ: dict[str, str]) -> list[str]:
    """The state paths of a run process started in ``cwd`` with ``environ``."""
    done = subprocess.run(
        [sys.executable, "-c", WHERE_A_RUN_KEEPS_STATE],
        cwd=cwd,
        env=environ | {"PYTHONPATH": str(PROJECT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return list(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.fixture
def ops_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The directory an operator runs ``opsflow`` in, with ``$OPSFLOW_HOME`` unset (the default)."""
    ops = tmp_path / "ops"
    ops.mkdir()
    monkeypatch.chdir(ops)  # also restores the working directory afterwards
    monkeypatch.delenv("OPSFLOW_HOME", raising=False)
    return ops


def test_served_runs_use_the_home_of_the_directory_serve_started_in(
    ops_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPSFLOW_CONFIG", raising=False)
    serve_environment(None)  # what `opsflow serve` does before it serves
    assert Path.cwd() == PROJECT  # its runs start in the project directory
    assert os.environ["OPSFLOW_HOME"] == str(ops_dir / ".opsflow")
    # A served run inherits the runner's environment; wherever it starts, its state is the CLI's.
    elsewhere = tmp_path / "per-run-dir"
    elsewhere.mkdir()
    for cwd in (PROJECT, elsewhere):
        assert where_a_run_keeps_state(cwd, dict(os.environ)) == state_paths(ops_dir / ".opsflow")


def test_a_cli_command_anchors_a_relative_home_once(ops_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPSFLOW_HOME", "state")
    config = ops_dir / "opsflow.yaml"
    config.write_text("{}\n")
    assert run(["check-config", "--config", str(config)]) == 0
    assert os.environ["OPSFLOW_HOME"] == str(ops_dir / "state")


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    home = tmp_path_factory.mktemp("prefect-home-opsflow-home")
    with running_prefect_server(home) as api_url:
        yield api_url, home


def test_deploy_hands_the_absolute_home_to_every_deployments_runs(
    prefect_server: tuple[str, Path], ops_dir: Path, tmp_path: Path
) -> None:
    api_url, prefect_home = prefect_server
    config = ops_dir / "opsflow.yaml"
    config.write_text("timezone: UTC\n")
    environ = {key: value for key, value in _environ(api_url, prefect_home).items() if key != "OPSFLOW_HOME"}
    done = subprocess.run(
        [sys.executable, "-m", "opsflow", "deploy", "--config", str(config)],
        cwd=ops_dir,
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    deployments = _post(api_url, "/deployments/filter", {})
    assert deployments
    for deployment in deployments:
        assert deployment["work_pool_name"] == "opsflow"
        assert deployment["job_variables"]["env"]["OPSFLOW_HOME"] == str(ops_dir / ".opsflow"), deployment["name"]
    # A process worker starts the run's process with that env added to its own, in the pull step's
    # directory (the project) or any other: the run keeps its state where the CLI does.
    run_env = environ | deployments[0]["job_variables"]["env"]
    elsewhere = tmp_path / "per-run-dir"
    elsewhere.mkdir()
    for cwd in (PROJECT, elsewhere):
        assert where_a_run_keeps_state(cwd, run_env) == state_paths(ops_dir / ".opsflow")
