"""``ops-digest`` on real stored runs (SPEC §5): counts by routine, failing items, incidents, what expires,
and the dead-schedule check ``ran`` — delivered to a real SMTP server and a loopback Slack receiver.

The schedules come from ``prefect.yaml`` here (nothing registered), or from the Prefect server when a
deployment of the routine is registered there (the test harness's server).
"""

from __future__ import annotations

import email
import json
from datetime import UTC, datetime, timedelta
from email.message import Message
from pathlib import Path
from typing import Any

import pytest

from opsflow.cli import run
from opsflow.config import Digests, parse_config
from opsflow.prefect_yaml import render_prefect_yaml, schedules_by_flow
from opsflow.results import Check, Item, RoutineResult
from opsflow.store import OpsStore
from tasks.digest import ScheduleSource, configured_routines, ran_check, registered_schedules_task, runway_lines
from tasks.periods import day_period, parse_period
from tests.receiver import HttpReceiver

BERLIN = "Europe/Berlin"


# -- the dead-schedule check, pure ------------------------------------------------------------------


def yaml_source(flow: str, since: datetime | None = datetime(2026, 1, 1, tzinfo=UTC)) -> ScheduleSource:
    return ScheduleSource("prefect.yaml", tuple(schedules_by_flow(timezone=BERLIN)[flow]), since)


def test_a_configured_routine_whose_schedule_fired_without_a_run_is_a_dead_schedule() -> None:
    from zoneinfo import ZoneInfo

    thursday = day_period(datetime(2026, 12, 3).date(), ZoneInfo(BERLIN))
    source = yaml_source("backup-verification")  # daily at 06:00 Berlin

    fired, dead = ran_check("backup-verification", True, 0, source, thursday)
    assert (fired, dead.status) == (1, "fail")
    assert "2026-12-03T05:00:00Z" in dead.detail and "no run recorded" in dead.detail
    assert ran_check("backup-verification", True, 1, source, thursday)[1].status == "ok"
    # Nothing to check in the config: never a finding, whatever the schedule says.
    assert ran_check("backup-verification", False, 0, source, thursday)[1].status == "ok"
    # Set up after the day's only run was due: nothing was missed.
    late = yaml_source("backup-verification", since=datetime(2026, 12, 3, 12, tzinfo=UTC))
    assert ran_check("backup-verification", True, 0, late, thursday)[1].status == "ok"
    # Weekly on Mondays: not due on a Thursday; due on a Monday.
    assert ran_check("capacity-trends", True, 0, yaml_source("capacity-trends"), thursday)[1].status == "ok"
    monday = day_period(datetime(2026, 11, 30).date(), ZoneInfo(BERLIN))
    assert ran_check("capacity-trends", True, 0, yaml_source("capacity-trends"), monday)[1].status == "fail"
    # An on-demand flow without a schedule is never dead.
    assert ran_check("dr-drill", True, 0, ScheduleSource("prefect.yaml", (), None), thursday)[1].status == "ok"


def test_a_schedule_due_just_before_the_end_of_the_period_is_not_yet_a_dead_schedule() -> None:
    period = parse_period("2026-12-03T00:00:00Z..2026-12-03T06:10:00Z", datetime(2026, 12, 3, 7, tzinfo=UTC), UTC)
    source = ScheduleSource("prefect.yaml", ({"cron": "0 6 * * *", "timezone": "UTC"},), None)
    assert ran_check("backup-verification", True, 0, source, period)[1].status == "ok"  # 10 min before the end


def test_what_counts_as_configured_follows_the_config() -> None:
    config = parse_config(
        "capacity:\n  - {metric: tickets, source: {type: import}, threshold: 10}\n"
        "expiry:\n  items: [{name: contract, expires: 2027-03-31}]\n"
        "digests:\n  daily: {to: [ops@example.com]}\n"
        "notifications:\n  email: {smtp_host: localhost, sender: ops@example.com}\n"
    )
    configured = configured_routines(config)
    assert configured["capacity-trends"] and not configured["capacity-collect"]  # imported history only
    assert configured["expiry-check"] and configured["ops-digest"]
    assert not configured["backup-verification"] and not configured["uptime-probe"] and not configured["dr-drill"]


def test_the_digest_schedules_run_at_the_configured_times() -> None:
    digests = Digests.model_validate({"daily": {"at": "07:15"}, "weekly": {"day": "sunday", "at": "18:00"}})
    plain = render_prefect_yaml(timezone=BERLIN)
    rendered = render_prefect_yaml(timezone=BERLIN, digests=digests)
    crons = {
        entry["name"]: entry["schedules"][0]["cron"]
        for entry in rendered["deployments"]
        if entry["entrypoint"].endswith(":ops_digest")
    }
    assert crons == {"daily": "15 7 * * *", "weekly": "0 18 * * 0"}
    others = [e for e in rendered["deployments"] if not e["entrypoint"].endswith(":ops_digest")]
    assert others == [e for e in plain["deployments"] if not e["entrypoint"].endswith(":ops_digest")]


def test_a_runway_that_shortened_is_listed_and_one_that_grew_is_not() -> None:
    def trends(days: dict[str, float | None]) -> RoutineResult:
        items = [Item(name=name, metrics={"days_to_threshold": d, "crossing_date": None}) for name, d in days.items()]
        return RoutineResult(routine="capacity-trends", as_of=datetime(2026, 12, 1, tzinfo=UTC), items=items)

    lines = runway_lines(
        trends({"disk": 20.0, "cpu": 90.0, "db": 30.0}), trends({"disk": 40.0, "cpu": 80.0, "db": None})
    )
    assert [(line.metric, line.previous_days_to_threshold) for line in lines] == [("disk", 40.0), ("db", None)]


# -- on real stored runs, delivered -------------------------------------------------------------------


def digest_config(tmp_path: Path, smtp_server: Any, receiver: HttpReceiver) -> Path:
    config = tmp_path / "opsflow.yaml"
    config.write_text(
        "timezone: UTC\n"
        f"storages: {{local: {{type: filesystem, path: '{tmp_path / 'backups'}'}}}}\n"
        "backups:\n  - {name: orders-db, storage: local, prefix: orders/}\n"
        "services:\n  - {name: api, url: 'http://127.0.0.1:9/health'}\n"
        "capacity:\n  - {metric: root-disk, source: {type: filesystem, path: /}, threshold: 95%}\n"
        "expiry:\n  items: [{name: pagerduty-contract, expires: 2030-01-01}]\n"
        "notifications:\n"
        f"  slack: {{webhook_url: '{receiver.url('/slack')}'}}\n"
        f"  email: {{smtp_host: {smtp_server.host}, smtp_port: {smtp_server.port}, starttls: false, "
        "sender: opsflow@example.com, to: [oncall@example.com]}\n"
        "digests:\n"
        "  daily: {to: [ops@example.com], slack: true}\n"
        "  weekly: {to: [ops-leads@example.com], slack: false}\n"
    )
    return config


def result(routine: str, at: datetime, *items: Item, scope: str = "") -> tuple[RoutineResult, str]:
    return RoutineResult(routine=routine, as_of=at, flow_run_id=None, items=list(items)), scope


def age(store: OpsStore) -> None:
    """A store set up a month ago: every schedule of prefect.yaml was due in the period."""
    with store.connection() as conn:
        conn.execute("update opsflow.schema_version set applied_at = now() - interval '30 days'")


def seed(store: OpsStore, start: datetime) -> None:
    """A day of runs: backups failing at the end, probes and reports fine, no capacity sample at all."""
    age(store)
    ok = Item(name="orders-db", checks=[Check(check="fresh", status="ok")])
    stale = Item(name="orders-db", checks=[Check(check="fresh", status="fail", detail="newest backup is 31h old")])
    expiring = Item(
        name="mail-tls",
        checks=[Check(check="expiry", status="warn", detail="expires in 12 days")],
        metrics={"expires_at": "2026-12-17T00:00:00+00:00", "days_left": 12, "source": "tls"},
    )
    runs = [
        result("backup-verification", start + timedelta(hours=1), ok),
        result("backup-verification", start + timedelta(hours=5), stale),
        *[result("uptime-probe", start + timedelta(minutes=m), Item(name="api")) for m in (10, 11, 12)],
        result("sla-report", start + timedelta(hours=2), Item(name="api"), scope="day"),
        result("expiry-check", start + timedelta(hours=3), expiring),
        result("capacity-trends", start + timedelta(hours=4), Item(name="root-disk")),
        result("ops-digest", start + timedelta(hours=6), Item(name="incidents"), scope="day"),
    ]
    for routine_result, scope in runs:
        store.save_result(routine_result, scope)
    closed = {
        "service": "api",
        "opened_at": start + timedelta(hours=2),
        "closed_at": start + timedelta(hours=2, minutes=7),
    }
    store.save_probe_states([], [{**closed, "last_error": "HTTP 503"}], [])
    store.save_probe_states(
        [], [{"service": "api", "opened_at": start + timedelta(hours=7), "last_error": "HTTP 503"}], []
    )


def digest_json(capsys: pytest.CaptureFixture[str], config: Path, *args: str) -> tuple[int, dict[str, Any]]:
    code = run(["run", "ops-digest", "--json", "--config", str(config), *args])
    out, err = capsys.readouterr()
    assert out, f"exit {code}: {err}"
    return code, json.loads(out)


def html_of(message: Message) -> str:
    for part in message.walk():
        if part.get_content_type() == "text/html":
            return str(part.get_payload(decode=True).decode())  # type: ignore[union-attr]
    raise AssertionError("no HTML part")


def test_the_digest_counts_runs_names_failures_and_dead_schedules_and_is_delivered_once(
    prefect_api: None,
    store: OpsStore,
    pg_url: str,
    tmp_path: Path,
    smtp_server: Any,
    receiver: HttpReceiver,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("OPSFLOW_STORE_URL", pg_url)
    now = datetime.now(UTC).replace(microsecond=0)
    start, end = now - timedelta(hours=25), now - timedelta(minutes=30)
    seed(store, start)
    config = digest_config(tmp_path, smtp_server, receiver)

    code, document = digest_json(capsys, config, "--period", f"{start.isoformat()}..{end.isoformat()}")

    assert code == 1 and document["status"] == "fail", document
    items = {item["name"]: item for item in document["items"]}
    assert list(items)[:10] == [
        "backup-verification", "uptime-probe", "sla-report", "capacity-collect", "capacity-trends",
        "data-quality", "expiry-check", "ops-digest", "monthly-report", "dr-drill",
    ]  # fmt: skip
    backups = items["backup-verification"]
    assert {k: backups["metrics"][k] for k in ("runs", "ok", "warn", "fail", "error")} == {
        "runs": 2, "ok": 1, "warn": 0, "fail": 1, "error": 0,
    }  # fmt: skip
    assert backups["metrics"]["last_status"] == "fail" and backups["metrics"]["failing"] == ["orders-db: fresh"]
    checks = {c["check"]: c for c in backups["checks"]}
    assert checks["latest"]["status"] == "fail" and checks["ran"]["status"] == "ok"
    assert items["uptime-probe"]["metrics"]["runs"] == 3
    # Hourly sampling configured, due all day, never ran: the dead schedule. An unconfigured routine is not.
    dead = {c["check"]: c for c in items["capacity-collect"]["checks"]}["ran"]
    assert dead["status"] == "fail" and "no run recorded" in dead["detail"]
    for quiet in ("data-quality", "monthly-report", "dr-drill"):
        assert {c["check"]: c["status"] for c in items[quiet]["checks"]} == {"latest": "ok", "ran": "ok"}, quiet
    incidents = items["incidents"]["metrics"]
    assert (incidents["opened"], incidents["closed"], incidents["open_now"]) == (2, 1, 1)
    assert incidents["incidents"][0]["seconds"] == 420.0
    assert items["incidents"]["status"] == "warn"
    assert items["expiring"]["status"] == "warn"
    assert [line["name"] for line in items["expiring"]["metrics"]["items"]] == ["mail-tls"]
    assert document["outputs"]["delivered"] == "email, slack"

    # One email to the daily digest's recipients, one Slack message: both name the failure and the dead schedule.
    [mail] = smtp_server.messages
    assert mail.recipients == ["ops@example.com"]
    message = email.message_from_bytes(mail.data)
    html = html_of(message)
    for text in ("capacity-collect", "orders-db", "mail-tls"):
        assert text in html
    assert "Week over week" not in html  # the weekly digest's
    [slack] = [r for r in receiver.received if r.path == "/slack"]
    blocks = json.dumps(slack.json()["blocks"])
    assert "capacity-collect" in blocks and "orders-db" in blocks

    # Re-run for the same instant: one stored result, delivered again (a new digest was asked for).
    stored = store.results_between("ops-digest", now - timedelta(minutes=5), now + timedelta(minutes=5))
    assert len(stored) == 1


def test_a_digest_that_cannot_be_delivered_says_so_and_the_other_channel_still_gets_it(
    prefect_api: None,
    store: OpsStore,
    pg_url: str,
    tmp_path: Path,
    smtp_server: Any,
    receiver: HttpReceiver,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("OPSFLOW_STORE_URL", pg_url)
    monkeypatch.setenv("PREFECT_TASK_RUN_RETRY_DELAY_SECONDS", "0")
    now = datetime.now(UTC).replace(microsecond=0)
    seed(store, now - timedelta(hours=25))
    receiver.fail_next("/slack", 503, times=10)  # every retry refused

    code, document = digest_json(capsys, digest_config(tmp_path, smtp_server, receiver), "--period", "day")

    items = {item["name"]: item for item in document["items"]}
    [problem] = items["digest-delivery"]["checks"]
    assert code == 1 and problem["check"] == "slack" and problem["status"] == "error"
    assert "503" in problem["detail"] and receiver.url("/slack") not in json.dumps(document)
    assert len([r for r in receiver.received if r.path == "/slack"]) >= 2  # retried before giving up
    assert [m.recipients for m in smtp_server.messages] == [["ops@example.com"]]


def test_the_weekly_digest_goes_to_the_weekly_recipients_with_the_week_over_week_trends(
    prefect_api: None,
    store: OpsStore,
    pg_url: str,
    tmp_path: Path,
    smtp_server: Any,
    receiver: HttpReceiver,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("OPSFLOW_STORE_URL", pg_url)
    age(store)
    code, document = digest_json(capsys, digest_config(tmp_path, smtp_server, receiver), "--period", "week")

    assert code == 1 and "-W" in document["period"]["label"]  # dead schedules: nothing ran last week
    [mail] = smtp_server.messages
    assert mail.recipients == ["ops-leads@example.com"]
    assert "Week over week" in html_of(email.message_from_bytes(mail.data))
    assert not [r for r in receiver.received if r.path == "/slack"]  # the weekly digest has slack: false


def test_a_what_if_digest_is_stored_but_sent_nowhere(
    prefect_api: None,
    store: OpsStore,
    pg_url: str,
    tmp_path: Path,
    smtp_server: Any,
    receiver: HttpReceiver,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("OPSFLOW_STORE_URL", pg_url)
    config = digest_config(tmp_path, smtp_server, receiver)
    code, document = digest_json(capsys, config, "--period", "day", "--as-of", "2026-06-02T08:00:00Z")
    assert document["period"]["label"] == "2026-06-01" and "delivered" not in document.get("outputs", {})
    assert not smtp_server.messages and not receiver.received
    assert code in (0, 1)


def test_a_period_that_does_not_parse_is_refused_with_one_line(
    tmp_path: Path, smtp_server: Any, receiver: HttpReceiver, capsys: pytest.CaptureFixture[str]
) -> None:
    config = digest_config(tmp_path, smtp_server, receiver)
    assert run(["run", "ops-digest", "--period", "fortnight", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fortnight" in err[0]


def test_schedules_registered_on_the_server_replace_prefect_yaml_and_count_from_their_creation(
    prefect_api: None,
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.schedules import Cron

    from flows.capacity_collect import capacity_collect

    active = capacity_collect.to_deployment(name="digest-test-hourly", schedules=[Cron("5 * * * *", timezone=BERLIN)])
    paused = capacity_collect.to_deployment(name="digest-test-paused", schedules=[Cron("0 0 * * *")], paused=True)
    ids = [active.apply(), paused.apply()]
    try:
        sources = registered_schedules_task.fn(["capacity-collect", "expiry-check"])
        source = sources["capacity-collect"]
        assert source.where == "the Prefect server" and "expiry-check" not in sources
        assert [s["cron"] for s in source.schedules] == ["5 * * * *"]  # the paused deployment's are not due
        assert source.since is not None and abs((source.since - datetime.now(UTC)).total_seconds()) < 120
        # Registered a minute ago: the day before it existed is not a dead schedule.
        period = parse_period("day", datetime.now(UTC), UTC)
        assert ran_check("capacity-collect", True, 0, source, period)[1].status == "ok"
    finally:
        with get_client(sync_client=True) as client:
            for deployment_id in ids:
                client.delete_deployment(deployment_id)
