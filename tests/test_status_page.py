"""The at-a-glance status page (issue 18): every routine run refreshes ``$OPSFLOW_HOME/status/index.html`` —
every routine's latest status, open incidents, next expiries, capacity runway — from the real ops store,
through real routine runs (``opsflow run``) against a loopback HTTP service and a Prefect server."""

from __future__ import annotations

import logging
import re
import threading
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from flows.registry import OTHER_FLOWS, ROUTINES
from opsflow.cli import run
from opsflow.embedded import home_dir
from opsflow.files import write_atomically
from opsflow.results import Check, Item, RoutineResult
from opsflow.status import Expiry, OpenIncident, RoutineStatus, Runway, StatusSnapshot, status_page_path
from opsflow.store import OpsStore
from reports.status import render_status_page
from tests.http_targets import HttpTarget
from tests.test_capacity import history_csv, hourly
from tests.test_notify import latest_artifact

HOSTILE = "<script>alert(1)</script>"
UI = "http://127.0.0.1:4299"


def page_text() -> str:
    path = home_dir() / "status" / "index.html"
    assert path.is_file(), f"no status page at {path}"
    return path.read_text(encoding="utf-8")


def routine_row(html: str, name: str) -> str:
    match = re.search(rf'<tr class="routine" data-routine="{re.escape(name)}">(.*?)</tr>', html, re.S)
    assert match, f"{name} is not on the page"
    return match.group(1)


def section(html: str, anchor: str) -> str:
    match = re.search(rf'<section id="{anchor}">(.*?)</section>', html, re.S)
    assert match, f"no section {anchor}"
    return match.group(1)


def assert_self_contained(html: str) -> None:
    """Nothing fetched: no script, stylesheet link, image, frame, CSS url() or @import."""
    lowered = html.lower()
    for needle in ("<script", "<link", "src=", "url(", "@import", "<iframe", "<img", "<object", "<embed"):
        assert needle not in lowered, needle


def write_config(tmp_path: Path, target: HttpTarget, today: date) -> Path:
    path = tmp_path / "opsflow.yaml"
    path.write_text(
        "timezone: UTC\n"
        "services:\n"
        f"  - {{name: api, url: '{target.url('/health')}', timeout: 2s, failure_threshold: 1}}\n"
        "capacity:\n"
        "  - {metric: jobs-queue, source: {type: import}, threshold: 5000, warn_within: 30d, fail_within: 7d}\n"
        "  - {metric: flat-cpu, source: {type: import}, threshold: 0.8}\n"
        "expiry:\n"
        "  warn_within: 30d\n"
        "  fail_within: 7d\n"
        "  items:\n"
        f"    - {{name: pagerduty-contract, expires: {today + timedelta(days=5)}, owner: ops@example.com}}\n"
        f"    - {{name: '{HOSTILE}', expires: {today + timedelta(days=20)}}}\n"
        f"    - {{name: domain, expires: {today + timedelta(days=200)}}}\n"
    )
    return path


def test_routine_runs_refresh_one_page_with_every_routine_incidents_expiries_and_runway(
    prefect_api: None,
    store: OpsStore,
    pg_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("OPSFLOW_STORE_URL", pg_url)
    monkeypatch.setenv("PREFECT_UI_URL", UI)
    now = datetime.now(UTC)
    # A queue growing 50 a day toward 5000 from 4000: about 20 days of runway; a flat metric never crosses.
    queue = hourly(60, now, lambda ago: 4000 - 50 * ago)
    flat = hourly(60, now, lambda ago: 0.31)
    for metric, values in (("jobs-queue", queue), ("flat-cpu", flat)):
        assert run(["capacity", "import", str(history_csv(tmp_path / f"{metric}.csv", metric, values))]) == 0
    with HttpTarget() as target:
        config = write_config(tmp_path, target, now.date())
        assert not status_page_path().exists()
        assert run(["run", "capacity-trends", "--config", str(config)]) == 0
        assert status_page_path().is_file()  # the first run already wrote it
        assert run(["run", "expiry-check", "--config", str(config)]) == 1  # the contract: 5 days left, fail
        target.down = True
        assert run(["run", "uptime-probe", "--config", str(config)]) == 1  # down: an incident opens
    capsys.readouterr()

    html = page_text()
    assert status_page_path() == home_dir() / "status" / "index.html"
    assert '<meta http-equiv="refresh" content="60">' in html
    assert_self_contained(html)
    assert HOSTILE not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html

    # Every routine, and dr-drill; those never run say so.
    for name in [*ROUTINES, *OTHER_FLOWS]:
        row = routine_row(html, name)
        ran = name in ("capacity-trends", "expiry-check", "uptime-probe")
        assert ("no run yet" in row) is not ran, name
    # A failing run names its failing item and check, and links to its flow run in the UI.
    expiry_row = routine_row(html, "expiry-check")
    assert "FAIL" in expiry_row and "pagerduty-contract" in expiry_row and "expiry:" in expiry_row
    [latest] = store.results("expiry-check")
    assert f'href="{UI}/runs/flow-run/{latest.flow_run_id}"' in expiry_row
    probe_row = routine_row(html, "uptime-probe")
    assert "FAIL" in probe_row and "api" in probe_row and "503" in probe_row
    assert "OK" in routine_row(html, "capacity-trends") or "WARN" in routine_row(html, "capacity-trends")

    # The open incident: its service, since when, for how long.
    [incident] = [i for i in store.incidents() if i["closed_at"] is None]
    incidents = section(html, "incidents")
    assert "<td>api</td>" in incidents and "503" in incidents
    assert incident["opened_at"].astimezone(UTC).strftime("%Y-%m-%d %H:%M") in incidents
    assert "No open incident" not in incidents

    # Next expiries soonest first, those within warn_within highlighted.
    expiries = section(html, "expiries")
    order = [expiries.index(name) for name in ("pagerduty-contract", "&lt;script&gt;", "domain")]
    assert order == sorted(order)
    highlighted = re.findall(r'<tr class="soon"><td>(.*?)</td>', expiries)
    assert highlighted == ["pagerduty-contract", "&lt;script&gt;alert(1)&lt;/script&gt;"]
    assert "2 within 30 d" in expiries

    # Capacity runway: days to threshold, soonest first; a metric that never crosses last.
    runway = section(html, "runway")
    days = re.search(
        r"<td>jobs-queue</td>.*?<td class=\"num\">5000</td><td class=\"num\">([\d.]+) d</td>", runway, re.S
    )
    assert days and 16 <= float(days.group(1)) <= 24, runway
    assert runway.index("jobs-queue") < runway.index("flat-cpu")

    # The run's markdown summary links the page.
    artifact = latest_artifact("uptime-probe")
    assert artifact is not None and f"Status page: {status_page_path().as_uri()}" in artifact.data


def write_expiry_config(tmp_path: Path, today: date) -> Path:
    path = tmp_path / "opsflow.yaml"
    path.write_text(
        f"expiry:\n  items:\n    - {{name: pagerduty-contract, expires: {today + timedelta(days=5)}}}\n"
        f"    - {{name: domain, expires: {today + timedelta(days=200)}}}\n"
    )
    return path


def test_a_page_that_cannot_be_written_is_one_warning_and_the_run_ends_as_it_would(
    prefect_api: None,
    store: OpsStore,
    pg_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("OPSFLOW_STORE_URL", pg_url)
    config = write_expiry_config(tmp_path, datetime.now(UTC).date())
    home_dir().mkdir(parents=True, exist_ok=True)
    (home_dir() / "status").write_text("a file where the status directory should be")

    assert run(["run", "expiry-check", "--config", str(config)]) == 1  # the finding's exit, not 3
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if "status page" in line]
    assert len(warnings) == 1 and warnings[0].startswith("WARNING"), err
    assert "status page not refreshed: could not write the status page" in warnings[0]
    [result] = store.results("expiry-check")
    assert result.status == "fail" and {i.name: i.status for i in result.items} == {
        "pagerduty-contract": "fail",
        "domain": "ok",
    }
    artifact = latest_artifact("expiry-check")
    assert artifact is not None and "Status page:" not in artifact.data  # no link to a page not written


def test_a_what_if_run_leaves_the_page_showing_the_real_latest(
    prefect_api: None,
    store: OpsStore,
    pg_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("OPSFLOW_STORE_URL", pg_url)
    config = write_expiry_config(tmp_path, datetime.now(UTC).date())
    later = (datetime.now(UTC) + timedelta(days=400)).isoformat()
    assert run(["run", "expiry-check", "--as-of", later, "--config", str(config)]) == 1
    capsys.readouterr()
    assert not status_page_path().exists()  # a what-if's result is not the latest status
    assert run(["run", "expiry-check", "--config", str(config)]) == 1
    assert "5 d" in section(page_text(), "expiries")


# -- rendering, and writing concurrently ----------------------------------------------------------------

NOW = datetime(2026, 11, 22, 6, tzinfo=UTC)


def test_the_render_escapes_everything_and_refuses_non_http_links() -> None:
    failing = RoutineResult(
        routine="backup-verification",
        as_of=NOW - timedelta(minutes=90),
        flow_run_id="run-1",
        items=[
            Item(name=HOSTILE, checks=[Check(check="fresh", status="fail", detail="<b>31h</b> old")]),
            Item(name="fine", checks=[Check(check="fresh", status="ok")]),
        ],
    )
    snapshot = StatusSnapshot(
        generated_at=NOW,
        timezone="Europe/Berlin",
        routines=(
            RoutineStatus("backup-verification", failing, url="javascript:alert(1)"),
            RoutineStatus("sla-report", None),
        ),
        incidents=(OpenIncident(service=HOSTILE, since=NOW - timedelta(hours=3, minutes=5), last_error="<i>x</i>"),),
        expiries=(Expiry(name="a&b", status="warn", days_left=3, expires_at="2026-11-25", detail='"quoted"'),),
        runways=(Runway(metric="<m>", status="ok", days_to_threshold=12.5, current=1.0, threshold=2.0),),
    )
    html = render_status_page(snapshot)
    assert_self_contained(html)
    assert "<b>" not in html and "<i>" not in html and "<m>" not in html and HOSTILE not in html
    assert "&lt;b&gt;31h&lt;/b&gt; old" in html and "a&amp;b" in html
    assert "javascript:" not in html  # not a link, and not in an href
    row = routine_row(html, "backup-verification")
    assert "2026-11-22 05:30 CET" in row and "(1h 30m ago)" in row and "fine" not in row
    assert "no run yet" in routine_row(html, "sla-report")
    assert "3h 5m" in section(html, "incidents")
    assert "12.5 d" in section(html, "runway")


def test_concurrent_writers_never_collide_on_the_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "status" / "index.html"
    problems: list[BaseException] = []
    pages = [f"<html>{n}</html>" * 2000 for n in range(4)]

    def writer(page: str) -> None:
        try:
            for _ in range(50):
                write_atomically(target, page)
        except BaseException as exc:  # collected: the assertion below names it
            problems.append(exc)

    threads = [threading.Thread(target=writer, args=(page,)) for page in pages]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert problems == []
    assert target.read_text() in pages  # one writer's whole page, never a mix
    assert [p.name for p in target.parent.iterdir()] == ["index.html"]  # no temporary file left


def test_a_refresh_failure_is_logged_once_and_returned_as_none(caplog: pytest.LogCaptureFixture) -> None:
    from flows._routine import Routine, RoutineRun, refresh_status
    from opsflow.config import Config
    from tests.fakes import MemoryStore, fake_resources

    class BrokenStore(MemoryStore):
        def latest_results(self, routines: object, end: object = None) -> dict[str, RoutineResult]:
            raise ConnectionError("ops store went away")

    store = BrokenStore()
    routine = Routine(name="answer-check", description="", work=lambda run: [])
    resources = fake_resources(store, home_dir(), NOW)(Config())
    with caplog.at_level(logging.WARNING, logger="opsflow.run"):
        assert refresh_status(RoutineRun(routine, Config(), resources, NOW, None, {})) is None
    assert [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "opsflow.run"] == [
        ("WARNING", "answer-check: status page not refreshed: ops store went away")
    ]
    assert not status_page_path().exists()
