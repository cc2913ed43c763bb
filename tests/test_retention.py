"""Raw probe retention (issue 19): old monthly partitions dropped, rollups kept, old reports unchanged."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from opsflow import sla_store
from opsflow.config import Config
from opsflow.retention import month_start, next_month, prune_after_report
from opsflow.store import OpsStore
from tasks.periods import Period
from tasks.sla import compute_sla

INTERVAL = 300.0
SERVICES = ("svc-a", "svc-b", "svc-c")
NOW = datetime.now(UTC)
#: The current month and the three before it; the oldest is the one pruned.
MONTHS = [month_start(NOW)]
for _ in range(3):
    MONTHS.insert(0, month_start(MONTHS[0] - timedelta(days=1)))
OLDEST = MONTHS[0]

#: The hour holding svc-a's half hour of maintenance (in the oldest month).
MAINTENANCE_HOUR = OLDEST + timedelta(days=9, hours=2)

# Every service probed every 5 minutes from the oldest month until the last hour: a run of 4
# failures every 1,500 probes (an incident with failure_threshold 3), a few lone failures, and
# log-normal latencies; no failure in the maintenance hour or within an hour of a month's start (no
# incident straddles a month, whose records and raw rows would count it differently). Generated
# inside PostgreSQL (~100k rows in a second).
GENERATE = """
insert into opsflow.probe_results (service, checked_at, ok, latency_ms, status_code, error)
select s.name, t, ok, case when ok then exp(3.9 + 0.5 * sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random())) end,
       case when ok then 200 else 503 end, case when ok then null else 'HTTP 503' end
from unnest(%(names)s::text[]) with ordinality s(name, i)
cross join lateral (
    select t, (t >= %(quiet)s and t < %(quiet)s + interval '1 hour')
              or date_trunc('month', t + interval '1 hour', 'UTC') <> date_trunc('month', t - interval '1 hour', 'UTC')
              or not ((extract(epoch from t)::bigint / 300 + s.i * 397) %% 1500 < 4 or random() < 0.002) as ok
    from generate_series(%(start)s::timestamptz, %(end)s::timestamptz - interval '300 seconds',
                         interval '300 seconds') t) g
"""

# The incident records the prober keeps live (SPEC §6: opened at the first of 3 consecutive failures,
# closed by the next success), derived here from the raw rows independently of the report's SQL.
RECORD_INCIDENTS = """
insert into opsflow.incidents (service, opened_at, closed_at, last_error)
select service, min(checked_at),
       (select min(q.checked_at) from opsflow.probe_results q
        where q.service = g.service and q.ok and q.checked_at > max(g.checked_at)), 'HTTP 503'
from (select service, checked_at, ok,
             count(*) filter (where ok) over (partition by service order by checked_at) as successes_before
      from opsflow.probe_results) g
where not ok group by service, successes_before having count(*) >= 3
"""


def config_doc(**store: Any) -> dict[str, Any]:
    return {
        "store": store,
        "services": [{"name": n, "url": f"https://{n}.example.com/", "interval": "5m"} for n in SERVICES],
        # Half an hour of maintenance: read raw before pruning, pro rata from its hour after.
        "maintenance": [
            {
                "services": ["svc-a"],
                "start": (MAINTENANCE_HOUR + timedelta(minutes=30)).isoformat(),
                "end": (MAINTENANCE_HOUR + timedelta(hours=1)).isoformat(),
                "reason": "upgrade",
            }
        ],
    }


@pytest.fixture
def config() -> Config:
    return Config.model_validate(config_doc())


def fill(store: OpsStore, config: Config, extra_service: str | None = None) -> None:
    """Four months of history, its rollups and incident records."""
    end = sla_store.floor_hour(NOW) - timedelta(hours=1)
    names = [*SERVICES, *([extra_service] if extra_service else [])]
    with store.connection() as conn:
        for month in MONTHS:
            conn.execute("select opsflow.ensure_probe_partition(%s)", (month,))
        conn.execute(GENERATE, {"names": names, "start": OLDEST, "end": end, "quiet": MAINTENANCE_HOUR})
        conn.execute(RECORD_INCIDENTS)
    with store.connection() as conn:
        sla_store.rebuild_all(conn, [(s.name, s.interval) for s in config.services])


def partition_rows(store: OpsStore) -> dict[str, int]:
    """Rows per partition of opsflow.probe_results, as pg_inherits lists them."""
    with store.connection() as conn:
        names = [
            row[0]
            for row in conn.execute(
                """select c.relname from pg_inherits i join pg_class c on c.oid = i.inhrelid
                   where i.inhparent = 'opsflow.probe_results'::regclass order by 1"""
            )
        ]
        return {name: conn.execute(f"select count(*) from opsflow.{name}").fetchone()[0] for name in names}  # type: ignore[index]


def part(month: datetime) -> str:
    return f"probe_results_{month:%Y_%m}"


def the_oldest_month() -> Period:
    return Period("month", f"{OLDEST:%Y-%m}", OLDEST, next_month(OLDEST))


def a_range_with_partial_hours() -> Period:
    return Period(
        "range", "edges", OLDEST + timedelta(days=3, hours=10, minutes=20), OLDEST + timedelta(days=20, hours=7)
    )


def assert_same(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]], exact: bool) -> None:
    for name in SERVICES:
        b, a = before[name], after[name]
        assert b["up_seconds"] > 0 and b["incidents"], name  # the history really has something to compare
        slack = 0.0 if exact else INTERVAL  # a pro-rated half hour may differ by at most one probe's coverage
        assert abs(a["up_seconds"] - b["up_seconds"]) <= slack + 0.001, name
        assert abs(a["down_seconds"] - b["down_seconds"]) <= slack + 0.001, name
        assert abs(a["availability_pct"] - b["availability_pct"]) <= (0.0 if exact else 0.01) + 1e-6, name
        assert abs(a["latency_p95_ms"] - b["latency_p95_ms"]) <= 0.01 * b["latency_p95_ms"], name
        if exact:
            assert [i["start"] for i in a["incidents"]] == [i["start"] for i in b["incidents"]], name
        else:  # a run of failures across a range's edge may count on one side only
            assert abs(len(a["incidents"]) - len(b["incidents"])) <= 1, name


def test_the_oldest_months_report_is_the_same_after_its_raw_rows_are_dropped(store: OpsStore, config: Config) -> None:
    fill(store, config)
    month, edges = the_oldest_month(), a_range_with_partial_hours()
    before = compute_sla(store, config, month), compute_sla(store, config, edges)
    rows_before = partition_rows(store)
    assert set(rows_before) == {part(m) for m in MONTHS}

    pruned = store.drop_raw_probe_partitions(MONTHS[1], [(s.name, s.interval) for s in config.services])

    assert pruned.dropped == [part(OLDEST)] and not pruned.refused
    rows_after = partition_rows(store)
    assert part(OLDEST) not in rows_after  # gone from pg_inherits
    assert rows_after == {name: n for name, n in rows_before.items() if name != part(OLDEST)}  # the others untouched
    assert_same(before[0], compute_sla(store, config, month), exact=True)  # whole hours: exactly the rollups
    assert_same(before[1], compute_sla(store, config, edges), exact=False)  # partial hours: pro rata
    # Whatever the age asked for, the previous and current months stay raw.
    again = store.drop_raw_probe_partitions(NOW, [(s.name, s.interval) for s in config.services])
    assert again.dropped == [part(MONTHS[1])]
    assert set(partition_rows(store)) == {part(MONTHS[2]), part(MONTHS[3])}


def test_rollup_rebuilds_never_zero_out_a_dropped_month(store: OpsStore, config: Config) -> None:
    fill(store, config)
    month = the_oldest_month()
    before = compute_sla(store, config, month)
    services = [(s.name, s.interval) for s in config.services]
    assert store.drop_raw_probe_partitions(MONTHS[1], services).dropped == [part(OLDEST)]
    with store.connection() as conn:
        # `opsflow sla rebuild-rollups`, the days and weeks of the month gone (rebuilt from the hours when
        # read), and a late result of the dropped month refreshing its hours as a probe run would.
        sla_store.rebuild_all(conn, services)
        conn.execute("delete from opsflow.probe_daily where day >= %s and day < %s", (month.start, month.end))
        conn.execute("delete from opsflow.probe_weekly where week >= %s and week < %s", (month.start, month.end))
        sla_store.refresh_rollups(conn, services, month.start, month.end)
    assert_same(before, compute_sla(store, config, month), exact=True)


def test_a_report_over_dropped_months_says_so_and_takes_incidents_from_the_records(
    store: OpsStore, config: Config
) -> None:
    fill(store, config)
    services = [(s.name, s.interval) for s in config.services]
    month = the_oldest_month()
    assert store.drop_raw_probe_partitions(MONTHS[1], services).dropped == [part(OLDEST)]
    plan = sla_store.plan_reads([(name, month.start, month.end, INTERVAL) for name in SERVICES])
    with store.connection() as conn:
        figures = sla_store.read_figures(conn, plan, dict.fromkeys(SERVICES, 3), month.start, month.end)
        recorded = conn.execute(
            "select count(*) from opsflow.incidents where opened_at >= %s and opened_at < %s", (month.start, month.end)
        ).fetchone()
    for name in SERVICES:
        assert any("dropped by retention" in note and f"{OLDEST:%Y-%m}" in note for note in figures[name].notes)
    assert recorded and sum(len(f.incidents) for f in figures.values()) == recorded[0] > 0


def test_a_partition_whose_rollups_cannot_be_completed_is_kept_with_one_warning(
    store: OpsStore, config: Config, caplog: pytest.LogCaptureFixture
) -> None:
    fill(store, config, extra_service="retired-svc")  # in the raw rows, not in the config, never rolled up
    with caplog.at_level(logging.WARNING, logger="opsflow.retention"):
        pruned = store.drop_raw_probe_partitions(MONTHS[1], [(s.name, s.interval) for s in config.services])
    assert pruned.dropped == [] and "retired-svc" in pruned.refused[part(OLDEST)]
    warnings = [
        r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == "opsflow.retention"
    ]
    assert len(warnings) == 1 and part(OLDEST) in warnings[0] and "\n" not in warnings[0]
    assert part(OLDEST) in partition_rows(store)


def write_config(tmp_path: Path, **store: Any) -> Path:
    path = tmp_path / "opsflow.yaml"
    path.write_text(yaml.safe_dump(config_doc(**store)))
    return path


def test_store_prune_dry_run_drops_nothing_and_the_command_drops(
    store: OpsStore, config: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from opsflow.cli import run

    fill(store, config)
    path = write_config(tmp_path, url=store.url, raw_probe_retention="35d")
    rows_before = partition_rows(store)
    assert run(["store", "prune", "--dry-run", "--json", "--config", str(path)]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["dry_run"] is True and part(OLDEST) in document["dropped"]
    assert partition_rows(store) == rows_before
    with store.connection() as conn:
        assert conn.execute("select count(*) from opsflow.probe_retention").fetchone() == (0,)
    assert run(["store", "prune", "--config", str(path)]) == 0
    assert part(OLDEST) in capsys.readouterr().out
    assert part(OLDEST) not in partition_rows(store)
    assert {part(MONTHS[2]), part(MONTHS[3])} <= set(partition_rows(store))


def test_a_retention_shorter_than_35_days_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from opsflow.cli import run

    path = write_config(tmp_path, raw_probe_retention="10d")
    assert run(["store", "prune", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "store.raw_probe_retention" in err and "at least 35d" in err
    # Unset: prune has nothing to go by (exit 2, one line); null is the default (keep forever).
    assert run(["store", "prune", "--config", str(write_config(tmp_path, raw_probe_retention=None))]) == 2
    assert "store.raw_probe_retention is not set" in capsys.readouterr().err
    assert Config.model_validate(config_doc()).store.raw_probe_retention is None


def test_the_daily_sla_report_prunes_as_its_bookkeeping(
    prefect_api: None, store: OpsStore, config: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from opsflow.cli import run

    fill(store, config)
    path = write_config(tmp_path, url=store.url, raw_probe_retention="35d")
    assert run(["run", "sla-report", "--period", "day", "--config", str(path), "--json"]) in (0, 1)
    assert json.loads(capsys.readouterr().out)["routine"] == "sla-report"
    assert part(OLDEST) not in partition_rows(store)
    assert {part(MONTHS[2]), part(MONTHS[3])} <= set(partition_rows(store))
    # The pruned month's report still runs, and its coverage check says how it was read.
    assert run(["run", "sla-report", "--period", f"{OLDEST:%Y-%m}", "--config", str(path), "--json"]) in (0, 1)
    report = json.loads(capsys.readouterr().out)
    coverage = [check for item in report["items"] for check in item["checks"] if check["check"] == "coverage"]
    assert coverage and all("dropped by retention" in check["detail"] for check in coverage)


def test_a_failing_prune_after_the_report_is_one_warning_line(caplog: pytest.LogCaptureFixture) -> None:
    configured = Config.model_validate(config_doc(raw_probe_retention="35d"))

    class Broken:
        def drop_raw_probe_partitions(self, *args: object, **kwargs: object) -> None:
            raise RuntimeError("the store went away\nsecond line")

    with caplog.at_level(logging.WARNING, logger="opsflow.retention"):
        prune_after_report(Broken(), configured)  # type: ignore[arg-type]
    warnings = [
        r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == "opsflow.retention"
    ]
    assert warnings == ["raw probe retention skipped this time: the store went away"]
