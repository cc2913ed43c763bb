"""Backup verification against real pg_dump archives, each fault planted at the boundary."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import signal
import subprocess
import sys
import tarfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest

from opsflow.cli import run
from opsflow.config import BackupSet, FilesystemStorage, Retention, S3Storage
from opsflow.results import Item
from opsflow.store import OpsStore
from tasks.backups import check_retention, check_size, parse_sidecar, verify_backup_set
from tasks.storage import StoredObject
from tests.backup_samples import make_sample_database, overwrite_middle, pg_dump, write_backup
from tests.s3_server import S3Server
from tests.test_notify import latest_artifact

NOW = datetime(2026, 11, 22, 6, tzinfo=UTC)
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)
SECOND = timedelta(seconds=1)


@pytest.fixture(scope="session")
def dumps(pg_server_url: str) -> dict[str, bytes]:
    """A healthy custom-format dump, a tar-format one, and a valid but much smaller one."""
    full = make_sample_database(pg_server_url, "sample_orders", orders=5000)
    small = make_sample_database(pg_server_url, "sample_orders_small", orders=50)
    return {"custom": pg_dump(full, "c"), "tar": pg_dump(full, "t"), "small": pg_dump(small, "c")}


def backup_set(**overrides: object) -> BackupSet:
    settings: dict[str, object] = {
        "name": "orders-db",
        "storage": "local",
        "prefix": "orders/",
        "max_age": 26 * 3600,
        "min_size": 1000,
        "retention": Retention(days=30, min_count=5, max_gap=26 * 3600),
    }
    return BackupSet(**(settings | overrides))


def daily_series(root: Path, dumps: dict[str, bytes], days: int = 7, kind: str = "custom") -> list[Path]:
    """``days`` nightly backups at 02:00, the newest this morning, each with its sidecar."""
    data = dumps[kind]
    return [
        write_backup(
            root / "orders", f"orders-{(NOW - n * DAY):%Y%m%d}.dump", data, NOW.replace(hour=2) - n * DAY, sidecar=data
        )
        for n in reversed(range(days))
    ]


def verify(root: Path, **overrides: object) -> Item:
    return verify_backup_set(backup_set(**overrides), FilesystemStorage(path=str(root)), NOW, {}).item


def statuses(item: Item) -> dict[str, str]:
    return {c.check: c.status for c in item.checks}


HEALTHY = {"present": "ok", "fresh": "ok", "size": "ok", "checksum": "ok", "readable": "ok", "retention": "ok"}


@pytest.mark.parametrize("kind", ["custom", "tar"])
def test_a_healthy_set_passes_every_check_without_a_warning(tmp_path: Path, dumps: dict[str, bytes], kind: str) -> None:
    daily_series(tmp_path, dumps, kind=kind)
    item = verify(tmp_path)
    assert statuses(item) == HEALTHY
    assert item.status == "ok"
    assert item.metrics["count"] == 7
    assert item.metrics["newest_key"] == f"orders/orders-{NOW:%Y%m%d}.dump"
    assert item.metrics["age_seconds"] == 4 * 3600
    assert item.metrics["newest_bytes"] == len(dumps[kind])


def test_restore_test_counts_the_rows_of_every_table(tmp_path: Path, dumps: dict[str, bytes]) -> None:
    daily_series(tmp_path, dumps)
    item = verify(tmp_path, restore_test=True)
    assert statuses(item) == {**HEALTHY, "restore": "ok"}
    assert item.metrics["tables"] == {"customers": 500, "orders": 5000}


def log_file(size: int) -> bytes:
    """A non-dump file as large as a dump (so only ``readable`` can tell)."""
    return (b"2026-11-22 02:00:01 backup job started\n" * (size // 39 + 1))[:size]


def replace_newest(root: Path, dumps: dict[str, bytes], data: bytes, sidecar: bytes | None) -> None:
    series = daily_series(root, dumps)
    series[-1].unlink()
    Path(f"{series[-1]}.sha256").unlink()
    write_backup(series[-1].parent, series[-1].name, data, NOW.replace(hour=2), sidecar=sidecar)


FAULTS: dict[str, tuple[Callable[[dict[str, bytes]], tuple[bytes, bytes | None]], dict[str, str]]] = {
    # the dump died half-way, and the script hashed what it wrote
    "truncated": (
        lambda d: (d["custom"][: len(d["custom"]) // 2], d["custom"][: len(d["custom"]) // 2]),
        {"readable": "fail"},
    ),
    # bit rot after the sidecar was written
    "overwritten, with sidecar": (
        lambda d: (overwrite_middle(d["custom"]), d["custom"]),
        {"checksum": "fail", "readable": "fail"},
    ),
    # bit rot and nothing to compare with: the full read still catches it
    "overwritten, no sidecar": (
        lambda d: (overwrite_middle(d["custom"]), None),
        {"checksum": "warn", "readable": "fail"},
    ),
    "empty file": (lambda d: (b"", b""), {"size": "fail", "readable": "fail"}),
    "much smaller valid dump": (lambda d: (d["small"], d["small"]), {"size": "fail"}),
    "not a dump": (lambda d: (log_file(len(d["custom"])), log_file(len(d["custom"]))), {"readable": "fail"}),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_each_planted_fault_fails_exactly_the_right_checks(tmp_path: Path, dumps: dict[str, bytes], fault: str) -> None:
    make, expected = FAULTS[fault]
    data, sidecar = make(dumps)
    replace_newest(tmp_path, dumps, data, sidecar)
    item = verify(tmp_path)
    assert statuses(item) == {**HEALTHY, **expected}
    newest = f"orders-{NOW:%Y%m%d}.dump"
    for check in item.checks:
        if check.status != "ok" and check.check in ("checksum", "readable"):
            assert newest in check.detail


def test_overwritten_bytes_are_named_in_the_detail(tmp_path: Path, dumps: dict[str, bytes]) -> None:
    replace_newest(tmp_path, dumps, overwrite_middle(dumps["custom"]), dumps["custom"])
    item = verify(tmp_path)
    checksum, readable = item.check_named("checksum"), item.check_named("readable")
    assert checksum is not None and "sha256 mismatch against the sidecar checksum" in checksum.detail
    assert readable is not None and "pg_restore failed" in readable.detail


def test_a_stale_newest_backup_fails_freshness_only(tmp_path: Path, dumps: dict[str, bytes]) -> None:
    daily_series(tmp_path, dumps)
    later = NOW + timedelta(hours=27)  # the newest (02:00 today) is now 31h old
    item = verify_backup_set(backup_set(), FilesystemStorage(path=str(tmp_path)), later, {}).item
    assert statuses(item) == {**HEALTHY, "fresh": "fail"}
    fresh = item.check_named("fresh")
    assert fresh is not None
    assert fresh.detail == "newest backup is 31h old, limit 26h"
    assert (fresh.observed, fresh.expected) == (111600, 93600)


def test_missing_days_fail_retention_only(tmp_path: Path, dumps: dict[str, bytes]) -> None:
    series = daily_series(tmp_path, dumps, days=8)
    for gone in series[2:4]:
        gone.unlink()
        Path(f"{gone}.sha256").unlink()
    item = verify(tmp_path)
    assert statuses(item) == {**HEALTHY, "retention": "fail"}
    retention = item.check_named("retention")
    assert retention is not None
    assert "longest 3d between" in retention.detail


def test_an_empty_prefix_fails_presence(tmp_path: Path) -> None:
    (tmp_path / "orders").mkdir()
    item = verify(tmp_path)
    assert statuses(item) == {"present": "fail"}
    assert item.metrics == {"count": 0}


def test_sql_gz_and_pg_basebackup_use_their_own_readers(tmp_path: Path, pg_server_url: str) -> None:
    good = gzip.compress(b"create table t (x int);\n" * 2000)
    write_backup(tmp_path / "sql", "a.sql.gz", good, NOW - timedelta(hours=2), sidecar=good)
    bad = good[: len(good) // 2]
    write_backup(tmp_path / "sql", "b.sql.gz", bad, NOW - timedelta(hours=1), sidecar=bad)
    item = verify(tmp_path, prefix="sql/", format="sql_gz", retention=Retention(days=30, min_count=1))
    readable = item.check_named("readable")
    assert readable is not None and readable.status == "fail"
    assert "b.sql.gz: gzip stream is damaged" in readable.detail
    assert "a.sql.gz" not in readable.detail


def test_pg_basebackup_is_verified_against_its_manifest(tmp_path: Path, pg_server_url: str) -> None:

    from opsflow.embedded import client_bin

    target = tmp_path / "base" / "2026-11-22"
    subprocess.run(
        [
            str(client_bin("pg_basebackup")),
            "-d",
            pg_server_url,
            "-D",
            str(target),
            "-X",
            "none",
            "-c",
            "fast",
            "--no-sync",
        ],
        check=True,
        capture_output=True,
    )
    archive = tmp_path / "base.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(target, arcname="2026-11-22")
    write_backup(tmp_path / "pgbase", "2026-11-22.tar.gz", archive.read_bytes(), NOW - timedelta(hours=1))
    settings = {
        "prefix": "pgbase/",
        "format": "pg_basebackup",
        "checksum": "none",
        "retention": Retention(days=30, min_count=1),
    }
    assert statuses(verify(tmp_path, **settings))["readable"] == "ok"
    (target / "PG_VERSION").write_text("99\n")  # a file no longer matching the manifest
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(target, arcname="2026-11-22")
    write_backup(tmp_path / "pgbase", "2026-11-22.tar.gz", archive.read_bytes(), NOW - timedelta(hours=1))
    readable = verify(tmp_path, **settings).check_named("readable")
    assert readable is not None and readable.status == "fail"
    assert "pg_verifybackup failed" in readable.detail


def test_the_ledger_skips_objects_already_verified(tmp_path: Path, dumps: dict[str, bytes]) -> None:
    daily_series(tmp_path, dumps, days=3)
    storage = FilesystemStorage(path=str(tmp_path))
    first = verify_backup_set(backup_set(retention=Retention(min_count=1)), storage, NOW, {})
    assert len(first.ledger_rows) == 3
    ledger = {row["key"]: {**row, "verified_at": NOW} for row in json.loads(json.dumps(first.ledger_rows, default=str))}
    for row in ledger.values():
        row["written_at"] = datetime.fromisoformat(row["written_at"])
    second = verify_backup_set(backup_set(retention=Retention(min_count=1)), storage, NOW + timedelta(hours=1), ledger)
    assert second.ledger_rows == []
    assert statuses(second.item)["readable"] == "ok"
    later = verify_backup_set(backup_set(retention=Retention(min_count=1)), storage, NOW + timedelta(days=8), ledger)
    assert len(later.ledger_rows) == 3  # reverify_after (7d) has passed


# -- pure checks -----------------------------------------------------------------------


def obj(name: str, size: int, at: datetime) -> StoredObject:
    return StoredObject(key=name, size=size, written_at=at)


def test_size_compares_with_the_median_of_the_previous_seven() -> None:
    previous = [
        obj(f"b{i}", size, NOW - (9 - i) * DAY)
        for i, size in enumerate([10, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000])
    ]
    assert check_size(obj("new", 600, NOW), previous, 0, 50).status == "ok"
    dropped = check_size(obj("new", 400, NOW), previous, 0, 50)
    assert dropped.status == "fail"
    assert dropped.detail == "newest backup is 400B, 60% smaller than the median 1KB of the previous 7 (limit 50%)"
    assert check_size(obj("new", 400, NOW), [], 0, 50).status == "ok"


def test_retention_counts_inside_the_window_and_measures_gaps() -> None:
    backups = [obj(f"b{i}", 1, NOW - timedelta(hours=h)) for i, h in enumerate([100, 75, 50, 25, 1])]
    assert check_retention(backups, NOW, Retention(days=30, min_count=5, max_gap=26 * 3600)).status == "ok"
    assert check_retention(backups, NOW, Retention(days=3, min_count=3)).status == "ok"
    assert check_retention(backups, NOW, Retention(days=1, min_count=2)).status == "fail"
    gap = check_retention(backups, NOW, Retention(days=30, min_count=1, max_gap=24 * 3600))
    assert gap.status == "fail"
    assert gap.detail == "3 gaps over 1d; longest 25h between b0 and b1"


def test_sidecars_as_sha256sum_writes_them() -> None:
    digest = "a" * 64
    assert parse_sidecar(f"{digest}  orders.dump\n") == digest
    assert parse_sidecar(f"{digest.upper()}\n") == digest
    assert parse_sidecar("not a digest") is None
    assert parse_sidecar("") is None


# -- the routine end to end: CLI -> Prefect flow run -> store, artifacts ---------------------


def test_opsflow_run_backup_verification_json_exit_code_task_names_and_store(
    prefect_api: None,
    tmp_path: Path,
    dumps: dict[str, bytes],
    store: OpsStore,
    pg_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    daily_series(tmp_path / "backups", dumps)
    stale_root = tmp_path / "backups" / "billing"
    write_backup(stale_root, "billing.dump", dumps["custom"], NOW - 3 * DAY, sidecar=dumps["custom"])
    config = tmp_path / "opsflow.yaml"
    config.write_text(
        f"storages:\n  local: {{type: filesystem, path: '{tmp_path / 'backups'}'}}\n"
        "backups:\n"
        "  - {name: orders-db, storage: local, prefix: orders/, min_size: 1KB,"
        " retention: {days: 30, min_count: 5, max_gap: 26h}}\n"
        "  - {name: billing-db, storage: local, prefix: billing/}\n"
    )
    monkeypatch.setenv("OPSFLOW_STORE_URL", pg_url)
    code = run(["run", "backup-verification", "--config", str(config), "--as-of", "2026-11-22T06:00:00Z", "--json"])
    document = json.loads(capsys.readouterr().out)  # exactly one JSON document on stdout
    assert code == 1
    assert document["routine"] == "backup-verification"
    assert document["as_of"] == "2026-11-22T06:00:00Z"
    assert document["status"] == "fail"
    assert document["summary"] == {"ok": 1, "warn": 0, "fail": 1, "error": 0}
    by_name = {item["name"]: item for item in document["items"]}
    assert by_name["orders-db"]["status"] == "ok"
    billing = {c["check"]: c for c in by_name["billing-db"]["checks"]}
    assert billing["fresh"]["status"] == "fail"
    assert billing["fresh"]["detail"] == "newest backup is 3d old, limit 26h"
    assert set(by_name["orders-db"]["metrics"]) >= {
        "newest_key",
        "newest_taken_at",
        "newest_bytes",
        "age_seconds",
        "count",
    }

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(document["flow_run_id"])
        task_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id])))
    assert flow_run.state is not None and flow_run.state.is_failed()  # red in the UI
    assert {"verify[orders-db]", "verify[billing-db]"} <= {t.name for t in task_runs}
    assert latest_artifact("backup-verification") is not None

    stored = store.results("backup-verification")
    assert [r.status for r in stored] == ["fail"]
    with psycopg.connect(pg_url) as conn:
        ledger = conn.execute("select count(*), count(distinct key) from opsflow.backup_verifications").fetchone()
    assert ledger == (8, 8)  # every object verified once and recorded

    # Re-running for the same instant replaces the stored result; nothing is read again.
    assert run(["run", "backup-verification", "--config", str(config), "--as-of", "2026-11-22T06:00:00Z"]) == 1
    assert "billing-db" in capsys.readouterr().out
    assert len(store.results("backup-verification")) == 1
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("select count(*) from opsflow.backup_verifications").fetchone() == (8,)


def test_bad_as_of_and_bad_config_are_refused_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "opsflow.yaml"
    config.write_text("backups:\n  - {name: x, storage: nowhere, prefix: a/}\n")
    assert run(["run", "backup-verification", "--config", str(config)]) == 2
    assert "backups.0.storage: unknown storage 'nowhere'" in capsys.readouterr().err
    config.write_text("{}\n")
    assert run(["run", "backup-verification", "--config", str(config), "--as-of", "yesterday"]) == 2
    assert "--as-of: expected an ISO 8601 time" in capsys.readouterr().err
    assert run(["run", "no-such-routine"]) == 2


def test_an_unreachable_store_is_exit_3(
    prefect_api: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OPSFLOW_STORE_URL", f"postgresql://ops:pw-secret-77@/opsflow?host={tmp_path}&port=9")
    config = tmp_path / "opsflow.yaml"
    config.write_text("{}\n")
    assert run(["run", "backup-verification", "--config", str(config)]) == 3
    err = capsys.readouterr().err
    assert "backup-verification could not complete: ops store unreachable" in err
    assert "pw-secret-77" not in err


# -- on S3 (moto over real HTTP) ----------------------------------------------------------------


def s3_series(
    s3_client: Any,
    s3_server: S3Server,
    dumps: dict[str, bytes],
    bucket: str = "prod-backups",
    days: int = 7,
    encrypted: bool = True,
) -> list[str]:
    """Nightly dumps uploaded with an S3-stored SHA-256 (and SSE), LastModified backdated like real nights."""
    s3_client.create_bucket(Bucket=bucket)
    keys = []
    for n in reversed(range(days)):
        key = f"postgres/orders/orders-{(NOW - n * DAY):%Y%m%d}.dump"
        extra = {"ServerSideEncryption": "AES256"} if encrypted else {}
        s3_client.put_object(Bucket=bucket, Key=key, Body=dumps["custom"], ChecksumAlgorithm="SHA256", **extra)
        s3_server.set_last_modified(bucket, key, NOW.replace(hour=2) - n * DAY)
        keys.append(key)
    return keys


def s3_settings(s3_server: S3Server, bucket: str = "prod-backups") -> S3Storage:
    return S3Storage(bucket=bucket, endpoint_url=s3_server.url, region="us-east-1")


def verify_s3(s3_server: S3Server, bucket: str = "prod-backups", **overrides: object) -> Item:
    backup = backup_set(storage="s3main", prefix="postgres/orders/", **overrides)
    return verify_backup_set(backup, s3_settings(s3_server, bucket), NOW, {}).item


def test_s3_healthy_set_with_checksums_and_encryption(
    s3_client: Any, s3_server: S3Server, dumps: dict[str, bytes]
) -> None:
    s3_series(s3_client, s3_server, dumps)
    item = verify_s3(s3_server, require_encryption=True)
    assert statuses(item) == {**HEALTHY, "encryption": "ok"}
    checksum = item.check_named("checksum")
    assert checksum is not None and checksum.detail == "7 backups verified (7 this run, the rest from the ledger)"


def test_s3_bit_rot_under_a_stored_checksum_fails_checksum_and_readable(
    s3_client: Any, s3_server: S3Server, dumps: dict[str, bytes]
) -> None:
    keys = s3_series(s3_client, s3_server, dumps)
    # Bit rot at rest: the object's bytes change after S3 stored the SHA-256 of the good ones.
    stored = s3_server._backend().get_object("prod-backups", keys[-1])
    good_checksum = stored.checksum_value
    s3_client.put_object(
        Bucket="prod-backups",
        Key=keys[-1],
        Body=overwrite_middle(dumps["custom"]),
        ServerSideEncryption="AES256",
        ChecksumAlgorithm="SHA256",
    )
    s3_server._backend().get_object("prod-backups", keys[-1]).checksum_value = good_checksum
    s3_server.set_last_modified("prod-backups", keys[-1], NOW.replace(hour=2))
    item = verify_s3(s3_server, require_encryption=True)
    assert statuses(item) == {**HEALTHY, "encryption": "ok", "checksum": "fail", "readable": "fail"}


def test_s3_unencrypted_object_fails_encryption_only(
    s3_client: Any, s3_server: S3Server, dumps: dict[str, bytes]
) -> None:
    s3_series(s3_client, s3_server, dumps, encrypted=False)
    item = verify_s3(s3_server, require_encryption=True)
    assert statuses(item) == {**HEALTHY, "encryption": "fail"}
    encryption = item.check_named("encryption")
    assert encryption is not None and encryption.detail.endswith("has no server-side encryption")


def test_s3_missing_days_and_stale_newest(s3_client: Any, s3_server: S3Server, dumps: dict[str, bytes]) -> None:
    keys = s3_series(s3_client, s3_server, dumps, days=8)
    for key in keys[2:4]:
        s3_client.delete_object(Bucket="prod-backups", Key=key)
    assert statuses(verify_s3(s3_server)) == {**HEALTHY, "retention": "fail"}
    late = verify_backup_set(
        backup_set(storage="s3main", prefix="postgres/orders/"), s3_settings(s3_server), NOW + timedelta(hours=27), {}
    ).item
    assert statuses(late)["fresh"] == "fail"


def test_s3_access_denied_is_a_fail_with_the_reason_and_is_not_retried(
    s3_client: Any, s3_server: S3Server, dumps: dict[str, bytes]
) -> None:
    s3_series(s3_client, s3_server, dumps)
    s3_server.clear()
    s3_server.deny("prod-backups")
    item = verify_s3(s3_server)
    assert statuses(item) == {"present": "fail"}
    present = item.check_named("present")
    assert present is not None
    assert present.detail == "listing s3://prod-backups/postgres/orders/: AccessDenied (HTTP 403)"
    assert len(s3_server.requests_matching(bucket="prod-backups")) == 1  # one attempt, no retry


def test_second_run_over_an_unchanged_set_downloads_nothing(
    s3_client: Any, s3_server: S3Server, dumps: dict[str, bytes], store: OpsStore
) -> None:
    s3_series(s3_client, s3_server, dumps, days=5)
    backup = backup_set(storage="s3main", prefix="postgres/orders/", retention=Retention(min_count=1))
    s3_server.clear()
    first = verify_backup_set(backup, s3_settings(s3_server), NOW, store.latest_verifications("orders-db"))
    store.record_verifications([{**row, "flow_run_id": None} for row in first.ledger_rows])
    assert len(s3_server.downloads("prod-backups")) == 5

    s3_server.clear()
    second = verify_backup_set(backup, s3_settings(s3_server), NOW + DAY / 2, store.latest_verifications("orders-db"))
    assert s3_server.downloads("prod-backups") == []
    assert second.ledger_rows == []
    assert statuses(second.item) == statuses(first.item)

    # A new night's backup: only it is downloaded.
    s3_client.put_object(
        Bucket="prod-backups", Key="postgres/orders/orders-new.dump", Body=dumps["custom"], ChecksumAlgorithm="SHA256"
    )
    # written that night, before the run's "now" (a backup written after it does not exist yet for the run)
    s3_server.set_last_modified("prod-backups", "postgres/orders/orders-new.dump", NOW.replace(hour=2) + DAY)
    s3_server.clear()
    verify_backup_set(backup, s3_settings(s3_server), NOW + DAY, store.latest_verifications("orders-db"))
    assert [r.key for r in s3_server.downloads("prod-backups")] == ["postgres/orders/orders-new.dump"]


def s3_replace_newest(s3_client: Any, s3_server: S3Server, key: str, data: bytes, sidecar: bytes | None) -> None:
    """The newest object replaced by ``data``; S3 keeps the SHA-256 of ``sidecar`` (None: no checksum at all)."""
    extra: dict[str, str] = {} if sidecar is None else {"ChecksumAlgorithm": "SHA256"}
    s3_client.put_object(Bucket="prod-backups", Key=key, Body=data, ServerSideEncryption="AES256", **extra)
    if sidecar is not None and sidecar != data:
        stored = s3_server._backend().get_object("prod-backups", key)
        stored.checksum_value = base64.b64encode(hashlib.sha256(sidecar).digest()).decode()
    s3_server.set_last_modified("prod-backups", key, NOW.replace(hour=2))


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_each_planted_fault_fails_exactly_the_right_checks_on_s3(
    s3_client: Any, s3_server: S3Server, dumps: dict[str, bytes], fault: str
) -> None:
    make, expected = FAULTS[fault]
    data, checksum_of = make(dumps)
    keys = s3_series(s3_client, s3_server, dumps)
    s3_replace_newest(s3_client, s3_server, keys[-1], data, checksum_of)
    assert statuses(verify_s3(s3_server)) == {**HEALTHY, **expected}


def test_a_throttled_bucket_is_retried_by_prefect_and_the_run_succeeds(
    prefect_api: None, s3_client: Any, s3_server: S3Server, dumps: dict[str, bytes], store: OpsStore
) -> None:
    from tasks.backups import verify_backup_set_task

    s3_series(s3_client, s3_server, dumps, days=2)
    s3_server.clear()
    s3_server.throttle("prod-backups", times=2)  # SlowDown twice, then served
    backup = backup_set(storage="s3main", prefix="postgres/orders/", retention=Retention(min_count=1))
    item = verify_backup_set_task(backup, s3_settings(s3_server), NOW, store, None)
    assert item.status == "ok"
    assert len(s3_server.requests_matching(operation="ListObjectsV2")) == 3  # two refused attempts, one served


def test_s3_a_zero_byte_folder_marker_is_not_a_backup(
    s3_client: Any, s3_server: S3Server, dumps: dict[str, bytes]
) -> None:
    s3_series(s3_client, s3_server, dumps)
    s3_client.put_object(Bucket="prod-backups", Key="postgres/orders/", Body=b"")  # what S3 consoles create
    s3_server.set_last_modified("prod-backups", "postgres/orders/", NOW - timedelta(minutes=5))
    item = verify_s3(s3_server)
    assert statuses(item) == HEALTHY
    assert item.metrics["count"] == 7 and item.metrics["newest_key"].endswith(".dump")


@pytest.mark.parametrize("odd", ["a" * 300 + ".dump", "trav/.."])
def test_s3_an_odd_key_is_that_objects_problem_not_the_sets(
    s3_client: Any, s3_server: S3Server, dumps: dict[str, bytes], odd: str
) -> None:
    keys = s3_series(s3_client, s3_server, dumps)
    key = f"postgres/orders/{odd}"
    s3_client.put_object(Bucket="prod-backups", Key=key, Body=dumps["custom"], ChecksumAlgorithm="SHA256")
    s3_server.set_last_modified("prod-backups", key, NOW.replace(hour=1) - 6 * DAY)  # the oldest
    backup = backup_set(storage="s3main", prefix="postgres/orders/")
    verification = verify_backup_set(backup, s3_settings(s3_server), NOW, {})
    checks = statuses(verification.item)
    assert "error" not in checks.values(), verification.item
    assert {"present": "ok", "fresh": "ok", "size": "ok", "retention": "ok"}.items() <= checks.items()
    # the seven good nightly dumps are recorded in the ledger whatever the odd key did
    recorded = {row["key"]: row["outcome"] for row in verification.ledger_rows}
    assert all(recorded.get(k) == "ok" for k in keys)
    present = verification.item.check_named("present")
    readable = verification.item.check_named("readable")
    assert present is not None and readable is not None
    # the odd object is verified like any other, or skipped with a warning in `present`, or its own
    # `readable` fails naming it
    assert (
        recorded.get(key) == "ok"
        or odd[-20:] in present.detail
        or (readable.status == "fail" and odd[-20:] in readable.detail)
    )


def test_symlinks_that_dangle_or_leave_the_storage_are_skipped_with_a_warning(
    tmp_path: Path, dumps: dict[str, bytes]
) -> None:
    root = tmp_path / "backups"
    paths = daily_series(root, dumps)
    outside = tmp_path / "elsewhere" / "newer.dump"
    outside.parent.mkdir()
    outside.write_bytes(dumps["custom"])  # mtime: today, newer than any backup of the set
    (root / "orders" / "zz-passwd.dump").symlink_to("/etc/passwd")
    (root / "orders" / "zz-outside.dump").symlink_to(outside)
    (root / "orders" / "zz-dangling.dump").symlink_to(root / "orders" / "deleted.dump")
    item = verify(root)
    assert statuses(item) == {**HEALTHY, "present": "warn"}
    assert item.metrics["newest_key"] == f"orders/{paths[-1].name}" and item.metrics["count"] == 7
    present = item.check_named("present")
    assert present is not None
    assert "orders/zz-passwd.dump: skipped, a symlink leading out of the storage directory" in present.detail
    assert "orders/zz-outside.dump: skipped" in present.detail
    assert "orders/zz-dangling.dump: skipped, a symlink to nothing" in present.detail


def test_a_run_as_of_the_past_judges_the_backups_that_existed_then(
    prefect_api: None,
    tmp_path: Path,
    s3_client: Any,
    s3_server: S3Server,
    dumps: dict[str, bytes],
    store: OpsStore,
    pg_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``--as-of`` before the newest object's LastModified: that object did not exist yet, so ``fresh``,
    ``size`` and the metrics are the older backup's (a 30h-old full dump: stale), not the later small one's."""
    s3_client.create_bucket(Bucket="prod-backups")
    older, later = "postgres/orders/orders-older.dump", "postgres/orders/orders-later.dump"
    for key, data, when in ((older, dumps["custom"], NOW - 30 * 3600 * SECOND), (later, dumps["small"], NOW + HOUR)):
        s3_client.put_object(Bucket="prod-backups", Key=key, Body=data, ChecksumAlgorithm="SHA256")
        s3_server.set_last_modified("prod-backups", key, when)
    config = tmp_path / "opsflow.yaml"
    config.write_text(
        f"storages:\n  s3main: {{type: s3, bucket: prod-backups, endpoint_url: '{s3_server.url}'}}\n"
        "backups:\n"
        "  - {name: orders-db, storage: s3main, prefix: postgres/orders/, max_age: 26h, min_size: 1KB,"
        " size_drop: 50%, retention: {days: 30, min_count: 1}}\n"
    )
    monkeypatch.setenv("OPSFLOW_STORE_URL", pg_url)
    code = run(["run", "backup-verification", "--config", str(config), "--as-of", NOW.isoformat(), "--json"])
    document = json.loads(capsys.readouterr().out)
    assert code == 1
    (item,) = document["items"]
    checks = {c["check"]: c for c in item["checks"]}
    assert checks["fresh"]["status"] == "fail"
    assert checks["fresh"]["detail"] == "newest backup is 30h old, limit 26h"
    assert checks["size"]["status"] == "ok"  # the later, much smaller dump is not compared
    assert checks["present"]["status"] == "ok"
    assert "1 written after the as-of time not counted" in checks["present"]["detail"]
    assert item["metrics"]["newest_key"] == older
    assert item["metrics"]["newest_bytes"] == len(dumps["custom"])
    assert item["metrics"]["count"] == 1
    assert item["metrics"]["age_seconds"] == 30 * 3600
    # only what existed then was read and recorded in the ledger
    with psycopg.connect(pg_url) as conn:
        keys = [row[0] for row in conn.execute("select key from opsflow.backup_verifications")]
    assert keys == [older]


HOLD_A_RESTORE_SERVER = """
import sys, time
from tasks.backups import verification_workdir
from opsflow.embedded import EmbeddedPostgres
with verification_workdir() as scratch:
    if sys.argv[1] == "server":  # as verify_backup_set lays it out: SCRATCH/N/restore-pg
        (scratch / "0").mkdir()
        EmbeddedPostgres.start(scratch / "0" / "restore-pg", keep_running=False)
    print(scratch, flush=True)
    try:
        time.sleep(600)
    except KeyboardInterrupt:  # SIGINT: stop as a run does, its work directory (and server) removed
        pass
"""


def hold_restore_workdir(kind: str) -> tuple[subprocess.Popen[str], Path]:
    """A process holding a verification work directory (with, for ``server``, a restore test's running
    embedded PostgreSQL), as a backup-verification run in the middle of its restore test does."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD_A_RESTORE_SERVER, kind],
        cwd=Path(__file__).resolve().parent.parent,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    assert line, "the holding process did not start"
    return process, Path(line)


def postmaster_of(pgdata: Path) -> psutil.Process | None:
    try:
        process = psutil.Process(int((pgdata / "postmaster.pid").read_text().split()[0]))
    except (OSError, ValueError, psutil.Error):
        return None
    return process if process.is_running() and process.status() != psutil.STATUS_ZOMBIE else None


def test_a_restore_test_server_left_by_a_killed_run_is_removed_by_the_next_run_never_a_live_ones(
    prefect_api: None,
    tmp_path: Path,
    dumps: dict[str, bytes],
    store: OpsStore,
    pg_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    killed, killed_dir = hold_restore_workdir("server")
    alive, alive_dir = hold_restore_workdir("dir")
    try:
        pgdata = killed_dir / "0" / "restore-pg"
        server = postmaster_of(pgdata)
        assert server is not None  # the restore test's PostgreSQL is up
        killed.send_signal(signal.SIGKILL)  # no finally, no atexit: its server and work directory stay
        killed.wait(10)
        assert postmaster_of(pgdata) is not None and killed_dir.exists()

        write_backup(tmp_path / "backups" / "orders", "orders.dump", dumps["custom"], NOW - HOUR)
        config = tmp_path / "opsflow.yaml"
        config.write_text(
            f"storages:\n  local: {{type: filesystem, path: '{tmp_path / 'backups'}'}}\n"
            "backups:\n  - {name: orders-db, storage: local, prefix: orders/, min_size: 1KB,"
            " retention: {days: 30, min_count: 1}}\n"
        )
        monkeypatch.setenv("OPSFLOW_STORE_URL", pg_url)
        assert run(["run", "backup-verification", "--config", str(config), "--as-of", NOW.isoformat()]) == 0
        err = capsys.readouterr().err
        assert "WARNING" in err and "backup-verification: removed" in err
        assert f"{killed_dir} (its run, pid {killed.pid}, is gone, stopped its restore-test PostgreSQL)" in err
        server.wait(30)  # the orphaned postmaster was stopped ...
        assert not killed_dir.exists()  # ... and its work directory deleted
        assert alive_dir.exists() and str(alive_dir) not in err  # a running verification's is left alone
        assert alive.poll() is None
    finally:
        for process in (killed, alive):
            if process.poll() is None:
                process.send_signal(signal.SIGINT)  # its finally removes its work directory (and server)
                process.wait(60)
            if process.stdout is not None:
                process.stdout.close()
        if postmaster_of(killed_dir / "0" / "restore-pg") is not None:
            from opsflow.owners import stop_postmaster

            stop_postmaster(killed_dir / "0" / "restore-pg")
    assert not alive_dir.exists()


# -- many small sets: bounded concurrency, few store connections, no work directory (bench orchestration) ----


def small_sets(root: Path, count: int, now: datetime) -> list[str]:
    """``count`` sets of 2 gzip backups (with sidecars) under ``root``: the config's ``backups:`` lines."""
    lines = []
    for index in range(count):
        for night in range(2):
            data = gzip.compress(f"-- set {index} night {night}\n".encode() * 50)
            write_backup(root / f"s{index}", f"{night}.sql.gz", data, now - (2 - night) * DAY + HOUR, sidecar=data)
        lines.append(f"  - {{name: s{index}, storage: local, prefix: s{index}/, format: sql_gz}}")
    return lines


def test_a_local_set_is_verified_in_place_without_a_work_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tasks.backups

    small_sets(tmp_path, 1, NOW)
    made: list[object] = []
    real = tasks.backups.verification_workdir

    def counted() -> Any:
        made.append(1)
        return real()

    monkeypatch.setattr(tasks.backups, "verification_workdir", counted)
    backup = backup_set(prefix="s0/", format="sql_gz", min_size=0, retention=Retention(min_count=1))
    verification = verify_backup_set(backup, FilesystemStorage(path=str(tmp_path)), NOW, {})
    assert set(statuses(verification.item).values()) == {"ok"}
    assert len(verification.ledger_rows) == 2
    assert made == []  # nothing downloaded, extracted or restored: nothing to make and remove


def test_many_sets_run_a_few_at_a_time_on_a_few_store_connections(
    prefect_api: None, tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading
    import time

    import opsflow.store
    import tasks.backups
    from flows._routine import routine_result
    from flows.backup_verification import VERIFY_CONCURRENCY, backup_verification

    count = VERIFY_CONCURRENCY + 6
    now = datetime.now(UTC)
    lines = small_sets(tmp_path / "backups", count, now)
    config = tmp_path / "opsflow.yaml"
    config.write_text(
        f"store: {{url: '{pg_url}'}}\nstorages:\n  local: {{type: filesystem, path: '{tmp_path / 'backups'}'}}\n"
        "backups:\n" + "\n".join(lines) + "\n"
    )
    connects: list[str] = []
    real_connect = opsflow.store.psycopg.connect

    def counted_connect(*args: Any, **kwargs: Any) -> Any:
        connects.append("store")
        return real_connect(*args, **kwargs)

    monkeypatch.setattr(opsflow.store.psycopg, "connect", counted_connect)
    running, most = [0], [0]
    lock = threading.Lock()
    real_verify = tasks.backups.verify_backup_set

    def slow_verify(*args: Any, **kwargs: Any) -> Any:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        try:
            time.sleep(0.3)  # long enough for every set to be in flight at once, were they not bounded
            return real_verify(*args, **kwargs)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(tasks.backups, "verify_backup_set", slow_verify)
    state = backup_verification(config_path=str(config), return_state=True)
    result = routine_result(state)
    assert result is not None and len(result.items) == count
    assert {item.status for item in result.items} == {"ok"}
    assert 1 < most[0] <= VERIFY_CONCURRENCY  # unbounded, all of them at once
    # two store operations per set and the run's own; before, one connection each: over 2 * count
    assert len(connects) <= VERIFY_CONCURRENCY + 2
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("select count(*) from opsflow.backup_verifications").fetchone() == (2 * count,)
        idle = conn.execute(
            "select count(*) from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid()"
        ).fetchone()
    assert idle == (0,)  # the run closed what it kept open
