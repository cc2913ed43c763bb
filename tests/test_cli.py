"""The `opsflow` command itself: entry point, exit codes, one-line errors, a light start-up."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from opsflow.cli import run

DATA = Path(__file__).parent / "data" / "configs"
OPSFLOW = Path(sys.executable).parent / "opsflow"
SPEC_ENV = {
    "ORDERS_DB_URL": "postgresql://postgres@/orders?host=/run/pg",
    "EVENTS_DB_URL": "postgresql://postgres:@/events?host=/tmp/pg",
}


def opsflow(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed console script, as a user would."""
    return subprocess.run([str(OPSFLOW), *args], capture_output=True, text=True, env=env, timeout=60)


def test_check_config_accepts_the_spec_example(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    done = opsflow("check-config", "--config", str(DATA / "spec_example.yaml"), env={**os.environ, **SPEC_ENV})
    assert done.returncode == 0, done.stderr
    assert "ok (2 storages, 1 backups, 1 databases, 1 services, 5 capacity, 1 quality)" in done.stdout


BROKEN = {
    "yaml syntax": ("services:\n  - name: api\n    url: [unclosed\n", 4, "yaml"),
    "unknown key": (
        "services:\n  - name: api\n    url: http://x\n    expect: {statuses: [200]}\n",
        4,
        "services.0.expect.statuses",
    ),
    "duration": (
        "storages:\n  l: {type: filesystem, path: /b}\nbackups:\n  - name: b\n    storage: l\n    prefix: a/\n"
        "    max_age: 6 hours\n",
        7,
        "backups.0.max_age",
    ),
    "undefined storage": ("backups:\n  - name: b\n    storage: s3main\n    prefix: a/\n", 3, "backups.0.storage"),
    "no url nor tcp": ("services:\n  - name: api\n    interval: 60s\n", 2, "services.0"),
    "availability": (
        "services:\n  - name: api\n    url: http://x\n    slo: {availability: 120%}\n",
        4,
        "services.0.slo.availability",
    ),
    "threshold": (
        "capacity:\n  - metric: m\n    source: {type: import}\n    threshold: lots\n",
        4,
        "capacity.0.threshold",
    ),
    "unset variable": ("store:\n  url: ${OPSFLOW_NOT_SET_ANYWHERE}\n", 2, "store.url"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_configs_exit_2_with_one_line_naming_key_and_line(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text, line, key = BROKEN[case]
    path = tmp_path / "ops.yaml"
    path.write_text(text)
    assert run(["check-config", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{path}:{line}: {key}: "), lines[0]
    assert "Traceback" not in err


def test_broken_config_through_the_console_script(tmp_path: Path) -> None:
    path = tmp_path / "ops.yaml"
    path.write_text("backups:\n  - name: b\n    storage: s3main\n    prefix: a/\n    max_age: 6 hours\n")
    done = opsflow("check-config", "--config", str(path))
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f"{path}:3: backups.0.storage: unknown storage 's3main' (no storages are defined)",
        f"{path}:5: backups.0.max_age: expected a duration like 90s, 15m, 6h or 30d, got '6 hours'",
    ]


def test_config_is_found_through_the_environment_then_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "opsflow.yaml").write_text("timezone: Europe/Berlin\n")
    monkeypatch.chdir(tmp_path)
    assert run(["check-config"]) == 0
    assert capsys.readouterr().out.startswith("opsflow.yaml: ok")
    env_config = tmp_path / "elsewhere.yaml"
    env_config.write_text("timezone: Mars/Olympus\n")
    monkeypatch.setenv("OPSFLOW_CONFIG", str(env_config))
    assert run(["check-config"]) == 2
    assert capsys.readouterr().err.startswith(f"{env_config}:1: timezone: ")


def test_missing_config_named_explicitly_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["check-config", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "file not found" in capsys.readouterr().err


def test_bad_usage_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["no-such-command"]) == 2
    assert run([]) == 2
    assert run(["probes"]) == 2
    assert "usage: opsflow" in capsys.readouterr().err


def test_start_up_imports_nothing_heavy() -> None:
    # The promise behind "check-config answers in under 1.5 s" (timed in bench/startup.py).
    probe = (
        "import sys; from opsflow.cli import run; "
        f"code = run(['check-config', '--config', {str(DATA / 'spec_example.yaml')!r}]); "
        "heavy = [m for m in ('prefect', 'pandas', 'great_expectations', 'boto3', 'numpy') if m in sys.modules]; "
        "print(code, heavy)"
    )
    import os

    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env={**os.environ, **SPEC_ENV}, timeout=60
    )
    assert done.stdout.strip().splitlines()[-1] == "0 []", done.stderr


def test_config_may_come_before_the_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "ops.yaml"
    config.write_text("timezone: Europe/Berlin\n")
    assert run(["--config", str(config), "check-config"]) == 0
    assert capsys.readouterr().out.startswith(f"{config}: ok")
    other = tmp_path / "other.yaml"
    other.write_text("timezone: [\n")
    assert run(["--config", str(config), "check-config", "--config", str(other)]) == 2  # the later one wins


def test_store_stop_stops_the_embedded_store_as_root_too(capsys: pytest.CaptureFixture[str]) -> None:
    import psutil

    from opsflow.config import Config
    from opsflow.embedded import home_dir
    from opsflow.store import OpsStore

    store = OpsStore.open(Config())  # starts the embedded server under $OPSFLOW_HOME, left running
    pid = int((home_dir() / "pgdata" / "postmaster.pid").read_text().split()[0])
    assert psutil.pid_exists(pid) and store.schema_version() > 0
    assert run(["store", "stop"]) == 0
    assert "embedded PostgreSQL stopped" in capsys.readouterr().out
    # Gone (or, when this process happened to start it, a zombie waiting for us to reap it).
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert run(["store", "stop"]) == 0
    assert "no embedded PostgreSQL running" in capsys.readouterr().out
