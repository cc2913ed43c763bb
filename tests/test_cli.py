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


# -- bad input: one line naming the problem, exit 2, never a traceback (SPEC §7) ------------------


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("--period", "2026-02-30..2026-03-01", "--period: no such date: '2026-02-30'"),
        ("--period", "2026-03-01..2026-02-30", "--period: no such date: '2026-02-30'"),
        ("--period", "9999-12", "--period: '9999-12': year 9999 is outside 1970\u20132200"),
        ("--period", "0000-01", "--period: '0000-01': year 0 is outside 1970\u20132200"),
        ("--period", "2206-01-01..2206-02-01", "--period: '2206-01-01': year 2206 is outside 1970\u20132200"),
        (
            "--period",
            "0001-01-01T00:00:00+01:00..2026-01-01",
            "--period: '0001-01-01T00:00:00+01:00': year 1 is outside 1970\u20132200",
        ),
        ("--as-of", "0001-01-01T00:00:00+00:00", "--as-of: year 1 is outside 1970\u20132200"),
        ("--as-of", "9999-12-31T23:59:59", "--as-of: year 9999 is outside 1970\u20132200"),
        ("--as-of", "2026-02-30", "--as-of: expected an ISO 8601 time like 2026-11-22T06:00:00Z, got '2026-02-30'"),
    ],
)
def test_impossible_periods_and_times_are_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, value: str, expected: str
) -> None:
    config = tmp_path / "opsflow.yaml"
    config.write_text("{}\n")
    assert run(["run", "sla-report", "--config", str(config), option, value]) == 2
    assert capsys.readouterr().err.splitlines() == [expected]


@pytest.mark.parametrize("option", ["--from", "--to"])
def test_export_times_outside_1970_2200_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str
) -> None:
    assert run(["probes", "export", option, "2206-01-01T00:00:00Z"]) == 2
    assert capsys.readouterr().err.splitlines() == [f"{option}: year 2206 is outside 1970\u20132200"]


def billion_laughs(levels: int = 9, fanout: int = 9) -> str:
    lines = ["a0: &a0 [" + ", ".join(['"lol"'] * fanout) + "]"]
    lines += [f"a{n}: &a{n} [" + ", ".join([f"*a{n - 1}"] * fanout) + "]" for n in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


def test_a_yaml_alias_bomb_is_refused_by_size_quickly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import time

    path = tmp_path / "bomb.yaml"
    path.write_text(billion_laughs())
    started = time.monotonic()
    assert run(["check-config", "--config", str(path)]) == 2
    assert time.monotonic() - started < 2
    assert capsys.readouterr().err.splitlines() == [
        f"{path}: yaml: too big: more than 100,000 values once aliases are expanded (an alias bomb?)"
    ]


def test_aliases_within_the_size_limit_still_load(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "ops.yaml"
    path.write_text(
        "services:\n"
        "  - &probe {name: api0, url: 'http://127.0.0.1/0', interval: 60s, timeout: 5s}\n"
        + "".join(f"  - {{<<: *probe, name: api{n}, url: 'http://127.0.0.1/{n}'}}\n" for n in range(1, 500))
    )
    assert run(["check-config", "--config", str(path)]) == 0, capsys.readouterr().err
    assert "500 services" in capsys.readouterr().out


# -- the ops store URL: never echoed, whatever it holds (SPEC §7) ----------------------------------

UNPARSABLE_STORE_URLS = [
    "postgresql://ops:Hunter%zz2Secret@127.0.0.1:9/opsflow",
    "postgresql://ops:Hunter@2Secret@127.0.0.1:9/opsflow",
]


@pytest.mark.parametrize("url", UNPARSABLE_STORE_URLS)
def test_a_store_url_that_does_not_parse_never_shows_its_password(
    prefect_api: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    url: str,
) -> None:
    import json
    import logging

    monkeypatch.setattr("tasks.retry.BACKOFF_SECONDS", 0.01)
    monkeypatch.setenv("OPSFLOW_STORE_URL", url)
    monkeypatch.chdir(tmp_path)  # no opsflow.yaml: the URL comes from the environment alone
    with caplog.at_level(logging.DEBUG):
        code = run(["run", "backup-verification", "--json"])
    captured = capsys.readouterr()
    assert code in (2, 3)
    logged = "\n".join(f"{record.getMessage()}\n{record.exc_text or ''}" for record in caplog.records)
    for text in (captured.out, captured.err, logged):
        for part in ("Hunter", "2Secret", "zz2"):
            assert part not in text
    assert "Traceback" not in captured.err + logged
    said = [line for line in captured.err.splitlines() if line.startswith("opsflow:")]  # not the log lines
    assert len(said) == 1 and "ops store URL" in said[0], captured.err
    document = json.loads(captured.out)
    assert document["status"] == "error" and "ops store URL" in document["error"]
    attempts = [record for record in caplog.records if "attempt" in record.getMessage()]
    assert attempts == []  # a URL that does not parse is not retried
