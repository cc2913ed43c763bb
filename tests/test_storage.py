"""tasks/storage.py on both implementations: moto's S3 over real HTTP, and a directory on disk.

The S3 tests talk to the loopback endpoint of ``tests/s3_server.py`` and read its
request log to see what was really sent (pages, attempts, downloads).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from opsflow.config import FilesystemStorage, S3Storage
from tasks.retry import PermanentFailure, TransientFailure
from tasks.storage import (
    CHUNK_BYTES,
    FilesystemBackupStorage,
    S3BackupStorage,
    StoredObject,
    hash_stream,
    open_storage,
)
from tests.conftest import free_port
from tests.s3_server import S3Server

BUCKET = "prod-backups"
T0 = datetime(2026, 11, 1, 6, 0, tzinfo=UTC)


@pytest.fixture
def bucket(s3_client: Any) -> str:
    s3_client.create_bucket(Bucket=BUCKET)
    return BUCKET


@pytest.fixture
def s3_storage(bucket: str, s3_endpoint: str, s3_server: S3Server) -> Callable[..., S3BackupStorage]:
    """``make(prefix="")``: a storage on the test bucket, built from the config model as opsflow does;
    the request log is emptied so a test sees only what the storage sent."""

    def make(prefix: str = "", bucket: str = bucket, endpoint: str = s3_endpoint, **extra: Any) -> S3BackupStorage:
        settings = S3Storage(bucket=bucket, prefix=prefix, endpoint_url=endpoint, region="us-east-1", **extra)
        storage = open_storage(settings)
        assert isinstance(storage, S3BackupStorage)
        s3_server.clear()
        return storage

    return make


def put(client: Any, key: str, body: bytes = b"backup", **extra: Any) -> None:
    client.put_object(Bucket=BUCKET, Key=key, Body=body, **extra)


# -- S3: listing ----------------------------------------------------------------


def test_s3_list_is_complete_past_one_page(
    s3_client: Any, s3_storage: Callable[..., S3BackupStorage], s3_server: S3Server
) -> None:
    keys = [f"postgres/orders/{i:05d}.dump" for i in range(1_100)]
    s3_server.put_objects(BUCKET, {key: key.encode() for key in keys})  # 1,100 PUTs over HTTP take seconds
    put(s3_client, "postgres/ordersX/elsewhere.dump")
    put(s3_client, "postgres/other/elsewhere.dump")
    storage = s3_storage()

    objects = storage.list("postgres/orders/")

    assert sorted(o.key for o in objects) == keys
    assert all(o.size == len(o.key) for o in objects)
    pages = s3_server.requests_matching(operation="ListObjectsV2", bucket=BUCKET)
    assert len(pages) == 2  # S3 answers at most 1,000 keys a page
    assert "continuation-token" in pages[1].params


def test_s3_list_is_oldest_first_by_write_time_not_by_name(
    s3_client: Any, s3_storage: Callable[..., S3BackupStorage], s3_server: S3Server
) -> None:
    written = {"c.dump": T0, "a.dump": T0 + timedelta(hours=1), "b.dump": T0 + timedelta(hours=2)}
    for name, when in written.items():
        put(s3_client, f"db/{name}")
        s3_server.set_last_modified(BUCKET, f"db/{name}", when)

    objects = s3_storage().list("db/")

    assert [o.key for o in objects] == ["db/c.dump", "db/a.dump", "db/b.dump"]
    assert [o.written_at for o in objects] == list(written.values())
    assert all(o.written_at.tzinfo is not None and o.written_at.utcoffset() == timedelta(0) for o in objects)


def test_s3_list_of_an_empty_prefix_is_empty(s3_storage: Callable[..., S3BackupStorage]) -> None:
    assert s3_storage().list("nothing/here/") == []


def test_s3_keys_with_spaces_and_unicode_round_trip(s3_client: Any, s3_storage: Callable[..., S3BackupStorage]) -> None:
    key = "db/orders 2026-11-01 é+%.dump"
    put(s3_client, key, b"payload")
    storage = s3_storage()

    [listed] = storage.list("db/")

    assert listed.key == key
    assert storage.head(key).size == len(b"payload")
    with storage.open(key) as stream:
        assert stream.read() == b"payload"


def test_s3_storage_prefix_is_applied_and_stripped(
    s3_client: Any, s3_storage: Callable[..., S3BackupStorage], s3_server: S3Server
) -> None:
    put(s3_client, "team-a/postgres/orders/1.dump", b"ours")
    put(s3_client, "team-b/postgres/orders/2.dump", b"theirs")
    put(s3_client, "postgres/orders/3.dump", b"unprefixed")
    storage = s3_storage(prefix="team-a/")

    objects = storage.list("postgres/orders/")

    assert [o.key for o in objects] == ["postgres/orders/1.dump"]
    head = storage.head("postgres/orders/1.dump")
    assert head.key == "postgres/orders/1.dump"
    assert head.size == 4
    with storage.open("postgres/orders/1.dump") as stream:
        assert stream.read() == b"ours"
    assert storage.exists("postgres/orders/1.dump")
    assert not storage.exists("postgres/orders/3.dump")
    assert storage.local_path("postgres/orders/1.dump") is None
    [listing] = s3_server.requests_matching(operation="ListObjectsV2")
    assert listing.params["prefix"] == ["team-a/postgres/orders/"]
    object_requests = s3_server.requests_matching(key_prefix="")
    assert object_requests and all(r.key.startswith("team-a/") for r in object_requests if r.key)


# -- S3: head -------------------------------------------------------------------


def test_s3_head_reports_the_sha256_checksum_stored_with_the_object(
    s3_client: Any, s3_storage: Callable[..., S3BackupStorage]
) -> None:
    body = os.urandom(100_000)
    put(s3_client, "db/with.dump", body, ChecksumAlgorithm="SHA256")
    put(s3_client, "db/without.dump", body)  # botocore still sends its default CRC32: not a sha256
    storage = s3_storage()

    with_checksum = storage.head("db/with.dump")
    without = storage.head("db/without.dump")

    assert with_checksum.sha256 == hashlib.sha256(body).hexdigest()
    assert without.sha256 is None
    assert with_checksum.size == without.size == len(body)
    assert with_checksum.etag == hashlib.md5(body).hexdigest()
    assert with_checksum.written_at.utcoffset() == timedelta(0)


def test_s3_head_ignores_a_multipart_composite_checksum(
    s3_client: Any, s3_storage: Callable[..., S3BackupStorage]
) -> None:
    """A multipart upload's SHA256 is of its parts' checksums ("...-2"): not comparable to the bytes' hash."""
    key = "db/multipart.dump"
    parts = [os.urandom(5 << 20), b"tail"]
    upload = s3_client.create_multipart_upload(Bucket=BUCKET, Key=key, ChecksumAlgorithm="SHA256")
    done = []
    for number, part in enumerate(parts, start=1):
        answer = s3_client.upload_part(
            Bucket=BUCKET,
            Key=key,
            UploadId=upload["UploadId"],
            PartNumber=number,
            Body=part,
            ChecksumAlgorithm="SHA256",
        )
        done.append({"PartNumber": number, "ETag": answer["ETag"], "ChecksumSHA256": answer["ChecksumSHA256"]})
    s3_client.complete_multipart_upload(
        Bucket=BUCKET, Key=key, UploadId=upload["UploadId"], MultipartUpload={"Parts": done}
    )

    head = s3_storage().head(key)

    assert head.sha256 is None
    assert head.size == sum(map(len, parts))


def test_s3_head_reports_server_side_encryption(s3_client: Any, s3_storage: Callable[..., S3BackupStorage]) -> None:
    put(s3_client, "db/encrypted.dump", ServerSideEncryption="AES256")
    put(s3_client, "db/plain.dump")
    storage = s3_storage()

    assert storage.head("db/encrypted.dump").encryption == "AES256"
    assert storage.head("db/plain.dump").encryption is None


def test_s3_head_and_open_of_a_missing_key_are_permanent(s3_storage: Callable[..., S3BackupStorage]) -> None:
    storage = s3_storage()

    with pytest.raises(PermanentFailure, match="404"):
        storage.head("db/missing.dump")
    with pytest.raises(PermanentFailure, match="NoSuchKey"), storage.open("db/missing.dump"):
        pass
    assert storage.exists("db/missing.dump") is False


# -- S3: open -------------------------------------------------------------------


def test_s3_open_streams_in_bounded_reads(
    s3_client: Any,
    s3_storage: Callable[..., S3BackupStorage],
    s3_server: S3Server,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from botocore.response import StreamingBody

    body = os.urandom(5 * CHUNK_BYTES + 123)
    put(s3_client, "db/big.dump", body)
    storage = s3_storage()
    asked: list[int | None] = []
    real_read = StreamingBody.read

    def spy(self: StreamingBody, amt: int | None = None) -> bytes:
        asked.append(amt)
        return real_read(self, amt)

    monkeypatch.setattr(StreamingBody, "read", spy)

    with storage.open("db/big.dump") as stream:
        hasher = hashlib.sha256()
        assert hash_stream(stream, hasher) == len(body)

    assert hasher.hexdigest() == hashlib.sha256(body).hexdigest()
    # Never read whole: every read from the HTTP body is bounded by the chunk size.
    assert asked and all(amt is not None and 0 < amt <= CHUNK_BYTES for amt in asked)
    assert len(asked) >= 6
    [download] = s3_server.downloads(bucket=BUCKET)
    assert download.key == "db/big.dump"


def test_s3_open_can_stop_early(s3_client: Any, s3_storage: Callable[..., S3BackupStorage]) -> None:
    put(s3_client, "db/big.dump", os.urandom(4 * CHUNK_BYTES))
    storage = s3_storage()

    with storage.open("db/big.dump") as stream:
        assert len(stream.read(CHUNK_BYTES)) == CHUNK_BYTES
    # The connection went back (or was dropped) cleanly: the next call works.
    assert storage.head("db/big.dump").size == 4 * CHUNK_BYTES


def test_the_request_log_tells_a_download_from_a_listing_and_a_head(
    s3_client: Any, s3_storage: Callable[..., S3BackupStorage], s3_server: S3Server
) -> None:
    put(s3_client, "db/1.dump")
    storage = s3_storage()

    storage.list("db/")
    storage.head("db/1.dump")
    with storage.open("db/1.dump") as stream:
        stream.read()

    assert [r.operation for r in s3_server.requests] == ["ListObjectsV2", "HeadObject", "GetObject"]
    assert [r.method for r in s3_server.requests_matching(method="GET", bucket=BUCKET)] == ["GET", "GET"]
    assert len(s3_server.downloads(bucket=BUCKET, key_prefix="db/")) == 1
    assert s3_server.requests_matching(method="HEAD", key_prefix="db/1")[0].is_download is False


# -- S3: errors -------------------------------------------------------------------


def _s3_calls(storage: S3BackupStorage) -> dict[str, Callable[[], object]]:
    def download() -> None:
        with storage.open("db/1.dump") as stream:
            stream.read()

    return {
        "list": lambda: storage.list("db/"),
        "head": lambda: storage.head("db/1.dump"),
        "open": download,
        "exists": lambda: storage.exists("db/1.dump"),
    }


@pytest.mark.parametrize("call", ["list", "open"])
def test_s3_access_denied_is_permanent_and_says_so(
    call: str, s3_client: Any, s3_storage: Callable[..., S3BackupStorage], s3_server: S3Server
) -> None:
    put(s3_client, "db/1.dump")
    storage = s3_storage()
    s3_server.deny(BUCKET)

    with pytest.raises(PermanentFailure) as caught:
        _s3_calls(storage)[call]()

    assert "AccessDenied" in str(caught.value)
    assert f"s3://{BUCKET}/db/" in str(caught.value)
    assert len(s3_server.requests_matching(bucket=BUCKET)) == 1  # a 4xx that cannot change: no retry


@pytest.mark.parametrize("call", ["head", "exists"])
def test_s3_access_denied_on_head_is_permanent(
    call: str, s3_client: Any, s3_storage: Callable[..., S3BackupStorage], s3_server: S3Server
) -> None:
    """A HEAD error has no body, so the client knows only the status: 403."""
    put(s3_client, "db/1.dump")
    storage = s3_storage()
    s3_server.deny(BUCKET)

    with pytest.raises(PermanentFailure, match="403"):
        _s3_calls(storage)[call]()


def test_s3_credentials_never_appear_in_failures(
    s3_client: Any, s3_storage: Callable[..., S3BackupStorage], s3_server: S3Server
) -> None:
    secret = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"
    storage = s3_storage(access_key_id="AKIAEXAMPLE123", secret_access_key=secret)
    s3_server.deny(BUCKET)

    for call in _s3_calls(storage).values():
        with pytest.raises(PermanentFailure) as caught:
            call()
        assert secret not in str(caught.value) and "AKIAEXAMPLE123" not in str(caught.value)


@pytest.mark.parametrize("call", ["list", "head", "open", "exists"])
def test_s3_throttled_once_is_transient_after_exactly_one_attempt(
    call: str, s3_client: Any, s3_storage: Callable[..., S3BackupStorage], s3_server: S3Server
) -> None:
    """botocore's own retries are off: Prefect's task retries are the one retry policy (SPEC §7)."""
    put(s3_client, "db/1.dump")
    storage = s3_storage()
    s3_server.throttle(BUCKET, times=1)

    with pytest.raises(TransientFailure) as caught:
        _s3_calls(storage)[call]()

    assert ("SlowDown" if call in ("list", "open") else "503") in str(caught.value)
    [attempt] = s3_server.requests_matching(bucket=BUCKET)
    assert attempt.fault == "SlowDown"
    # The throttle is used up: the very next call (Prefect's retry) succeeds.
    _s3_calls(storage)[call]()
    assert len(s3_server.requests_matching(bucket=BUCKET)) == 2


def test_s3_missing_bucket_is_permanent(s3_storage: Callable[..., S3BackupStorage]) -> None:
    storage = s3_storage(bucket="no-such-bucket")

    with pytest.raises(PermanentFailure, match="NoSuchBucket"):
        storage.list("db/")


@pytest.mark.parametrize("call", ["list", "head", "open", "exists"])
def test_s3_closed_port_is_transient(call: str, s3_credentials: None) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    storage = open_storage(S3Storage(bucket=BUCKET, endpoint_url=endpoint, region="us-east-1"))
    assert isinstance(storage, S3BackupStorage)

    with pytest.raises(TransientFailure, match="EndpointConnectionError"):
        _s3_calls(storage)[call]()


# -- filesystem -----------------------------------------------------------------


def write(path: Path, body: bytes = b"backup", mtime: datetime | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)
    if mtime is not None:
        os.utime(path, (mtime.timestamp(), mtime.timestamp()))
    return path


@pytest.fixture
def fs_root(tmp_path: Path) -> Path:
    root = tmp_path / "backups"
    root.mkdir()
    return root


@pytest.fixture
def fs(fs_root: Path) -> FilesystemBackupStorage:
    storage = open_storage(FilesystemStorage(path=str(fs_root)))
    assert isinstance(storage, FilesystemBackupStorage)
    return storage


def keys(objects: list[StoredObject]) -> list[str]:
    return [o.key for o in objects]


def test_fs_directory_prefix_lists_everything_under_it(fs_root: Path, fs: FilesystemBackupStorage) -> None:
    write(fs_root / "postgres/orders/a.dump", mtime=T0)
    write(fs_root / "postgres/orders/2026/b.dump", mtime=T0 + timedelta(hours=1))
    write(fs_root / "postgres/orders-old/c.dump", mtime=T0)
    write(fs_root / "postgres/ordersX.dump", mtime=T0)

    assert keys(fs.list("postgres/orders/")) == ["postgres/orders/a.dump", "postgres/orders/2026/b.dump"]


def test_fs_name_prefix_matches_names_beginning_with_it(fs_root: Path, fs: FilesystemBackupStorage) -> None:
    write(fs_root / "db/orders-2026-11-01.dump", mtime=T0)
    write(fs_root / "db/orders-2026-11-02.dump", mtime=T0 + timedelta(days=1))
    write(fs_root / "db/orders-archive/orders-2025.dump", mtime=T0 - timedelta(days=300))
    write(fs_root / "db/ordersX.dump", mtime=T0)
    write(fs_root / "db/billing-2026-11-01.dump", mtime=T0)
    write(fs_root / "db/archive/orders-2024.dump", mtime=T0)

    assert keys(fs.list("db/orders-")) == [
        "db/orders-archive/orders-2025.dump",
        "db/orders-2026-11-01.dump",
        "db/orders-2026-11-02.dump",
    ]
    assert keys(fs.list("db/nothing-")) == []
    assert fs.list("missing/dir/") == []


def test_fs_list_is_oldest_first_by_mtime_not_by_name(fs_root: Path, fs: FilesystemBackupStorage) -> None:
    write(fs_root / "db/c.dump", b"c", mtime=T0)
    write(fs_root / "db/a.dump", b"aa", mtime=T0 + timedelta(hours=1))
    write(fs_root / "db/b.dump", b"bbb", mtime=T0 + timedelta(hours=2))

    objects = fs.list("db/")

    assert keys(objects) == ["db/c.dump", "db/a.dump", "db/b.dump"]
    assert [o.written_at for o in objects] == [T0, T0 + timedelta(hours=1), T0 + timedelta(hours=2)]
    assert [o.size for o in objects] == [1, 2, 3]
    assert all(o.sha256 is None and o.encryption is None for o in objects)


def test_fs_directory_format_dump_is_one_object(fs_root: Path, fs: FilesystemBackupStorage) -> None:
    dump = fs_root / "db/orders-2026-11-01.dir"
    write(dump / "toc.dat", b"t" * 10)
    write(dump / "3001.dat.gz", b"d" * 100)
    write(dump / "3002.dat.gz", b"e" * 1000)
    os.utime(dump, (T0.timestamp(), T0.timestamp()))
    write(fs_root / "db/orders-2026-11-02.dump", b"x", mtime=T0 + timedelta(days=1))
    write(fs_root / "db/not-a-dump/readme.txt", b"r", mtime=T0 + timedelta(days=2))  # no toc.dat: plain files

    objects = fs.list("db/")

    assert keys(objects) == ["db/orders-2026-11-01.dir/", "db/orders-2026-11-02.dump", "db/not-a-dump/readme.txt"]
    directory = objects[0]
    assert directory.is_directory and directory.size == 1110 and directory.written_at == T0
    assert directory.name == "orders-2026-11-01.dir"
    assert fs.head("db/orders-2026-11-01.dir/") == directory
    assert fs.local_path("db/orders-2026-11-01.dir/") == dump.resolve()


def test_fs_head_open_exists_and_local_path(fs_root: Path, fs: FilesystemBackupStorage) -> None:
    body = os.urandom(3 * CHUNK_BYTES + 7)
    path = write(fs_root / "db/1.dump", body, mtime=T0)

    head = fs.head("db/1.dump")
    with fs.open("db/1.dump") as stream:
        hasher = hashlib.sha256()
        count = hash_stream(stream, hasher)

    assert (head.key, head.size, head.written_at, head.is_directory) == ("db/1.dump", len(body), T0, False)
    assert count == len(body) and hasher.hexdigest() == hashlib.sha256(body).hexdigest()
    assert fs.exists("db/1.dump") and not fs.exists("db/2.dump")
    assert fs.local_path("db/1.dump") == path.resolve()


@pytest.mark.parametrize("key", ["../outside.dump", "db/../../outside.dump", "/etc/passwd"])
def test_fs_keys_leaving_the_root_are_refused(
    key: str, tmp_path: Path, fs_root: Path, fs: FilesystemBackupStorage
) -> None:
    write(tmp_path / "outside.dump")
    write(fs_root / "db/1.dump")

    for call in (fs.head, fs.exists, fs.local_path, fs.list):
        with pytest.raises(PermanentFailure, match="leaves the storage directory"):
            call(key)
    with pytest.raises(PermanentFailure, match="leaves the storage directory"), fs.open(key):
        pass


def test_fs_missing_root_is_permanent(tmp_path: Path) -> None:
    storage = open_storage(FilesystemStorage(path=str(tmp_path / "not-mounted")))

    with pytest.raises(PermanentFailure, match="does not exist"):
        storage.list("db/")


def test_fs_missing_file_is_permanent(fs: FilesystemBackupStorage) -> None:
    with pytest.raises(PermanentFailure, match="no such file"):
        fs.head("db/missing.dump")
    with pytest.raises(PermanentFailure, match="no such file"), fs.open("db/missing.dump"):
        pass


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads everything")
def test_fs_unreadable_file_is_permanent(fs_root: Path, fs: FilesystemBackupStorage) -> None:
    path = write(fs_root / "db/1.dump")
    path.chmod(0)
    try:
        with pytest.raises(PermanentFailure, match="permission denied"), fs.open("db/1.dump"):
            pass
    finally:
        path.chmod(0o600)


def test_fs_errors_inside_the_with_block_are_not_relabelled(fs_root: Path, fs: FilesystemBackupStorage) -> None:
    write(fs_root / "db/1.dump")

    with pytest.raises(FileNotFoundError, match="elsewhere"), fs.open("db/1.dump"):
        raise FileNotFoundError("elsewhere")


def test_fs_list_skips_symlinks_that_dangle_or_leave_the_root_and_says_so(
    tmp_path: Path, fs_root: Path, fs: FilesystemBackupStorage
) -> None:
    write(fs_root / "db/a.dump", mtime=T0)
    write(fs_root / "db/inside/b.dump", mtime=T0 + timedelta(hours=1))
    (fs_root / "db/linked.dump").symlink_to(fs_root / "db/inside/b.dump")  # stays inside: a backup
    (fs_root / "db/dangling.dump").symlink_to(fs_root / "db/gone.dump")
    (fs_root / "db/passwd.dump").symlink_to("/etc/passwd")
    outside = write(tmp_path / "elsewhere/newest.dump", mtime=T0 + timedelta(days=1))
    (fs_root / "db/relative.dump").symlink_to(Path("../..") / outside.relative_to(tmp_path))

    listed = keys(fs.list("db/"))
    assert sorted(listed) == ["db/a.dump", "db/inside/b.dump", "db/linked.dump"]
    assert sorted(fs.skipped) == [
        "db/dangling.dump: skipped, a symlink to nothing",
        "db/passwd.dump: skipped, a symlink leading out of the storage directory",
        "db/relative.dump: skipped, a symlink leading out of the storage directory",
    ]
    assert keys(fs.list("db/a")) == ["db/a.dump"] and fs.skipped == []
