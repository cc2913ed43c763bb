"""Shards of the uptime probe (SPEC §5 ``--shard K/N``) on real components: loopback HTTP services,
the ops store on PostgreSQL, Prefect flow runs; and sharded schedules of one deployment."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from deployments.runner import prefect_schedules, read_deployments
from flows.uptime_probe import shard_spool
from opsflow.cli import run
from opsflow.shards import in_shard, shard_of
from opsflow.spool import probe_spool
from opsflow.store import OpsStore
from tests.http_targets import HttpTarget
from tests.receiver import HttpReceiver
from tests.test_uptime_probe import refuse_probe_writes

REPO = Path(__file__).resolve().parent.parent
NAMES = [f"svc-{n}" for n in range(12)]


def test_a_services_shard_is_the_same_in_every_process_and_the_split_is_about_even() -> None:
    names = [f"service-{n}" for n in range(10_000)]
    here = [shard_of(name, 4) for name in names[:50]]
    # Another interpreter, another hash seed: the same shards (never Python's salted hash()).
    code = (
        "import json, sys\n"
        "from opsflow.shards import shard_of\n"
        "print(json.dumps([shard_of(n, 4) for n in sys.argv[1:]]))"
    )
    there = subprocess.run(
        [sys.executable, "-c", code, *names[:50]],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        env={"PYTHONHASHSEED": "123", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
    )
    assert json.loads(there.stdout) == here
    sizes = Counter(shard_of(name, 4) for name in names)
    assert set(sizes) == {1, 2, 3, 4}
    assert all(abs(size - 2500) < 250 for size in sizes.values()), sizes  # within 10% of even
    # Every service in exactly one shard, whatever N.
    for shards in (1, 2, 3, 7):
        parts = [in_shard(names, k, shards, key=str) for k in range(1, shards + 1)]
        assert sorted(n for part in parts for n in part) == sorted(names)


@pytest.mark.parametrize("given", ["0/2", "3/2", "1/0", "x", "1/2/3", "-1/2", "2", " /2"])
def test_a_bad_shard_is_one_line_and_exit_2(given: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["run", "uptime-probe", f"--shard={given}"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--shard" in err, err


def test_shard_is_only_for_the_uptime_probe(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["run", "sla-report", "--shard", "1/2"]) == 2
    assert capsys.readouterr().err.strip() == "--shard is only for uptime-probe, not sla-report"


def config_file(path: Path, urls: dict[str, str], receiver: HttpReceiver | None = None) -> Path:
    lines = ["services:"]
    lines += [f"  - {{name: {name}, url: '{url}', timeout: 2s, failure_threshold: 1}}" for name, url in urls.items()]
    if receiver is not None:
        lines += ["notifications:", f"  webhook: {{url: '{receiver.url('/hook')}'}}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_shard_runs_of_one_round_probe_every_service_once_and_keep_their_results_apart(
    prefect_api: None,
    tmp_path: Path,
    pg_url: str,
    store: OpsStore,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("OPSFLOW_STORE_URL", pg_url)
    as_of = datetime.now(UTC).replace(microsecond=0).isoformat()  # one minute's round: one instant
    with HttpTarget() as target:
        config = config_file(tmp_path / "opsflow.yaml", {name: target.url(f"/{name}") for name in NAMES})
        for k in (1, 2, 3):  # the first round, all at one instant (as the schedules of one minute)
            assert run(["run", "uptime-probe", "--config", str(config), "--shard", f"{k}/3", "--as-of", as_of]) == 0
        for k in (3, 1, 2):  # the next round, at its own "now", in any order
            assert run(["run", "uptime-probe", "--config", str(config), "--shard", f"{k}/3"]) == 0
        capsys.readouterr()
        # What the services saw: each asked exactly once per round.
        probed = [path.lstrip("/") for path, _ in target.requests]
    assert Counter(probed) == dict.fromkeys(NAMES, 2)
    assert store.count_probe_results() == 2 * len(NAMES)
    with store.connection() as conn:
        per_service = dict(conn.execute("select service, count(*) from opsflow.probe_results group by service"))
        scopes = conn.execute(
            """select scope, result from opsflow.routine_runs
               where routine = 'uptime-probe' and as_of = %s order by scope""",
            (datetime.fromisoformat(as_of),),
        ).fetchall()
    assert per_service == dict.fromkeys(NAMES, 2)
    # The three results of the same instant are three rows (distinct scopes), each with its shard's items.
    assert [scope for scope, _ in scopes] == ["shard 1/3", "shard 2/3", "shard 3/3"]
    items = [[item["name"] for item in result["items"]] for _, result in scopes]
    assert sorted(n for names in items for n in names) == sorted(NAMES)
    for k, names in enumerate(items, start=1):
        assert names == [n for n in NAMES if shard_of(n, 3) == k]
    assert set(store.probe_states()) == set(NAMES)
    # The newest result of the routine (the status page's, the digest's) is the newest round: every shard's items.
    newest = store.latest_results(["uptime-probe"])["uptime-probe"]
    assert sorted(item.name for item in newest.items) == sorted(NAMES)
    assert newest.as_of > datetime.fromisoformat(as_of)  # the second round, not the first


def test_a_shard_tracks_and_alerts_only_its_own_services(
    prefect_api: None,
    tmp_path: Path,
    pg_url: str,
    store: OpsStore,
    receiver: HttpReceiver,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("OPSFLOW_STORE_URL", pg_url)
    first = [n for n in NAMES if shard_of(n, 2) == 1]
    second = [n for n in NAMES if shard_of(n, 2) == 2]
    with HttpTarget() as up, HttpTarget() as down:
        down.down = True  # every service of shard 2 answers 503
        urls = {n: (up if n in first else down).url(f"/{n}") for n in NAMES}
        config = config_file(tmp_path / "opsflow.yaml", urls, receiver)
        assert run(["run", "uptime-probe", "--config", str(config), "--shard", "2/2", "--json"]) == 1
        failed = json.loads(capsys.readouterr().out)
        assert sorted(i["name"] for i in failed["items"]) == sorted(second)
        assert all(i["metrics"]["incident_open"] for i in failed["items"])
        opened = {i["service"]: i["opened_at"] for i in store.incidents(open_only=True)}
        assert sorted(opened) == sorted(second)
        states = store.probe_states()
        triggers = sorted(h.json()["item"] for h in receiver.to("/hook"))
        assert triggers == sorted(second)

        # Shard 1 (all up) runs next: shard 2's failure runs, incidents and alerts are left as they are.
        assert run(["run", "uptime-probe", "--config", str(config), "--shard", "1/2", "--json"]) == 0
        capsys.readouterr()
    assert {i["service"]: i["opened_at"] for i in store.incidents(open_only=True)} == opened
    after = store.probe_states()
    assert {n: after[n] for n in second} == {n: states[n] for n in second}
    assert all(after[n]["consecutive_failures"] == 0 for n in first)
    assert sorted(h.json()["item"] for h in receiver.to("/hook")) == triggers  # no resolve, no new alert
    alert_states = {row["item"]: row for row in store.alert_states("uptime-probe")}
    assert all(alert_states[n]["is_open"] for n in second)
    assert not any(alert_states[n]["is_open"] for n in first)


def test_each_shard_spools_and_replays_its_own_results(
    prefect_api: None,
    tmp_path: Path,
    pg_url: str,
    store: OpsStore,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("OPSFLOW_STORE_URL", pg_url)
    first = [n for n in NAMES if shard_of(n, 2) == 1]
    second = [n for n in NAMES if shard_of(n, 2) == 2]
    spool_2 = shard_spool(probe_spool(), 2, 2)
    assert spool_2.path.name == "probe_results.shard-2-of-2.jsonl"
    with HttpTarget() as up, HttpTarget() as down:
        down.down = True
        urls = {n: (up if n in first else down).url(f"/{n}") for n in NAMES}
        config = config_file(tmp_path / "opsflow.yaml", urls)
        refuse_probe_writes(store, True)
        assert run(["run", "uptime-probe", "--config", str(config), "--shard", "2/2"]) == 3
        assert f"{len(second)} probe results spooled" in capsys.readouterr().err
        spooled = spool_2.path.read_text()
        refuse_probe_writes(store, False)

        # Shard 1 leaves shard 2's spool alone: its rows belong to shard 2's incident tracking.
        assert run(["run", "uptime-probe", "--config", str(config), "--shard", "1/2"]) == 0
        assert spool_2.path.read_text() == spooled and not probe_spool().path.exists()
        assert store.count_probe_results() == len(first)

        down.down = False
        assert run(["run", "uptime-probe", "--config", str(config), "--shard", "2/2"]) == 0
        capsys.readouterr()
    assert not spool_2.path.exists()
    assert store.count_probe_results() == len(first) + 2 * len(second)
    # The spooled failures opened an incident per service of shard 2 (threshold 1), closed by the recovery.
    incidents = store.incidents()
    assert sorted(i["service"] for i in incidents) == sorted(second)
    assert all(i["closed_at"] is not None for i in incidents)


def sharded_example(tmp_path: Path) -> Path:
    """prefect.yaml with its commented sharded ``every-minute`` example switched on (beside the original)."""
    lines = (REPO / "prefect.yaml").read_text().splitlines()
    start = lines.index("  # - <<: *deployment")
    end = next(i for i in range(start, len(lines)) if not lines[i].strip())
    example = [line[:2] + line[4:] if line.startswith("  # ") else "" for line in lines[start:end]]
    path = tmp_path / "prefect.yaml"
    path.write_text("\n".join([*lines[:start], *example, *lines[end:]]) + "\n")
    return path


def test_sharded_schedules_of_one_deployment_carry_their_parameters(tmp_path: Path) -> None:
    specs = [
        spec
        for spec in read_deployments(sharded_example(tmp_path), timezone="Europe/Berlin")
        if spec.name == "every-minute" and len(spec.schedules) == 2
    ]
    assert len(specs) == 1
    schedules = prefect_schedules(specs[0])
    assert [s.parameters for s in schedules] == [{"shard": 1, "shards": 2}, {"shard": 2, "shards": 2}]
    assert [s.slug for s in schedules] == ["shard-1-of-2", "shard-2-of-2"]
    assert all(s.interval.total_seconds() == 60 for s in schedules)
    assert all(s.timezone == "Europe/Berlin" for s in schedules)
    assert specs[0].concurrency_limit == {"limit": 2, "collision_strategy": "CANCEL_NEW"}
    # The active every-minute deployment is unchanged: one schedule, no per-schedule parameters.
    (plain,) = [s for s in read_deployments() if s.name == "every-minute"]
    (schedule,) = prefect_schedules(plain)
    assert schedule.parameters == {} and schedule.slug is None
