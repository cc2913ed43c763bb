"""Incident records read from a real ops store: the list, one incident's timeline, and `opsflow incidents`."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from opsflow.cli import run
from opsflow.history_csv import ProbeRow
from opsflow.incident_store import incident_timeline, list_incidents
from opsflow.store import OpsStore
from reports.incidents import render_incidents, render_timeline


def at(minute: int, second: int = 0) -> datetime:
    return datetime(2026, 11, 22, 6, 0, tzinfo=UTC) + timedelta(minutes=minute, seconds=second)


DOWN = "UnexpectedStatus: HTTP 503, expected 200"


def deliver(store: OpsStore, item: str, kind: str, channel: str, recorded: datetime, error: str | None = None) -> None:
    with store.connection() as conn:
        conn.execute(
            """insert into opsflow.alert_deliveries (routine, item, kind, channel, delivered, error, as_of, recorded_at)
               values ('uptime-probe', %s, %s, %s, %s, %s, %s, %s)""",
            # The run's as_of is its start: before the probe (here, a few seconds before the record).
            (item, kind, channel, error is None, error, recorded - timedelta(seconds=4), recorded),
        )


def escalation(store: OpsStore, item: str, opened: datetime, tier: int, created: datetime, told: datetime) -> None:
    with store.connection() as conn:
        conn.execute(
            """insert into opsflow.escalations (routine, item, opened_at, tier, after_seconds, recipients, mention,
                   created_at, as_of, attempts, sent, delivered, at, resolve_sent, resolve_told_at)
               values ('uptime-probe', %s, %s, %s, 60, '{lead@example.com}', '@lead', %s, %s, 1,
                       '{email,slack}', true, %s, '{email,slack}', %s)""",
            (item, opened, tier, created, created, created + timedelta(seconds=1), told),
        )


@pytest.fixture
def history(store: OpsStore) -> OpsStore:
    """api: an incident 06:00:05–06:04:05 (3 failures), then another from 06:05:05, still open; db: one
    incident 06:00–06:10 with no alert. Alerts and an escalation recorded as runs record them."""
    rows = [ProbeRow("api", at(m, 5), False, None, 503, DOWN) for m in (0, 1, 2, 3)]
    rows += [ProbeRow("api", at(4, 5), True, 42.4, 200, None), ProbeRow("api", at(5, 5), False, None, 503, DOWN)]
    rows += [
        ProbeRow("db", at(0), False, None, None, "ConnectError: refused"),
        ProbeRow("db", at(10), True, 3.0, None, None),
    ]
    store.write_probe_results(rows)
    store.save_probe_states(
        [],
        [
            {"service": "db", "opened_at": at(0), "closed_at": at(10), "last_error": "refused"},
            {"service": "api", "opened_at": at(0, 5), "closed_at": at(4, 5), "last_error": DOWN},
            {"service": "api", "opened_at": at(5, 5), "last_error": DOWN},
        ],
        [],
    )
    deliver(store, "api", "trigger", "slack", at(2, 7))
    deliver(store, "api", "trigger", "email", at(2, 8), error="email: SMTP 451: try again https://ops:s3cret@mx/")
    escalation(store, "api", at(2, 3), 1, created=at(3, 6), told=at(4, 8))
    deliver(store, "api", "resolve", "slack", at(4, 7))
    deliver(store, "api", "trigger", "slack", at(5, 7))  # the second incident's (failure_threshold 1)
    deliver(store, "api", "warn", "slack", at(5, 8))  # a certificate warning: no incident's
    return store


def test_incidents_are_listed_oldest_first_with_their_alerts_and_escalations(history: OpsStore) -> None:
    now = at(7, 5)
    records = list_incidents(history, now=now)
    assert [(r.service, r.start, r.end) for r in records] == [
        ("db", at(0), at(10)),
        ("api", at(0, 5), at(4, 5)),
        ("api", at(5, 5), None),
    ]
    db, first, second = records
    assert (db.alerts, db.escalations, db.seconds) == (0, 0, 600)
    # The trigger and resolve that landed (the email that did not is not counted), and the tier told.
    assert (first.alerts, first.escalations, first.seconds) == (2, 1, 240)
    # Open: its length runs to now; the trigger recorded after the first one's resolve is its own.
    assert (second.alerts, second.escalations, second.seconds, second.end) == (1, 0, 120, None)
    assert [r.start for r in list_incidents(history, open_only=True, now=now)] == [at(5, 5)]
    assert [r.service for r in list_incidents(history, service="db", now=now)] == ["db"]


def test_the_list_selects_incidents_overlapping_the_period(history: OpsStore) -> None:
    def starts(start: datetime, end: datetime) -> list[datetime]:
        return [r.start for r in list_incidents(history, start=start, end=end, now=at(20))]

    assert starts(at(4, 30), at(5)) == [at(0)]  # api's first closed before, its second opened after
    assert starts(at(4), at(4, 6)) == [at(0), at(0, 5)]
    assert starts(at(4, 5), at(5, 6)) == [at(0), at(5, 5)]  # closed at the period's start: not in it
    assert starts(at(30), at(40)) == [at(5, 5)]  # still open
    assert starts(at(-10), at(0)) == []  # the period's end is exclusive


def test_the_timeline_runs_opened_alerts_escalated_resolved_in_time_order(history: OpsStore) -> None:
    first_id = list_incidents(history, service="api")[0].id
    found = incident_timeline(history, first_id, now=at(20))
    assert found is not None
    record, events = found
    assert record.start == at(0, 5) and record.end == at(4, 5)
    assert [(e.at, e.event) for e in events] == [
        (at(0, 5), "opened"),
        (at(2, 7), "alert"),
        (at(2, 8), "alert"),
        (at(3, 7), "escalated"),
        (at(4, 5), "resolved"),
        (at(4, 7), "alert"),
        (at(4, 8), "alert"),
    ]
    details = [e.detail for e in events]
    # The failures up to the trigger opened it; the fourth (after the trigger) is not one of them.
    assert details[0] == f"3 consecutive failures: {DOWN} at 06:00:05Z; {DOWN} at 06:01:05Z; {DOWN} at 06:02:05Z"
    assert details[1] == "trigger via slack: delivered"
    assert details[2].startswith("trigger via email: not delivered: email: SMTP 451: try again")
    assert "s3cret" not in details[2]
    assert details[3] == "tier 1 (after 1m) to lead@example.com, @lead: delivered"
    assert details[4] == "HTTP 200 in 42 ms"
    assert details[5] == "resolve via slack: delivered"
    assert details[6] == "resolve to escalation tier 1 (lead@example.com, @lead): delivered"


def test_an_open_incident_has_no_resolved_event_and_an_unknown_one_is_none(history: OpsStore) -> None:
    second = list_incidents(history, open_only=True)[0]
    found = incident_timeline(history, second.id, now=at(7, 5))
    assert found is not None
    record, events = found
    assert record.end is None and record.seconds == 120
    assert [e.event for e in events] == ["opened", "alert"]
    assert events[0].detail == f"1 consecutive failure: {DOWN} at 06:05:05Z"
    assert incident_timeline(history, 10_000) is None


def test_the_terminal_renders_the_list_and_a_timeline(history: OpsStore) -> None:
    records = list_incidents(history, now=at(7, 5))
    table = render_incidents(records).splitlines()
    assert table[0].split() == ["ID", "SERVICE", "START", "END", "DURATION", "ALERTS", "ESCALATIONS"]
    assert "open" in table[3] and "2m so far" in table[3]
    assert render_incidents([]) == "no incidents"
    found = incident_timeline(history, records[1].id)
    assert found is not None
    text = render_timeline(*found)
    assert text.splitlines()[0] == f"incident {records[1].id}: api, closed after 4m"
    assert "2026-11-22 06:03:07 UTC  escalated  tier 1 (after 1m)" in text


def test_the_cli_lists_and_shows_incidents_as_json(
    history: OpsStore, pg_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OPSFLOW_STORE_URL", pg_url)
    assert run(["incidents", "--json", "--service", "api"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert list(listed) == ["incidents"]
    first, second = listed["incidents"]
    assert first == {
        "id": first["id"],
        "service": "api",
        "start": "2026-11-22T06:00:05Z",
        "end": "2026-11-22T06:04:05Z",
        "seconds": 240,
        "alerts": 2,
        "escalations": 1,
    }
    assert second["end"] is None and second["start"] == "2026-11-22T06:05:05Z"
    assert run(["incidents", "--open", "--json"]) == 0
    assert [i["id"] for i in json.loads(capsys.readouterr().out)["incidents"]] == [second["id"]]

    assert run(["incidents", "show", str(first["id"]), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert {k: shown[k] for k in first} == first
    assert [e["event"] for e in shown["timeline"]] == [
        "opened",
        "alert",
        "alert",
        "escalated",
        "resolved",
        "alert",
        "alert",
    ]
    assert shown["timeline"][3] == {
        "at": "2026-11-22T06:03:07Z",
        "event": "escalated",
        "detail": "tier 1 (after 1m) to lead@example.com, @lead: delivered",
    }

    assert run(["incidents"]) == 0
    assert "ESCALATIONS" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["incidents", "show", "999999"], "opsflow incidents show: no incident 999999"),
        (["incidents", "show", "abc", "--json"], "opsflow incidents show: ID must be an incident number, got 'abc'"),
        (["incidents", "show"], "usage: opsflow incidents show ID (one incident number)"),
        (["incidents", "close", "1"], "opsflow incidents: unknown action 'close' (expected: show ID)"),
    ],
)
def test_a_bad_or_unknown_id_is_one_line_and_exit_2(
    store: OpsStore,
    pg_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("OPSFLOW_STORE_URL", pg_url)
    monkeypatch.chdir(tmp_path)
    assert run(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip().splitlines() == [message]
