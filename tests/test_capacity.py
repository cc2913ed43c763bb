"""capacity-collect and capacity-trends through ``opsflow run`` on real components: a PostgreSQL database,
moto's S3, a temp filesystem, the ops store, a Prefect server (SPEC §5 capacity-trends, §6 Capacity).

The forecasting itself is tested on generated series with known truth in tests/test_capacity_forecast.py;
the sources one by one (Prometheus included) in tests/test_capacity_sources.py.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from opsflow.cli import run
from opsflow.store import OpsStore
from tests.s3_server import S3Server
from tests.test_notify import latest_artifact

NOW = datetime(2026, 11, 30, 7, tzinfo=UTC)
DAY = timedelta(days=1)


def write_config(path: Path, body: str) -> Path:
    config = path / "opsflow.yaml"
    config.write_text("timezone: UTC\n" + body)
    return config


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    code = run(["run", *args, "--json"])
    out, err = capsys.readouterr()
    assert out, f"exit {code}, no JSON: {err}"
    return code, json.loads(out)


def by_name(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in document["items"]}


def statuses(item: dict[str, Any]) -> dict[str, str]:
    return {check["check"]: check["status"] for check in item["checks"]}


def history_csv(path: Path, metric: str, values: list[tuple[datetime, float]]) -> Path:
    path.write_text("metric,ts,value\n" + "".join(f"{metric},{ts.isoformat()},{value}\n" for ts, value in values))
    return path


def hourly(days: int, end: datetime, value: Any) -> list[tuple[datetime, float]]:
    """Hourly samples of ``value(days_before_end)`` over ``days`` days up to ``end``."""
    hours = days * 24
    return [(end - timedelta(hours=hours - h), value((hours - h) / 24)) for h in range(hours)]


# -- capacity-collect -------------------------------------------------------------------------------------


def test_collect_samples_every_source_and_one_failing_source_does_not_stop_the_others(
    prefect_api: None,
    store: OpsStore,
    pg_url: str,
    s3_client: Any,
    s3_server: S3Server,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    s3_client.create_bucket(Bucket="metrics")
    for index in range(3):
        s3_client.put_object(Bucket="metrics", Key=f"logs/{index}.gz", Body=b"x" * 1000)
    with psycopg.connect(pg_url) as conn:
        size = conn.execute("select pg_database_size(current_database())").fetchone()[0]  # type: ignore[index]
    monkeypatch.setenv("OPSFLOW_STORE_URL", pg_url)
    config = write_config(
        tmp_path,
        "storages:\n"
        f"  s3main: {{type: s3, bucket: metrics, endpoint_url: '{s3_server.url}', region: us-east-1}}\n"
        "capacity:\n"
        f"  - {{metric: store-size, source: {{type: postgres, url: '{pg_url}'}}, threshold: 100GB}}\n"
        f"  - {{metric: store-connections, source: {{type: postgres, url: '{pg_url}', measure: connections}}, "
        "threshold: 80%}\n"
        "  - {metric: logs-bucket, source: {type: s3, storage: s3main, prefix: logs/}, threshold: 2KB}\n"
        f"  - {{metric: tmp-disk, source: {{type: filesystem, path: '{tmp_path}'}}, threshold: 100%}}\n"
        "  - {metric: gone-db, source: {type: postgres, url: 'postgresql://ops:Hunter2pw@127.0.0.1:9/x'}, "
        "threshold: 1GB}\n"
        "  - {metric: backlog, source: {type: import}, threshold: 5000}\n",
    )
    code = run(["run", "capacity-collect", "--json", "--config", str(config)])
    out, err = capsys.readouterr()
    assert "Hunter2pw" not in out + err
    items = by_name(json.loads(out))
    assert set(items) == {"store-size", "store-connections", "logs-bucket", "tmp-disk", "gone-db"}  # not import
    assert statuses(items["store-size"]) == {"threshold": "ok"}
    assert 0.5 * size < items["store-size"]["metrics"]["value"] < 2 * size
    assert 0 < items["store-connections"]["metrics"]["value"] < 80
    # 3 KB of logs against a 2 KB threshold: over it now, whatever a forecast would say.
    assert items["logs-bucket"]["metrics"]["value"] == 3000
    assert items["logs-bucket"]["checks"][0] == {
        "check": "threshold",
        "status": "fail",
        "detail": "3KB is at or over the threshold 2KB",
        "observed": 3000,
        "expected": "< 2000",
    }
    assert statuses(items["tmp-disk"]) == {"threshold": "ok"}
    assert statuses(items["gone-db"]) == {"threshold": "error"}
    assert "127.0.0.1:9" in items["gone-db"]["checks"][0]["detail"]  # where, never the password
    assert code == 1
    for metric in ("store-size", "store-connections", "logs-bucket", "tmp-disk"):
        assert store.count_capacity_samples(metric) == 1
    assert store.count_capacity_samples("gone-db") == 0


# -- capacity-trends -------------------------------------------------------------------------------------


def test_trends_forecast_from_imported_history_with_a_cleanup_and_chart_each_metric(
    prefect_api: None,
    store: OpsStore,
    pg_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("OPSFLOW_STORE_URL", pg_url)
    # A disk growing 1 GB a day that was cleaned up (−40 GB) 30 days ago: 400 GB now, 500 GB in 100 days.
    disk = hourly(90, NOW, lambda ago: 400e9 - 1e9 * ago + (40e9 if ago > 30 else 0.0))
    # A queue growing 50 a day toward 5000 from 4000: 20 days; inside warn_within 30d, outside fail_within 7d.
    queue = hourly(60, NOW, lambda ago: 4000 - 50 * ago)
    flat = hourly(60, NOW, lambda ago: 0.31 + 0.01 * math.sin(ago * 7))
    for metric, values in (("data-disk", disk), ("jobs-queue", queue), ("api-cpu", flat)):
        assert run(["capacity", "import", str(history_csv(tmp_path / f"{metric}.csv", metric, values))]) == 0
    out_dir = tmp_path / "reports"
    config = write_config(
        tmp_path,
        f"reports: {{monthly: {{out_dir: '{out_dir}'}}}}\n"
        "capacity:\n"
        "  - {metric: data-disk, source: {type: import}, threshold: 500GB}\n"
        "  - {metric: jobs-queue, source: {type: import}, threshold: 5000, warn_within: 30d, fail_within: 7d}\n"
        "  - {metric: api-cpu, source: {type: import}, threshold: 0.8}\n"
        "  - {metric: new-metric, source: {type: import}, threshold: 10}\n",
    )
    capsys.readouterr()
    code, document = run_json(capsys, "capacity-trends", "--as-of", NOW.isoformat(), "--config", str(config))
    items = by_name(document)
    disk_item = items["data-disk"]["metrics"]
    assert abs(disk_item["days_to_threshold"] - 100) <= 15  # fitted after the cleanup, not across it
    assert disk_item["days_to_threshold_low"] <= disk_item["days_to_threshold"] <= disk_item["days_to_threshold_high"]
    assert disk_item["crossing_date"] == (NOW + timedelta(days=disk_item["days_to_threshold"])).date().isoformat()
    assert disk_item["samples"] == 90 * 24 - 1  # the window is (as_of − 90 days, as_of]: the first one is out
    assert statuses(items["data-disk"])["forecast"] == "ok"
    assert abs(items["jobs-queue"]["metrics"]["days_to_threshold"] - 20) <= 3
    assert statuses(items["jobs-queue"])["forecast"] == "warn"
    assert items["api-cpu"]["metrics"]["days_to_threshold"] is None  # flat: never, not a sentinel
    assert statuses(items["api-cpu"]) == {"forecast": "ok", "growth_change": "ok"}
    assert statuses(items["new-metric"])["forecast"] == "warn"  # no history at all
    assert "insufficient history" in items["new-metric"]["checks"][0]["detail"]
    assert code == 0  # warnings only

    # One SVG per metric with history, beside the report; the artifact ranks by runway.
    for metric in ("data-disk", "jobs-queue", "api-cpu"):
        chart = Path(items[metric]["metrics"]["chart"])
        assert chart.parent == out_dir and chart.read_text().lstrip().startswith(("<?xml", "<svg"))
        assert document["outputs"][f"chart:{metric}"] == str(chart)
    artifact = latest_artifact("capacity-trends")
    assert artifact is not None
    rows = [line for line in artifact.data.splitlines() if line.startswith("| ") and "metric" not in line]
    assert [row.split("|")[1].strip() for row in rows][:2] == ["jobs-queue", "data-disk"]
    assert [r.as_of for r in store.results("capacity-trends")] == [NOW]


def test_a_fast_grower_fails_and_a_crossing_that_moved_earlier_is_a_drift(
    prefect_api: None,
    store: OpsStore,
    pg_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("OPSFLOW_STORE_URL", pg_url)
    config = write_config(
        tmp_path,
        "capacity:\n"
        "  - {metric: wal-disk, source: {type: import}, threshold: 90%}\n"
        "  - {metric: tmp-disk, source: {type: import}, threshold: 90%, fail_within: 7d}\n",
    )
    # 2 points a day, at 80% now: 5 days left, inside fail_within.
    fast = hourly(40, NOW, lambda ago: 80 - 2.0 * ago)
    # Half a point a day; at the first run 62.5% (55 days left); then a migration adds 15 points.
    earlier = NOW - 10 * DAY
    wal = hourly(55, NOW, lambda ago: 40 + 0.5 * (55 - ago) + (15 if ago < 10 else 0))
    for name, values in (("tmp-disk", fast), ("wal-disk", wal)):
        assert run(["capacity", "import", str(history_csv(tmp_path / f"{name}.csv", name, values))]) == 0
    capsys.readouterr()
    code, document = run_json(capsys, "capacity-trends", "--as-of", earlier.isoformat(), "--config", str(config))
    first = by_name(document)["wal-disk"]
    assert statuses(first)["forecast"] == "ok" and "drift" not in statuses(first)
    assert abs(first["metrics"]["days_to_threshold"] - 55) <= 8

    code, document = run_json(capsys, "capacity-trends", "--as-of", NOW.isoformat(), "--config", str(config))
    items = by_name(document)
    assert code == 1
    assert statuses(items["tmp-disk"])["forecast"] == "fail"
    assert abs(items["tmp-disk"]["metrics"]["days_to_threshold"] - 5) <= 1
    wal_item = items["wal-disk"]
    assert abs(wal_item["metrics"]["days_to_threshold"] - 15) <= 2.5  # after the shift: 82.5% now
    assert statuses(wal_item)["drift"] == "warn"  # the crossing moved 30 days earlier since last week
    assert statuses(wal_item)["forecast"] == "warn"
