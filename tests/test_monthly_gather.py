"""The monthly report's content gathered from stored results (tasks/monthly.py; issue 17, SPEC §1 stakeholder).

Hand-built results of every routine, with the metric names the routines really store, for October and
September 2026 in Europe/Berlin (month bounds at local midnight, a DST change inside October), saved in a
real ops store; every gathered figure is checked against what was stored.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from opsflow.config import Config, parse_config
from opsflow.history_csv import CapacityRow
from opsflow.results import Check, Item, Period, RoutineResult
from opsflow.store import OpsStore
from tasks.monthly import gather_month, month_bounds, previous_month, results_digest

CONFIG_YAML = """\
timezone: Europe/Berlin
capacity:
  - {metric: shop-db-size, source: {type: import}, threshold: 5000, window: 30d}
"""
OCT_START = datetime(2026, 9, 30, 22, tzinfo=UTC)  # 2026-10-01 00:00 CEST
OCT_END = datetime(2026, 10, 31, 23, tzinfo=UTC)  # 2026-11-01 00:00 CET
NOW = datetime(2026, 11, 2, 8, tzinfo=UTC)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def ok(name: str, detail: str = "fine", **fields: Any) -> Check:
    return Check(check=name, status="ok", detail=detail, **fields)


def bad(name: str, detail: str, status: str = "fail", **fields: Any) -> Check:
    return Check(check=name, status=status, detail=detail, **fields)  # type: ignore[arg-type]


def save(store: OpsStore, routine: str, as_of: str, items: list[Item], scope: str = "", **kw: Any) -> RoutineResult:
    result = RoutineResult(routine=routine, as_of=at(as_of), items=items, **kw)
    store.save_result(result, scope)
    return result


# -- the routines' results ---------------------------------------------------------------------------------


def sla_item(name: str, availability: float | None, *, slo: float = 99.9, down: float = 0.0, **m: Any) -> Item:
    metrics = {
        "availability_pct": availability,
        "slo_availability_pct": slo,
        "up_seconds": 2_678_000.0,
        "down_seconds": down,
        "maintenance_seconds": m.pop("maintenance", 0.0),
        "no_data_seconds": 0.0,
        "coverage_pct": m.pop("coverage", 99.5),
        "error_budget_seconds": 2678.0,
        "error_budget_remaining_pct": m.pop("budget", 50.0),
        "latency_p50_ms": 40.0,
        "latency_p95_ms": m.pop("p95", 123.456),
        "latency_p99_ms": 300.0,
        "incidents": m.pop("incidents", []),
        "mttr_seconds": m.pop("mttr", None),
        **m,
    }
    met = availability is not None and availability >= slo
    checks = [
        Check(check="availability", status="ok" if met else "fail", detail="x", observed=availability, expected=slo),
        Check(check="latency_p95", status="ok", detail="p95", observed=metrics["latency_p95_ms"], expected=500.0),
        ok("coverage", observed=metrics["coverage_pct"], expected=90.0),
    ]
    return Item(name=name, checks=checks, metrics=metrics)


API_INCIDENTS = [
    {"start": "2026-10-03T10:00:00Z", "end": "2026-10-03T10:12:30Z", "seconds": 750.0},
    {"start": "2026-10-31T22:55:00Z", "end": None, "seconds": 300.0},
]


def save_sla(store: OpsStore) -> None:
    period = Period(label="2026-10", start=OCT_START, end=OCT_END)
    # A partial report made mid-month, an earlier complete revision, and the newest one (the one used).
    save(store, "sla-report", "2026-10-20T06:00:00Z", [sla_item("api", 90.0)], scope="2026-10", period=period)
    save(store, "sla-report", "2026-11-01T06:00:00Z", [sla_item("api", 99.0)], scope="2026-10", period=period)
    october = [
        sla_item("api", 99.951234, down=1050.0, maintenance=3600.0, budget=60.8, mttr=525.0, incidents=API_INCIDENTS),
        sla_item("web", 99.5, down=13_390.0, p95=None, coverage=88.25, budget=-399.5),
        Item(name="report-output", checks=[bad("csv", "not written", "error")]),
    ]
    save(store, "sla-report", "2026-11-01T07:00:00Z", october, scope="2026-10", period=period)
    september = [
        sla_item(
            "api", 99.8, incidents=[{"start": "2026-09-02T01:00:00Z", "end": "2026-09-02T01:10:00Z", "seconds": 600.0}]
        ),
        sla_item("web", 99.5),
    ]
    save(store, "sla-report", "2026-10-01T05:00:00Z", september, scope="2026-09")
    # Daily reports: two days of October (the last one made after the month ended), a day of September.
    save(store, "sla-report", "2026-10-02T04:00:00Z", [sla_item("api", 100.0, p95=80.5)], scope="2026-10-01")
    save(store, "sla-report", "2026-11-01T05:00:00Z", [sla_item("api", 99.5, down=432.0)], scope="2026-10-31")
    save(store, "sla-report", "2026-10-01T04:00:00Z", [sla_item("api", 97.0)], scope="2026-09-30")


def backup_item(name: str, failing: Check | None = None) -> Item:
    checks = [ok("present"), ok("fresh"), ok("readable", "3 backups verified (1 this run, the rest from the ledger)")]
    if failing is not None:
        checks.insert(1, failing)
    return Item(name=name, checks=checks, metrics={"count": 3, "newest_key": f"{name}/x.dump", "age_seconds": 60})


def save_backups(store: OpsStore) -> None:
    stale = bad("fresh", "newest backup is 31h old, limit 26h", observed=111600, expected=93600)
    routine = "backup-verification"
    save(store, routine, "2026-09-30T21:30:00Z", [backup_item("shop-db", stale)])  # 23:30 local, Sept 30: out
    save(store, routine, "2026-09-30T22:30:00Z", [backup_item("shop-db")])  # 00:30 local, Oct 1: in
    save(store, routine, "2026-10-01T04:00:00Z", [backup_item("shop-db"), backup_item("crm-db")])
    save(store, routine, "2026-10-02T04:00:00Z", [backup_item("shop-db"), backup_item("crm-db", stale)])
    save(store, routine, "2026-10-03T04:00:00Z", [backup_item("crm-db", bad("size", "newest is 10% of median"))])
    save(store, routine, "2026-10-31T23:30:00Z", [backup_item("shop-db", stale)])  # Nov 1 local: after the month
    save(store, routine, "2026-09-10T04:00:00Z", [backup_item("shop-db")])


def drill_item(database: str, rto: float, rpo: float, failing: Check | None = None) -> Item:
    checks = [ok("download"), ok("restore"), ok("rto"), ok("rpo"), ok("cleanup")]
    if failing is not None:
        checks.append(failing)
    metrics = {
        "rto_seconds": rto,
        "rpo_seconds": rpo,
        "rto_target_seconds": 900.0,
        "rpo_target_seconds": 86400.0,
        "backup_key": f"{database}/x.dump",
        "tables": {"orders": 10},
        "cleaned_up": True,
    }
    return Item(name=database, checks=checks, metrics=metrics)


def save_drills(store: OpsStore) -> None:
    save(store, "dr-drill", "2026-10-10T10:00:00Z", [drill_item("shop", 120.5, 3600.25)], scope="shop")
    slow = bad("rto", "RTO 1200s over the 900s target", observed=1200.0, expected=900.0)
    save(store, "dr-drill", "2026-10-20T10:00:00Z", [drill_item("crm", 1200.0, 7200.0, slow)], scope="crm")
    save(store, "dr-drill", "2026-09-15T10:00:00Z", [drill_item("shop", 100.0, 3000.0)], scope="shop")
    save(store, "dr-drill", "2026-11-01T10:00:00Z", [drill_item("shop", 1.0, 1.0)], scope="shop")  # after


def capacity_item(current: float, low: float | None) -> Item:
    metrics = {
        "current": current,
        "threshold": 5000.0,
        "unit": "",
        "slope_per_day": 12.5,
        "days_to_threshold": 40.0,
        "crossing_date": "2026-12-04",
        "days_to_threshold_low": low,
        "days_to_threshold_high": 60.0,
        "samples": 100,
    }
    return Item(name="shop-db-size", checks=[ok("forecast"), ok("growth_change")], metrics=metrics)


def save_capacity(store: OpsStore) -> None:
    save(store, "capacity-trends", "2026-10-18T05:00:00Z", [capacity_item(4000.0, 50.0)])
    save(store, "capacity-trends", "2026-10-25T05:00:00Z", [capacity_item(4500.0, 25.0)])
    save(store, "capacity-trends", "2026-11-01T05:00:00Z", [capacity_item(4999.0, 1.0)])  # after the month
    samples = [
        ("2026-09-20T12:00:00Z", 1.0),  # before the 30-day window
        ("2026-10-20T01:00:00Z", 4300.0),
        ("2026-10-20T13:00:00Z", 4350.0),
        ("2026-10-21T23:30:00Z", 4400.0),  # a UTC day (the forecast's days), though 01:30 local on the 22nd
        ("2026-10-25T04:00:00Z", 4500.0),
        ("2026-10-25T06:00:00Z", 9999.0),  # after the forecast's as_of
    ]
    store.write_capacity_samples([CapacityRow("shop-db-size", at(ts), value) for ts, value in samples])


def quality_item(table: str, failing: Check | None = None) -> Item:
    checks = [ok("expect_column_values_to_not_be_null:user_id", unexpected_count=0, unexpected_percent=0.0)]
    if failing is not None:
        checks.append(failing)
    return Item(name=table, checks=checks, metrics={"rows": 1000})


def save_quality(store: OpsStore) -> None:
    dupes = bad("expect_column_values_to_be_unique:event_id", "12 duplicated", unexpected_count=12)
    stale = bad("freshness:loaded_at", "nothing loaded for 3h")
    save(
        store,
        "data-quality",
        "2026-10-05T05:00:00Z",
        [quality_item("analytics.events", dupes), quality_item("analytics.daily_revenue")],
    )
    save(
        store,
        "data-quality",
        "2026-10-12T05:00:00Z",
        [quality_item("analytics.events"), quality_item("analytics.daily_revenue")],
    )
    save(
        store,
        "data-quality",
        "2026-10-19T05:00:00Z",
        [quality_item("analytics.events", stale), quality_item("analytics.daily_revenue")],
    )
    save(store, "data-quality", "2026-11-01T05:00:00Z", [quality_item("analytics.events")])  # after


def expiry_item(name: str, days_left: int | None, source: str, owner: str | None = None) -> Item:
    if days_left is None:
        return Item(name=name, checks=[bad("expiry", "unreachable", "error")], metrics={"source": source})
    status = "fail" if days_left <= 7 else "warn" if days_left <= 30 else "ok"
    metrics = {"expires_at": "2026-11-20T10:00:00Z", "days_left": days_left, "source": source}
    if owner:
        metrics["owner"] = owner
    return Item(name=name, checks=[Check(check="expiry", status=status, detail="d")], metrics=metrics)


def save_expiry(store: OpsStore) -> None:
    items = [
        expiry_item("vpn-cert", 20, "tls"),
        expiry_item("contract", 5, "date", owner="legal"),
        expiry_item("license", 31, "date"),  # after the end of November (horizon 30 days)
        expiry_item("old-domain", -2, "date"),
        expiry_item("edge", None, "tls"),
        expiry_item("november-end", 30, "date"),
    ]
    save(store, "expiry-check", "2026-10-31T05:00:00Z", items)
    save(store, "expiry-check", "2026-10-01T05:00:00Z", [expiry_item("vpn-cert", 50, "tls")])
    save(store, "expiry-check", "2026-11-01T05:00:00Z", [expiry_item("brand-new", 1, "date")])  # after


@pytest.fixture
def config() -> Config:
    return parse_config(CONFIG_YAML)


@pytest.fixture
def stored(store: OpsStore, config: Config) -> OpsStore:
    save_sla(store)
    save_backups(store)
    save_drills(store)
    save_capacity(store)
    save_quality(store)
    save_expiry(store)
    return store


# -- the tests ----------------------------------------------------------------------------------------------


def test_month_bounds_are_local_midnights_in_utc() -> None:
    berlin = parse_config(CONFIG_YAML).tzinfo
    assert month_bounds("2026-10", berlin) == (OCT_START, OCT_END)  # CEST start, CET end
    assert month_bounds("2026-12", berlin) == (
        datetime(2026, 11, 30, 23, tzinfo=UTC),
        datetime(2026, 12, 31, 23, tzinfo=UTC),
    )
    assert month_bounds("2026-10", UTC) == (datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC))
    assert previous_month("2026-01") == "2025-12" and previous_month("2026-10") == "2026-09"
    for wrong in ("2026-13", "2026-1", "October", ""):
        with pytest.raises(ValueError, match="not a month"):
            month_bounds(wrong, berlin)


def test_results_between_bounds_scope_and_order(stored: OpsStore) -> None:
    october = stored.results_between("backup-verification", OCT_START, OCT_END)
    assert [r.as_of for _, r in october] == [
        at("2026-09-30T22:30:00Z"),
        at("2026-10-01T04:00:00Z"),
        at("2026-10-02T04:00:00Z"),
        at("2026-10-03T04:00:00Z"),
    ]
    assert {scope for scope, _ in october} == {""}
    drills = stored.results_between("dr-drill", OCT_START, OCT_END)
    assert [(scope, r.items[0].name) for scope, r in drills] == [("shop", "shop"), ("crm", "crm")]
    assert [s for s, _ in stored.results_between("dr-drill", OCT_START, OCT_END, scope="crm")] == ["crm"]
    assert stored.results_between("dr-drill", OCT_START, OCT_END, scope="nothing") == []
    # end is exclusive, start inclusive
    assert len(stored.results_between("dr-drill", at("2026-10-10T10:00:00Z"), at("2026-10-20T10:00:00Z"))) == 1


def test_services_are_the_stored_monthly_sla_report(stored: OpsStore, config: Config) -> None:
    report = gather_month(stored, config, "2026-10", NOW)
    assert (report.month, report.timezone, report.start, report.end) == ("2026-10", "Europe/Berlin", OCT_START, OCT_END)
    assert report.generated_at == NOW and report.revision == 1
    api, web = report.services  # the newest complete report; report-output is not a service
    assert api.service == "api" and web.service == "web"
    assert api.availability_pct == pytest.approx(99.951234, abs=0.001)
    assert (api.slo_pct, api.slo_met, api.downtime_seconds, api.maintenance_seconds) == (99.9, True, 1050.0, 3600.0)
    assert (api.error_budget_remaining_pct, api.latency_p95_ms, api.latency_slo_ms) == (60.8, 123.456, 500.0)
    assert (api.coverage_pct, api.mttr_seconds, api.previous_availability_pct) == (99.5, 525.0, 99.8)
    assert [(i.service, i.start, i.end, i.seconds) for i in api.incidents] == [
        ("api", at("2026-10-03T10:00:00Z"), at("2026-10-03T10:12:30Z"), 750.0),
        ("api", at("2026-10-31T22:55:00Z"), None, 300.0),
    ]
    # Joined to the incident record of the same service and start, when the probes recorded one.
    assert [i.record for i in api.incidents] == [None, None]
    # Daily: both October days (the 31st's report made after the month ended), not September's 30th.
    assert api.daily == [(date(2026, 10, 1), 100.0, 0.0, 80.5), (date(2026, 10, 31), 99.5, 432.0, 123.456)]
    assert (web.availability_pct, web.slo_met, web.downtime_seconds, web.latency_p95_ms) == (99.5, False, 13390.0, None)
    assert (web.coverage_pct, web.error_budget_remaining_pct, web.incidents, web.daily) == (88.25, -399.5, [], [])
    assert web.previous_availability_pct == 99.5


def test_backups_per_set_over_the_local_month(stored: OpsStore, config: Config) -> None:
    crm, shop = gather_month(stored, config, "2026-10", NOW).backups
    # shop-db: 00:30 local on Oct 1 (22:30Z Sept 30) counts; 23:30 local Sept 30 and Nov 1 00:30 local do not.
    assert (shop.backup_set, shop.runs, shop.days_verified, shop.failed_runs) == ("shop-db", 3, 2, 0)
    assert (shop.objects_verified, shop.last_status, shop.failures) == (3, "ok", [])
    assert (crm.backup_set, crm.runs, crm.days_verified, crm.failed_runs, crm.last_status) == (
        "crm-db",
        3,
        1,
        2,
        "fail",
    )
    assert crm.objects_verified == 1
    assert crm.failures == [
        "2026-10-02: fresh: newest backup is 31h old, limit 26h",
        "2026-10-03: size: newest is 10% of median",
    ]


def test_drills_quality_capacity_and_expiry(stored: OpsStore, config: Config) -> None:
    report = gather_month(stored, config, "2026-10", NOW)
    shop, crm = report.drills
    assert (shop.database, shop.at, shop.status, shop.rto_seconds, shop.rpo_seconds) == (
        "shop",
        at("2026-10-10T10:00:00Z"),
        "ok",
        120.5,
        3600.25,
    )
    assert (shop.rto_target_seconds, shop.rpo_target_seconds, shop.failing) == (900.0, 86400.0, [])
    assert (crm.database, crm.status, crm.rto_seconds, crm.failing) == (
        "crm",
        "fail",
        1200.0,
        ["rto: RTO 1200s over the 900s target"],
    )
    revenue, events = report.quality
    assert (events.table, events.runs, events.passed_runs, events.last_status) == ("analytics.events", 3, 1, "fail")
    assert events.last_failing == ["freshness:loaded_at: nothing loaded for 3h"]
    assert (revenue.table, revenue.runs, revenue.passed_runs, revenue.last_failing) == (
        "analytics.daily_revenue",
        3,
        3,
        [],
    )
    (forecast,) = report.capacity  # the latest before the month's end, not November's
    assert (forecast.metric, forecast.status, forecast.current, forecast.threshold) == (
        "shop-db-size",
        "ok",
        4500.0,
        5000.0,
    )
    assert (forecast.days_to_threshold, forecast.days_to_threshold_low, forecast.days_to_threshold_high) == (
        40.0,
        25.0,
        60.0,
    )
    assert forecast.crossing_date == date(2026, 12, 4) and forecast.fit is None
    # Daily maxima per UTC day over the 30-day window before the forecast's as_of.
    assert forecast.daily == [(date(2026, 10, 20), 4350.0), (date(2026, 10, 21), 4400.0), (date(2026, 10, 25), 4500.0)]
    # Horizon: 2026-10-31T05:00Z to the end of November in Berlin = 30 days and 18 hours: 30.
    assert [(e.name, e.days_left, e.status) for e in report.expiring] == [
        ("old-domain", -2, "fail"),
        ("contract", 5, "fail"),
        ("vpn-cert", 20, "warn"),
        ("november-end", 30, "warn"),
    ]
    assert report.expiring[1].owner == "legal" and report.expiring[2].source == "tls"
    assert report.expiring[2].expires_at == at("2026-11-20T10:00:00Z")
    assert report.extra["expiry_horizon_days"] == 30
    assert any("edge" in note for note in report.notes)


def test_summary_counts_the_sections(stored: OpsStore, config: Config) -> None:
    s = gather_month(stored, config, "2026-10", NOW).summary
    assert (s.services, s.slos_met, s.slos_missed, s.incidents, s.downtime_seconds) == (2, 1, 1, 2, 14440.0)
    assert s.error_budget_remaining_pct == -399.5
    assert (s.backup_sets, s.backup_runs_ok, s.backup_runs_failed) == (2, 4, 2)
    assert (s.drills_passed, s.drills_failed) == (1, 1)
    assert (s.capacity_within_30_days, s.capacity_within_90_days) == (1, 1)
    assert s.quality_pass_rate_pct == pytest.approx(100 * 4 / 6)
    assert s.expiring_next_month == 4


def test_changes_against_last_month(stored: OpsStore, config: Config) -> None:
    changes = gather_month(stored, config, "2026-10", NOW).changes
    assert changes == [
        "api availability 99.951% (was 99.800%)",  # web is unchanged at 99.500%: no sentence
        "2 incidents (was 1)",
        "2 failed backup verifications (was 1)",
        "2 drills, 1 passed (was 1, 1 passed)",
    ]


EXPECTED_SOURCES = [
    ("backup-verification", "", "2026-09-10T04:00:00Z"),
    ("backup-verification", "", "2026-09-30T21:30:00Z"),
    ("backup-verification", "", "2026-09-30T22:30:00Z"),
    ("backup-verification", "", "2026-10-01T04:00:00Z"),
    ("backup-verification", "", "2026-10-02T04:00:00Z"),
    ("backup-verification", "", "2026-10-03T04:00:00Z"),
    ("capacity-trends", "", "2026-10-25T05:00:00Z"),
    ("data-quality", "", "2026-10-05T05:00:00Z"),
    ("data-quality", "", "2026-10-12T05:00:00Z"),
    ("data-quality", "", "2026-10-19T05:00:00Z"),
    ("dr-drill", "crm", "2026-10-20T10:00:00Z"),
    ("dr-drill", "shop", "2026-09-15T10:00:00Z"),
    ("dr-drill", "shop", "2026-10-10T10:00:00Z"),
    ("expiry-check", "", "2026-10-31T05:00:00Z"),
    ("sla-report", "2026-09", "2026-10-01T05:00:00Z"),
    ("sla-report", "2026-10", "2026-11-01T07:00:00Z"),
    ("sla-report", "2026-10-01", "2026-10-02T04:00:00Z"),
    ("sla-report", "2026-10-31", "2026-11-01T05:00:00Z"),
]


def recompute_digest(store: OpsStore, keys: list[tuple[str, str, datetime]]) -> str:
    """The docstring's recipe, from the store's rows: an auditor's recomputation."""
    texts = []
    with store.connection() as conn:
        for routine, scope, as_of in keys:
            row = conn.execute(
                "select result from opsflow.routine_runs where routine = %s and scope = %s and as_of = %s",
                (routine, scope, as_of),
            ).fetchone()
            assert row is not None
            result = RoutineResult.model_validate(row[0])
            texts.append(json.dumps(result.model_dump(mode="json"), sort_keys=True, separators=(",", ":")))
    return hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest()


def test_sources_and_digest_are_stable_and_recomputable(stored: OpsStore, config: Config) -> None:
    report = gather_month(stored, config, "2026-10", NOW)
    assert [(s.routine, s.scope, s.as_of) for s in report.sources] == [(r, s, at(t)) for r, s, t in EXPECTED_SOURCES]
    keys = [(s.routine, s.scope, s.as_of) for s in report.sources]
    assert report.digest == recompute_digest(stored, keys)
    assert len(report.digest) == 64
    again = gather_month(stored, config, "2026-10", NOW + timedelta(days=3), revision=2)
    assert again.digest == report.digest and again.revision == 2
    # A new result inside the month changes the digest.
    save(stored, "data-quality", "2026-10-26T05:00:00Z", [quality_item("analytics.events")])
    assert gather_month(stored, config, "2026-10", NOW).digest != report.digest


def test_a_result_stored_after_now_is_not_used(stored: OpsStore, config: Config) -> None:
    # At 06:30Z on Nov 1, the 07:00 revision of the October SLA report does not exist yet.
    report = gather_month(stored, config, "2026-10", at("2026-11-01T06:30:00Z"))
    assert report.services[0].availability_pct == 99.0
    assert ("sla-report", "2026-10", at("2026-11-01T07:00:00Z")) not in [
        (s.routine, s.scope, s.as_of) for s in report.sources
    ]


def test_the_rules_are_stated(stored: OpsStore, config: Config) -> None:
    rules = " ".join(gather_month(stored, config, "2026-10", NOW).rules)
    for phrase in (
        "coverage_pct = 100 * (up + down) / (period - maintenance)",
        "maintenance",
        "no_data",
        "error budget = (1 - slo) * (up + down)",
        "linear interpolation between closest ranks",
    ):
        assert phrase in rules


def test_missing_data_is_notes_not_errors(store: OpsStore, config: Config) -> None:
    report = gather_month(store, config, "2026-10", NOW)
    assert (report.services, report.backups, report.drills, report.capacity, report.quality, report.expiring) == (
        [],
        [],
        [],
        [],
        [],
        [],
    )
    assert report.sources == [] and report.digest == results_digest([]) == hashlib.sha256(b"").hexdigest()
    assert report.changes == []
    assert report.summary.services == 0 and report.summary.quality_pass_rate_pct is None
    assert (
        "no monthly SLA report stored for 2026-10: run `opsflow run sla-report --period 2026-10` first" in report.notes
    )
    assert "no drill ran this month" in report.notes
    assert "no backup-verification result stored for 2026-10" in report.notes
    assert "no data-quality result stored for 2026-10" in report.notes
    assert any(n.startswith("no capacity-trends result") for n in report.notes)
    assert any(n.startswith("no expiry-check result") for n in report.notes)


def test_a_partial_sla_report_is_not_used(store: OpsStore, config: Config) -> None:
    save(store, "sla-report", "2026-10-20T06:00:00Z", [sla_item("api", 90.0)], scope="2026-10")
    report = gather_month(store, config, "2026-10", NOW)
    assert report.services == [] and report.sources == []
    assert any("before the month ended" in n for n in report.notes)


def test_incidents_carry_their_record_number_and_what_it_told(stored: OpsStore, config: Config) -> None:
    stored.save_probe_states(
        [],
        [{"service": "api", "opened_at": at("2026-10-03T10:00:00Z"), "closed_at": at("2026-10-03T10:12:30Z"),
          "last_error": "HTTP 503"}],
        [],
    )  # fmt: skip
    [record] = stored.incidents("api")
    api = gather_month(stored, config, "2026-10", NOW).services[0]
    first, second = api.incidents
    assert first.record is not None and (first.alerts, first.escalations) == (0, 0)
    assert second.record is None  # no record of that one: the report still shows it, from the SLA report
    assert record["opened_at"] == first.start
