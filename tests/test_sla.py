"""SLA reports against generated probe histories, checked against an independent reference of SPEC §6."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from flows._routine import routine_result
from opsflow import sla_store
from opsflow.config import Config
from opsflow.history_csv import ProbeRow
from opsflow.store import OpsStore
from tasks.periods import Period, PeriodError, ZoneInfo, parse_period, previous_period
from tasks.sla import compute_sla, percentile_from_histogram, service_checks

BERLIN = ZoneInfo("Europe/Berlin")


# -- periods ------------------------------------------------------------------------------------


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def test_named_periods_are_the_last_complete_one_in_the_config_timezone() -> None:
    now = utc(2026, 10, 26, 12)  # a Monday; Berlin left summer time on Sunday 25 October
    day = parse_period("day", now, BERLIN)
    assert (day.label, day.start, day.end, day.seconds) == (
        "2026-10-25",
        utc(2026, 10, 24, 22),
        utc(2026, 10, 25, 23),
        25 * 3600,
    )
    week = parse_period("week", now, BERLIN)
    assert (week.label, week.start, week.end) == ("2026-W43", utc(2026, 10, 18, 22), utc(2026, 10, 25, 23))
    assert week.seconds == 7 * 86400 + 3600
    month = parse_period("month", utc(2026, 11, 1, 0), BERLIN)  # 01:00 Berlin on the 1st: October is complete
    assert (month.label, month.start, month.end) == ("2026-10", utc(2026, 9, 30, 22), utc(2026, 10, 31, 23))
    spring = parse_period("day", utc(2026, 3, 30, 6), BERLIN)
    assert spring.label == "2026-03-29" and spring.seconds == 23 * 3600
    assert parse_period("day", utc(2026, 11, 22, 0, 30), ZoneInfo("UTC")).label == "2026-11-21"


def test_explicit_periods_and_previous_ones() -> None:
    now = utc(2026, 11, 22)
    month = parse_period("2026-02", now, ZoneInfo("UTC"))
    assert month.seconds == 28 * 86400 and month.kind == "month"
    assert previous_period(month, ZoneInfo("UTC")).label == "2026-01"
    span = parse_period("2026-10-25..2026-10-26", now, BERLIN)
    assert (span.kind, span.start, span.end) == ("range", utc(2026, 10, 24, 22), utc(2026, 10, 25, 23))
    instants = parse_period("2026-11-01T00:00:00Z..2026-11-01T06:30:00+01:00", now, BERLIN)
    assert instants.seconds == 5.5 * 3600
    before = previous_period(instants, BERLIN)
    assert before.end == instants.start and before.seconds == instants.seconds
    assert previous_period(parse_period("day", utc(2026, 10, 26, 12), BERLIN), BERLIN).seconds == 86400
    for bad in ("yesterday", "2026-13", "2026-11-02..2026-11-01", "x..y"):
        with pytest.raises(PeriodError):
            parse_period(bad, now, BERLIN)


def test_a_berlin_month_is_read_as_whole_utc_weeks_days_hours_and_raw_edges() -> None:
    october = parse_period("2026-10", utc(2026, 11, 22), BERLIN)  # 2026-09-30T22:00Z .. 2026-10-31T23:00Z
    plan = sla_store.plan_reads([("api", october.start, october.end, 60.0)])
    assert [(s[1], s[2]) for s in plan.weeks] == [(utc(2026, 10, 5), utc(2026, 10, 26))]
    assert [(s[1], s[2]) for s in plan.days] == [
        (utc(2026, 10, 1), utc(2026, 10, 5)),
        (utc(2026, 10, 26), utc(2026, 10, 31)),
    ]
    assert [(s[1], s[2]) for s in plan.hours] == [
        (utc(2026, 9, 30, 22), utc(2026, 10, 1)),
        (utc(2026, 10, 31), utc(2026, 10, 31, 23)),
    ]
    assert plan.pieces == []
    # Every second of the period is read exactly once.
    covered = sum((s[2] - s[1]).total_seconds() for s in plan.weeks + plan.days + plan.hours + plan.pieces)
    assert covered == october.seconds
    odd = sla_store.plan_reads([("api", utc(2026, 10, 7, 10, 0, 30), utc(2026, 10, 7, 10, 59), 60.0)])
    assert (odd.weeks, odd.days, odd.hours) == ([], [], []) and len(odd.pieces) == 1
    raw = sla_store.plan_reads([("api", october.start, october.end, 60.0)], use_rollups=False)
    assert raw.pieces == [("api", october.start, october.end, 60.0)] and not raw.weeks


# -- an independent reference of SPEC §6 ----------------------------------------------------------


@dataclass
class Ref:
    up: float
    down: float
    maintenance: float
    no_data: float
    latencies: list[float]
    incidents: list[tuple[datetime, datetime | None]]


def reference(
    rows: list[ProbeRow],
    interval: float,
    start: datetime,
    end: datetime,
    windows: list[tuple[datetime, datetime]],
    threshold: int,
) -> Ref:
    """Second-by-second-exact, written without the report's code: intervals clipped and maintenance removed."""
    rows = sorted(rows, key=lambda r: r.checked_at)
    merged: list[tuple[datetime, datetime]] = []
    for wa, wb in sorted(windows):
        if merged and wa <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], wb))
        else:
            merged.append((wa, wb))
    windows = merged

    def in_maint(at: datetime) -> bool:
        return any(a <= at < b for a, b in windows)

    def measure(a: datetime, b: datetime) -> float:
        a, b = max(a, start), min(b, end)
        if b <= a:
            return 0.0
        total = (b - a).total_seconds()
        for wa, wb in windows:
            lo, hi = max(a, wa), min(b, wb)
            if hi > lo:
                total -= (hi - lo).total_seconds()
        return total

    up = down = 0.0
    for i, row in enumerate(rows):
        stop = row.checked_at + timedelta(seconds=interval)
        if i + 1 < len(rows):
            stop = min(stop, rows[i + 1].checked_at)
        covered = measure(row.checked_at, stop)
        if row.ok:
            up += covered
        else:
            down += covered
    maint = 0.0
    cursor = start
    for wa, wb in sorted(windows):
        lo, hi = max(wa, cursor, start), min(wb, end)
        if hi > lo:
            maint += (hi - lo).total_seconds()
            cursor = hi
    inside = [r for r in rows if start <= r.checked_at < end and not in_maint(r.checked_at)]
    latencies = [r.latency_ms for r in inside if r.ok and r.latency_ms is not None]
    incidents: list[tuple[datetime, datetime | None]] = []
    run: list[ProbeRow] = []
    for r in inside:
        if r.ok:
            if len(run) >= threshold:
                incidents.append((run[0].checked_at, r.checked_at))
            run = []
        else:
            run.append(r)
    if len(run) >= threshold:
        incidents.append((run[0].checked_at, None))
    period = (end - start).total_seconds()
    return Ref(up, down, maint, period - maint - up - down, latencies, incidents)


# -- generated histories -------------------------------------------------------------------------


def probe(service: str, at: datetime, ok: bool, rng: random.Random) -> ProbeRow:
    latency = round(rng.lognormvariate(4.0, 0.6), 3) if ok else None
    return ProbeRow(service, at, ok, latency, 200 if ok else 503, None if ok else "HTTP 503")


def history(rng: random.Random) -> dict[str, list[ProbeRow]]:
    """October 2026 (Berlin, 25-hour day on the 25th) with a margin on both sides."""
    start, end = utc(2026, 9, 30, 18), utc(2026, 11, 1, 3)
    rows: dict[str, list[ProbeRow]] = {"api": [], "new": [], "jittery": []}
    # api: 120 s probes; a 50-minute outage, isolated failures, a 5-hour gap inside a failure run,
    # failures inside maintenance, a gap of 3 hours, and an outage across the DST change.
    at = start
    while at < end:
        gap = utc(2026, 10, 12, 9, 13) <= at < utc(2026, 10, 12, 12, 41)
        ok = not (
            utc(2026, 10, 3, 10, 7) <= at < utc(2026, 10, 3, 10, 57)
            or utc(2026, 10, 25, 0, 30) <= at < utc(2026, 10, 25, 1, 30)
            or utc(2026, 10, 10, 1, 50) <= at < utc(2026, 10, 10, 3, 30)  # straddles maintenance 02:00-03:00
            or utc(2026, 10, 20, 6, 0) <= at < utc(2026, 10, 20, 6, 5)
            or utc(2026, 10, 20, 11, 0) <= at < utc(2026, 10, 20, 11, 3)  # resumes after the gap below
            or rng.random() < 0.01
        )
        if not gap and not (utc(2026, 10, 20, 6, 5) <= at < utc(2026, 10, 20, 11, 0)):
            rows["api"].append(probe("api", at, ok, rng))
        at += timedelta(seconds=120)
    # new: added mid-month, 60 s probes with a few seconds of jitter.
    at = utc(2026, 10, 15, 12, 34, 56)
    while at < end:
        rows["new"].append(probe("new", at + timedelta(seconds=rng.randint(0, 5)), rng.random() > 0.02, rng))
        at += timedelta(seconds=60)
    # jittery: probes every 40-90 s with an interval of 60 s (coverage overlaps and gaps), latencies in µs fractions.
    at = start
    while at < end:
        rows["jittery"].append(probe("jittery", at, rng.random() > 0.05, rng))
        at += timedelta(seconds=rng.uniform(40, 90), microseconds=rng.randint(0, 999_999))
    return rows


CONFIG = {
    "timezone": "Europe/Berlin",
    "services": [
        {
            "name": "api",
            "url": "https://api.example.com/health",
            "interval": "120s",
            "failure_threshold": 3,
            "slo": {"availability": "99.5%", "latency_p95": "150ms"},
        },
        {
            "name": "new",
            "url": "https://new.example.com/health",
            "interval": "60s",
            "failure_threshold": 2,
            "slo": {"availability": "99%"},
        },
        {"name": "jittery", "tcp": "db.example.com:5432", "interval": "60s", "failure_threshold": 2},
    ],
    "maintenance": [
        {"services": ["api"], "start": "2026-10-10T02:00:00Z", "end": "2026-10-10T03:00:00Z", "reason": "upgrade"},
        {"services": ["api", "jittery"], "start": "2026-10-18T23:30:00+02:00", "end": "2026-10-19T00:45:00+02:00"},
        {"services": ["jittery"], "start": "2026-10-19T00:15:00+02:00", "end": "2026-10-19T02:10:17+02:00"},
        {"services": ["jittery"], "start": "2026-09-30T20:00:00Z", "end": "2026-09-30T22:30:00Z"},
    ],
}


@pytest.fixture(scope="module")
def generated() -> dict[str, list[ProbeRow]]:
    return history(random.Random(7))


def config() -> Config:
    return Config.model_validate(CONFIG)


def assert_matches(got: dict[str, Any], ref: Ref, period: Period, slo: float) -> None:
    assert got["up_seconds"] == pytest.approx(ref.up, abs=0.001)
    assert got["down_seconds"] == pytest.approx(ref.down, abs=0.001)
    assert got["maintenance_seconds"] == pytest.approx(ref.maintenance, abs=0.001)
    assert got["no_data_seconds"] == pytest.approx(ref.no_data, abs=0.001)
    measured = ref.up + ref.down
    assert got["availability_pct"] == pytest.approx(100 * ref.up / measured, abs=0.001)
    assert got["coverage_pct"] == pytest.approx(100 * measured / (period.seconds - ref.maintenance), abs=0.001)
    budget = (1 - slo / 100) * measured
    assert got["error_budget_seconds"] == pytest.approx(budget, abs=0.001)
    assert got["error_budget_remaining_pct"] == pytest.approx(100 * (1 - ref.down / budget), abs=0.001)
    for pct in (50, 95, 99):
        exact = float(np.percentile(ref.latencies, pct))
        assert abs(got[f"latency_p{pct}_ms"] - exact) <= 0.01 * exact, (pct, got[f"latency_p{pct}_ms"], exact)
    assert len(got["incidents"]) == len(ref.incidents)
    for mine, (s, e) in zip(got["incidents"], ref.incidents, strict=True):
        assert datetime.fromisoformat(mine["start"].replace("Z", "+00:00")) == s
        if e is None:
            assert mine["end"] is None
        else:
            assert datetime.fromisoformat(mine["end"].replace("Z", "+00:00")) == e
            assert mine["seconds"] == pytest.approx((e - s).total_seconds(), abs=0.001)
    if ref.incidents:
        lengths = [((e or period.end) - s).total_seconds() for s, e in ref.incidents]
        assert got["mttr_seconds"] == pytest.approx(sum(lengths) / len(lengths), abs=0.001)


def windows_of(cfg: Config, service: str) -> list[tuple[datetime, datetime]]:
    return [(w.start, w.end) for w in cfg.maintenance_for(service)]


def assert_report_matches(
    report: dict[str, dict[str, Any]], generated: dict[str, list[ProbeRow]], cfg: Config, period: Period
) -> None:
    """Every service of ``report`` equals the independent reference over the same rows."""
    for svc in cfg.services:
        windows = windows_of(cfg, svc.name)
        ref = reference(generated[svc.name], svc.interval, period.start, period.end, windows, svc.failure_threshold)
        assert_matches(report[svc.name], ref, period, svc.slo.availability)


@pytest.mark.parametrize(
    "period_text",
    ["2026-10", "2026-10-25..2026-10-26", "2026-10-10T01:17:30Z..2026-10-20T11:02:00.5Z", "2026-10-19..2026-10-20"],
)
def test_report_matches_the_reference_to_the_second(
    store: OpsStore, generated: dict[str, list[ProbeRow]], period_text: str
) -> None:
    cfg = config()
    store.write_probe_results([r for rows in generated.values() for r in rows])
    period = parse_period(period_text, utc(2026, 11, 22), cfg.tzinfo)
    for use_rollups in (True, False):
        assert_report_matches(compute_sla(store, cfg, period, use_rollups=use_rollups), generated, cfg, period)
    if period_text == "2026-10":
        assert period.seconds == 31 * 86400 + 3600
        got = compute_sla(store, cfg, period)
        assert got["api"]["incidents"] and got["new"]["no_data_seconds"] > 14 * 86400
        # The failure run in maintenance and the run across the 5-hour gap are single incidents.
        starts = [i["start"] for i in got["api"]["incidents"]]
        assert "2026-10-10T01:50:00Z" in starts and "2026-10-20T06:00:00Z" in starts


def test_rollups_fill_incrementally_and_rebuild_from_raw(store: OpsStore, generated: dict[str, list[ProbeRow]]) -> None:
    cfg = config()
    intervals = {s.name: s.interval for s in cfg.services}
    rows = [r for rs in generated.values() for r in rs]
    cut = utc(2026, 10, 16, 7, 31, 10)
    first = [r for r in rows if r.checked_at < cut]
    store.write_probe_results(first)
    period = parse_period("2026-10", utc(2026, 11, 22), cfg.tzinfo)
    compute_sla(store, cfg, period)  # builds the rollups present so far
    later = [r for r in rows if r.checked_at >= cut]
    # Probe runs: each writes its batch and refreshes the hours it touches.
    for batch_start in range(0, len(later), 5000):
        batch = later[batch_start : batch_start + 5000]
        store.write_probe_results(batch)
        with store.connection() as conn:
            sla_store.refresh_after_write(conn, intervals, [(r.service, r.checked_at) for r in batch])
    with store.connection() as conn:
        before = conn.execute(
            "select count(*), sum(up_seconds), sum(down_seconds) from opsflow.probe_hourly"
        ).fetchone()
    report = compute_sla(store, cfg, period)
    assert_report_matches(report, generated, cfg, period)
    from tasks.sla import rebuild_rollups

    assert rebuild_rollups(store, cfg) > 0
    with store.connection() as conn:
        whole = conn.execute(
            "select count(*), sum(up_seconds), sum(down_seconds) from opsflow.probe_hourly"
            " where hour >= %s and hour < %s",
            (sla_store.ceil_hour(period.start), sla_store.floor_hour(period.end)),
        ).fetchone()
        assert before is not None and whole is not None
    assert compute_sla(store, cfg, period) == report


def test_the_first_probe_run_after_midnight_builds_the_finished_days_and_last_week(store: OpsStore) -> None:
    rng = random.Random(5)
    start, end = utc(2026, 11, 9), utc(2026, 11, 23, 0, 1)  # two whole weeks, then Monday 00:00
    rows = [
        probe("api", start + timedelta(minutes=m), True, rng) for m in range(int((end - start).total_seconds() // 60))
    ]
    store.write_probe_results(rows)
    with store.connection() as conn:
        # The probe run at Monday 00:00 refreshes the hours it touches (Sunday 23:00 too, which drops
        # Sunday and last week), then settles everything complete before today.
        sla_store.refresh_after_write(conn, {"api": 60.0}, [("api", rows[-1].checked_at)])
        weeks = conn.execute("select week, days, up_seconds from opsflow.probe_weekly order by week").fetchall()
        days = conn.execute("select day, hours, up_seconds from opsflow.probe_daily order by day").fetchall()
        settled = sla_store.plan_reads([("api", utc(2026, 11, 16), utc(2026, 11, 23), 60.0)])
        assert sla_store.ensure_rollups(conn, settled) == 0  # nothing left for a report to build
    assert weeks[-1] == (utc(2026, 11, 16), 7, 7 * 86400.0)
    assert days[-1] == (utc(2026, 11, 22), 24, 86400.0)


def test_a_probe_run_between_a_reports_build_and_its_reads_changes_nothing(
    store: OpsStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(6)
    start, end = utc(2026, 11, 16), utc(2026, 11, 23, 0, 1)
    rows = [
        probe("api", start + timedelta(minutes=m), True, rng) for m in range(int((end - start).total_seconds() // 60))
    ]
    store.write_probe_results(rows[:-1])
    cfg = Config.model_validate({"services": [{"name": "api", "url": "https://api.example.com", "interval": "60s"}]})
    week = parse_period("week", utc(2026, 11, 23, 0, 0, 30), cfg.tzinfo)  # 2026-W47, whole in UTC
    build = sla_store.ensure_rollups
    landed: list[int] = []

    def build_then_a_probe_run_lands(conn: Any, plan: sla_store.ReadPlan) -> int:
        built = build(conn, plan)
        if not landed:  # once: the Monday 00:00 result arrives and its run drops Sunday and the week
            conn.commit()
            store.write_probe_results(rows[-1:])
            with store.connection() as other:
                sla_store.refresh_rollups(other, [("api", 60.0)], rows[-1].checked_at - timedelta(minutes=1), end)
            landed.append(1)
        return built

    monkeypatch.setattr(sla_store, "ensure_rollups", build_then_a_probe_run_lands)
    report = compute_sla(store, cfg, week)["api"]
    assert landed and report["coverage_pct"] == 100.0 and report["up_seconds"] == 7 * 86400


def test_histogram_percentiles_stay_within_one_percent() -> None:
    rng = random.Random(3)
    for _ in range(20):
        values = [rng.lognormvariate(rng.uniform(-2, 8), rng.uniform(0.1, 2)) for _ in range(rng.randint(1, 3000))]
        histogram: dict[int, int] = {}
        for v in values:
            b = int(np.floor(np.log(max(v, 0.001) / 0.001) / np.log(1.018)))
            histogram[b] = histogram.get(b, 0) + 1
        for pct in (50, 95, 99):
            exact = float(np.percentile(values, pct))
            got = percentile_from_histogram(histogram, pct)
            assert got is not None and abs(got - exact) <= 0.01 * exact


def test_opsflow_run_sla_report_writes_csv_artifacts_and_keeps_month_revisions(
    prefect_api: None,
    pg_url: str,
    tmp_path: Path,
    generated: dict[str, list[ProbeRow]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from opsflow.cli import run

    doc = {**CONFIG, "store": {"url": pg_url}, "reports": {"monthly": {"out_dir": str(tmp_path / "out")}}}
    path = tmp_path / "opsflow.yaml"
    path.write_text(yaml.safe_dump(doc))
    store = OpsStore(pg_url)
    store.migrate()
    store.write_probe_results([r for rows in generated.values() for r in rows])
    args = [
        "run",
        "sla-report",
        "--config",
        str(path),
        "--period",
        "month",
        "--as-of",
        "2026-11-03T08:00:00Z",
        "--json",
    ]
    code = run(args)
    document = json.loads(capsys.readouterr().out)
    assert code == 1  # api misses its 99.5% SLO
    assert document["routine"] == "sla-report"
    items = {i["name"]: i for i in document["items"]}
    assert set(items) == {"api", "new", "jittery"}
    assert {c["check"] for c in items["api"]["checks"]} == {"availability", "latency_p95", "coverage"}
    new_coverage = next(c for c in items["new"]["checks"] if c["check"] == "coverage")
    assert new_coverage["status"] == "warn" and new_coverage["observed"] < 90  # added mid-month
    assert "previous" in items["api"]["metrics"]
    csv_file = tmp_path / "out" / "sla-month-2026-10.csv"
    assert csv_file.exists() and csv_file.read_text().count("\n") == 4
    assert run([*args[:-3], "--as-of", "2026-11-04T08:00:00Z", "--json"]) == 1
    capsys.readouterr()
    with store.connection() as conn:
        revisions = conn.execute(
            "select revision, as_of from opsflow.sla_reports where period_label = '2026-10' order by revision"
        ).fetchall()
    assert [r[0] for r in revisions] == [1, 2]
    assert run(["run", "backup-verification", "--config", str(path), "--period", "day"]) == 2
    assert run(["run", "sla-report", "--config", str(path), "--period", "yesterday"]) == 2


def test_burn_rate_pages_on_fast_burn_and_tickets_on_slow_burn(store: OpsStore) -> None:
    from tasks.sla import burn_check, burn_rates

    cfg = Config.model_validate(
        {
            "services": [
                {"name": s, "url": f"https://{s}.example.com/", "interval": "60s", "slo": {"availability": "99.9%"}}
                for s in ("fast", "slow", "fine")
            ]
        }
    )
    now = utc(2026, 11, 20, 12)
    rng = random.Random(1)
    rows = []
    at = now - timedelta(days=3, minutes=5)
    while at < now:
        recent = at >= now - timedelta(minutes=20)
        rows.append(probe("fast", at, not recent, rng))  # the last 20 minutes down: 1h burn 333x, 5m 1000x
        rows.append(probe("slow", at, rng.random() > 0.003, rng))  # 0.3% failing: 3x over 3 days
        rows.append(probe("fine", at, True, rng))
        at += timedelta(seconds=60)
    store.write_probe_results(rows)
    rates = burn_rates(store, cfg, now)
    assert rates["fast"]["5m"] == pytest.approx(1000.0) and rates["fast"]["1h"] == pytest.approx(1000 / 3)
    assert burn_check(rates["fast"]).status == "fail"
    slow = burn_check(rates["slow"])
    assert slow.status in ("warn", "fail") and rates["slow"]["3d"] is not None and rates["slow"]["3d"] > 1
    assert burn_check(rates["fine"]).status == "ok"
    # Less than half of a window measured: not judged.
    assert burn_rates(store, cfg, now + timedelta(days=3))["fast"]["3d"] is None


def test_flow_stores_a_revision_per_run_and_states_the_rules(
    prefect_api: None, pg_url: str, tmp_path: Path, generated: dict[str, list[ProbeRow]]
) -> None:
    from flows.sla_report import sla_report
    from opsflow.results import RoutineResult
    from tasks.sla import RULES, report_markdown

    doc = {**CONFIG, "store": {"url": pg_url}}
    path = tmp_path / "opsflow.yaml"
    path.write_text(yaml.safe_dump(doc))
    store = OpsStore(pg_url)
    store.migrate()
    store.write_probe_results([r for rows in generated.values() for r in rows])
    state = sla_report(
        period="2026-10-25..2026-10-26",
        as_of=utc(2026, 11, 3),
        config_path=str(path),
        out_dir=str(tmp_path),
        return_state=True,
    )
    result = routine_result(state)
    assert isinstance(result, RoutineResult)
    api = next(i for i in result.items if i.name == "api")
    assert api.metrics["maintenance_seconds"] == 0 and api.metrics["up_seconds"] + api.metrics["down_seconds"] > 0
    assert api.metrics["incidents"][0]["start"] == "2026-10-25T00:30:00Z"
    assert (tmp_path / "sla-range-2026-10-25_to_2026-10-26.csv").exists()
    period = parse_period("2026-10-25..2026-10-26", utc(2026, 11, 3), BERLIN)
    markdown = report_markdown(result, period, "Europe/Berlin")
    assert all(rule in markdown for rule in RULES) and "coverage" in markdown
    assert store.results("sla-report", scope="2026-10-25..2026-10-26")


def test_slo_checks_fail_below_the_slo_and_warn_when_there_is_nothing_to_judge() -> None:
    service = Config.model_validate(
        {
            "services": [
                {
                    "name": "api",
                    "url": "https://api.example.com",
                    "slo": {"availability": "99.9%", "latency_p95": "200ms"},
                }
            ]
        }
    ).services[0]

    def statuses(
        availability: float | None, p95: float | None, coverage: float | None = 100.0
    ) -> dict[str, tuple[str, str]]:
        metrics = {"availability_pct": availability, "coverage_pct": coverage, "latency_p95_ms": p95}
        return {c.check: (c.status, c.detail) for c in service_checks(service, metrics)}

    assert statuses(99.95, 150.0) == {
        "availability": ("ok", "99.950% available, SLO 99.9%, coverage 100.00%"),
        "latency_p95": ("ok", "p95 150.0ms, limit 200ms"),
        "coverage": ("ok", "coverage 100.00% of the period measured, minimum 90%"),
    }
    assert statuses(99.9, 200.0)["availability"][0] == "ok" and statuses(99.9, 200.0)["latency_p95"][0] == "ok"
    assert statuses(99.89, 200.1) == {
        "availability": ("fail", "99.890% available, SLO 99.9%, coverage 100.00%"),
        "latency_p95": ("fail", "p95 200.1ms, limit 200ms"),
        "coverage": ("ok", "coverage 100.00% of the period measured, minimum 90%"),
    }
    assert statuses(None, None, 0.0) == {
        "availability": ("warn", "no data in the period"),
        "latency_p95": ("warn", "no successful probe in the period"),
        "coverage": ("warn", "coverage 0.00% of the period measured, minimum 90%"),
    }
    # The whole period in maintenance: nothing to measure, still not a clean ok.
    assert statuses(None, None, None)["coverage"] == ("warn", "nothing of the period measured, minimum 90%")


def test_a_month_measured_on_little_data_is_a_coverage_warn_not_a_clean_ok(store: OpsStore) -> None:
    from opsflow.results import RoutineResult
    from tasks.sla import build_items

    cfg = Config.model_validate(
        {
            "timezone": "UTC",
            "services": [
                {"name": "sparse", "url": "https://sparse.example.com/", "interval": "60s"},
                {"name": "full", "url": "https://full.example.com/", "interval": "60s", "slo": {"min_coverage": "95%"}},
            ],
        }
    )
    rng = random.Random(3)
    # sparse: six hours of healthy probes in November (0.83% of the month); full: every minute of the month.
    rows = [probe("sparse", utc(2026, 11, 10) + timedelta(minutes=m), True, rng) for m in range(6 * 60)]
    rows += [probe("full", utc(2026, 11, 1) + timedelta(minutes=m), True, rng) for m in range(30 * 24 * 60)]
    store.write_probe_results(rows)
    period = parse_period("2026-11", utc(2026, 12, 3), cfg.tzinfo)
    items = {i.name: i for i in build_items(cfg, compute_sla(store, cfg, period), None)}

    sparse = {c.check: c for c in items["sparse"].checks}
    assert sparse["availability"].status == "ok"  # 100% of what little was measured
    assert sparse["coverage"].status == "warn"
    assert sparse["coverage"].detail == "coverage 0.83% of the period measured, minimum 90%"
    assert sparse["coverage"].observed == pytest.approx(100 * 6 / (30 * 24), abs=1e-4)
    assert sparse["coverage"].expected == 90.0
    assert items["sparse"].status == "warn"

    full = {c.check: c for c in items["full"].checks}
    assert full["coverage"].status == "ok" and full["coverage"].observed == 100.0
    assert full["coverage"].detail == "coverage 100.00% of the period measured, minimum 95%"
    assert items["full"].status == "ok"

    result = RoutineResult(routine="sla-report", as_of=utc(2026, 12, 3), items=list(items.values()))
    assert result.status == "warn"


def test_an_unwritable_out_dir_is_the_runs_error_and_the_result_is_still_stored(
    prefect_api: None,
    pg_url: str,
    tmp_path: Path,
    generated: dict[str, list[ProbeRow]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from opsflow.cli import run

    monkeypatch.setattr("tasks.retry.BACKOFF_SECONDS", 0.01)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")  # a path under a file: unwritable even for root
    doc = {**CONFIG, "store": {"url": pg_url}, "reports": {"monthly": {"out_dir": str(blocker / "out")}}}
    path = tmp_path / "opsflow.yaml"
    path.write_text(yaml.safe_dump(doc))
    store = OpsStore(pg_url)
    store.migrate()
    store.write_probe_results([r for rows in generated.values() for r in rows])
    args = ["run", "sla-report", "--config", str(path), "--period", "2026-10-25..2026-10-26", "--json"]
    code = run([*args[:-1], "--as-of", "2026-11-03T08:00:00Z", "--json"])
    document = json.loads(capsys.readouterr().out)
    assert code == 1
    items = {i["name"]: i for i in document["items"]}
    assert {"api", "new", "jittery", "report-output"} <= set(items)
    [csv_check] = items["report-output"]["checks"]
    assert csv_check["check"] == "csv" and csv_check["status"] == "error"
    assert str(blocker / "out") in csv_check["detail"] and "not written" in csv_check["detail"]
    assert "csv" not in document.get("outputs", {})
    stored = store.results("sla-report", scope="2026-10-25..2026-10-26")
    assert stored and "report-output" in {i.name for i in stored[-1].items}
    assert blocker.read_text() == "not a directory"


def test_the_csv_is_written_atomically_under_an_absolute_out_dir(
    prefect_api: None,
    pg_url: str,
    tmp_path: Path,
    generated: dict[str, list[ProbeRow]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flows.sla_report import sla_report
    from opsflow.files import output_dir

    home = tmp_path / "home"
    monkeypatch.setenv("OPSFLOW_HOME", str(home))
    monkeypatch.chdir(tmp_path)
    assert output_dir("") == home.absolute() / "reports/out"
    assert output_dir("/srv/reports") == Path("/srv/reports")
    doc = {**CONFIG, "store": {"url": pg_url}, "reports": {"monthly": {"out_dir": "sla"}}}
    path = tmp_path / "opsflow.yaml"
    path.write_text(yaml.safe_dump(doc))
    store = OpsStore(pg_url)
    store.migrate()
    store.write_probe_results([r for rows in generated.values() for r in rows])
    state = sla_report(
        period="2026-10-25..2026-10-26", as_of=utc(2026, 11, 3), config_path=str(path), return_state=True
    )
    result = routine_result(state)
    assert result is not None and "report-output" not in {i.name for i in result.items}
    written = home / "sla" / "sla-range-2026-10-25_to_2026-10-26.csv"
    assert result.outputs["csv"] == str(written.absolute())
    assert [p.name for p in written.parent.iterdir()] == [written.name]  # no temporary file left behind
    assert written.read_text().count("\n") == 4 and not (tmp_path / "sla").exists()


def test_a_csv_write_failing_half_way_leaves_the_previous_file_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opsflow.errors import PermanentFailure
    from opsflow.results import RoutineResult
    from tasks import sla

    period = parse_period("2026-10", utc(2026, 11, 3), BERLIN)
    previous = tmp_path / "sla-month-2026-10.csv"
    previous.write_text("the previous report\n")

    import opsflow.files

    def disk_full(descriptor: int) -> None:  # the bytes are in the temporary file, not yet on disk
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(opsflow.files.os, "fsync", disk_full)
    result = RoutineResult(routine="sla-report", as_of=utc(2026, 11, 3), items=[])
    with pytest.raises(PermanentFailure, match="No space left on device"):
        sla.write_csv(result, period, tmp_path)
    assert previous.read_text() == "the previous report\n"
    assert [p.name for p in tmp_path.iterdir()] == [previous.name]
