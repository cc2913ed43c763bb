"""Where backups live, behind one small interface: S3 (any endpoint) or a filesystem directory.

Reading one (a real storage: not a doctest)::

    storage = open_storage(config.storages["s3main"])
    objects = storage.list("postgres/orders/")      # paginated, every object under the prefix
    with storage.open(objects[-1].key) as stream:   # streamed, never loaded whole
        first = stream.read(1 << 20)

Errors are classified for the retry policy: access denied, a missing bucket or
bad credentials are :class:`~tasks.retry.PermanentFailure` (a ``fail`` with the
reason, never retried); throttling, 5xx and connection errors are
:class:`~tasks.retry.TransientFailure` (retried by Prefect). Messages never
carry credentials.
"""

from __future__ import annotations

import base64
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from opsflow.config import FilesystemStorage, S3Storage, Storage, resolve_secret
from tasks.retry import PermanentFailure, TransientFailure

CHUNK_BYTES = 1 << 20
# A directory holding this file is one pg_dump directory-format backup.
DIRECTORY_DUMP_MARKER = "toc.dat"
_PERMANENT_S3_CODES = frozenset(
    {
        "AccessDenied",
        "AllAccessDisabled",
        "NoSuchBucket",
        "NoSuchKey",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "InvalidBucketName",
        "AuthorizationHeaderMalformed",
        "404",
        "403",
    }
)


@dataclass(frozen=True)
class StoredObject:
    """One object (or, on a filesystem, a directory-format dump) in a storage."""

    key: str
    size: int
    written_at: datetime
    etag: str | None = None
    sha256: str | None = None  # hex; S3's full-object ChecksumSHA256 when the object has one
    encryption: str | None = None  # S3 server-side encryption reported on the object
    is_directory: bool = False

    @property
    def name(self) -> str:
        return self.key.rstrip("/").rsplit("/", 1)[-1]


class BackupStorage(Protocol):
    """What backup verification needs of a storage."""

    skipped: list[str]  # what the last ``list`` left out and why (a dangling symlink...), one line each

    def list(self, prefix: str) -> list[StoredObject]:
        """Every object under ``prefix``, oldest first by write time."""
        ...

    def head(self, key: str) -> StoredObject:
        """One object's metadata, including checksum and encryption where the storage keeps them."""
        ...

    def open(self, key: str) -> Any:
        """A context manager yielding a binary stream of the object."""
        ...

    def local_path(self, key: str) -> Path | None:
        """The object's path when it is already on local disk (no copy needed), else None."""
        ...

    def exists(self, key: str) -> bool: ...


def open_storage(settings: Storage) -> BackupStorage:
    """The storage described by a ``storages:`` entry of the config."""
    if isinstance(settings, S3Storage):
        return S3BackupStorage(settings)
    if isinstance(settings, FilesystemStorage):
        return FilesystemBackupStorage(Path(settings.path))
    raise TypeError(f"not a storage of the config: {type(settings).__name__}")


# -- filesystem -----------------------------------------------------------------------


class FilesystemBackupStorage:
    """Backups as files under a directory; ``key`` is the path relative to it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.skipped: list[str] = []
        self._resolved_root: Path | None = None

    def _real_root(self) -> Path:
        """The root with its symlinks resolved, once (every key is checked against it)."""
        if self._resolved_root is None:
            self._resolved_root = self.root.resolve()
        return self._resolved_root

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self._real_root()):
            raise PermanentFailure(f"key {key!r} leaves the storage directory")
        return path

    def list(self, prefix: str) -> list[StoredObject]:
        if not self.root.is_dir():
            raise PermanentFailure(f"storage directory {self.root} does not exist")
        self._path(prefix)  # refuses a prefix leaving the storage directory ("../", "/etc/")
        # "postgres/orders/" lists a directory; "orders-" matches names beginning with it.
        directory = self.root / prefix if prefix.endswith("/") or not prefix else (self.root / prefix).parent
        name_prefix = "" if prefix.endswith("/") or not prefix else Path(prefix).name
        self.skipped = []
        if not directory.is_dir():
            return []
        found: list[StoredObject] = []
        try:
            for current, dirs, files in os.walk(directory):
                here = Path(current)
                if here != directory and (here / DIRECTORY_DUMP_MARKER).exists():
                    found.append(self._describe(here))
                    dirs.clear()
                    continue
                for file in files:
                    path = here / file
                    if here == directory and not file.startswith(name_prefix):
                        continue
                    if path.is_symlink() and (why := self._unusable_link(path)):
                        self.skipped.append(f"{path.relative_to(self.root).as_posix()}: skipped, {why}")
                        continue
                    found.append(self._describe(path))
                dirs[:] = [d for d in dirs if here != directory or d.startswith(name_prefix)]
        except PermissionError as exc:
            raise PermanentFailure(f"permission denied reading {exc.filename}") from None
        return sorted(found, key=lambda o: (o.written_at, o.key))

    def _unusable_link(self, path: Path) -> str | None:
        """Why a symlink cannot be a backup here (it dangles, or leads out of the storage directory), else None."""
        try:
            target = path.resolve(strict=True)
        except (OSError, RuntimeError):  # dangling, a loop
            return "a symlink to nothing"
        if not target.is_relative_to(self._real_root()):
            return "a symlink leading out of the storage directory"
        return None

    def _describe(self, path: Path) -> StoredObject:
        stat = path.stat()
        if path.is_dir():
            size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
            key = path.relative_to(self.root).as_posix() + "/"
        else:
            size = stat.st_size
            key = path.relative_to(self.root).as_posix()
        return StoredObject(
            key=key,
            size=size,
            written_at=datetime.fromtimestamp(stat.st_mtime, tz=UTC),
            etag=f"{stat.st_mtime_ns}-{size}",
            is_directory=path.is_dir(),
        )

    def head(self, key: str) -> StoredObject:
        path = self._path(key)
        if not path.exists():
            raise PermanentFailure(f"{key}: no such file")
        return self._describe(path)

    @contextmanager
    def open(self, key: str) -> Iterator[BinaryIO]:
        try:
            stream = self._path(key).open("rb")
        except FileNotFoundError:
            raise PermanentFailure(f"{key}: no such file") from None
        except PermissionError:
            raise PermanentFailure(f"{key}: permission denied") from None
        with stream:
            yield stream

    def local_path(self, key: str) -> Path | None:
        return self._path(key)

    def exists(self, key: str) -> bool:
        return self._path(key).exists()


# -- S3 -------------------------------------------------------------------------------


def s3_failure(exc: BaseException, action: str) -> Exception:
    """Classify a botocore error for the retry policy, with a message fit for a check's detail."""
    from botocore.exceptions import BotoCoreError, ClientError

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "Unknown"))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        message = f"{action}: {code}" + (f" (HTTP {status})" if status else "")
        if code in _PERMANENT_S3_CODES or (status is not None and 400 <= status < 500 and status not in (408, 429)):
            return PermanentFailure(message)
        return TransientFailure(message)
    if isinstance(exc, BotoCoreError):
        return TransientFailure(f"{action}: {type(exc).__name__}")
    return TransientFailure(f"{action}: {type(exc).__name__}: {exc}")


class S3BackupStorage:
    """Backups as objects in an S3 bucket (AWS, MinIO, moto...); ``key`` is the full object key."""

    def __init__(self, settings: S3Storage) -> None:
        self.settings = settings
        self.bucket = settings.bucket
        self._client: Any = None
        self.skipped: list[str] = []

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config as BotoConfig

            self._client = boto3.session.Session().client(
                "s3",
                endpoint_url=str(self.settings.endpoint_url) if self.settings.endpoint_url else None,
                region_name=self.settings.region,
                aws_access_key_id=resolve_secret(self.settings.access_key_id),
                aws_secret_access_key=resolve_secret(self.settings.secret_access_key),
                # One attempt: Prefect's task retries are the one retry policy, visible in the UI. (botocore's
                # ``max_attempts`` counts retries, not attempts: 1 would mean two requests.)
                # Checksums are compared by the `checksum` check itself, so a mismatch is a finding
                # with a detail, not a download error raised half-way through the stream.
                config=BotoConfig(
                    retries={"total_max_attempts": 1, "mode": "standard"},
                    connect_timeout=10,
                    read_timeout=60,
                    response_checksum_validation="when_required",
                ),
            )
        return self._client

    def _key(self, key: str) -> str:
        return f"{self.settings.prefix}{key}"

    def list(self, prefix: str) -> list[StoredObject]:
        found: list[StoredObject] = []
        strip = len(self.settings.prefix)
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self._key(prefix))
            for page in pages:
                for entry in page.get("Contents", []):
                    found.append(
                        StoredObject(
                            key=entry["Key"][strip:],
                            size=int(entry["Size"]),
                            written_at=entry["LastModified"].astimezone(UTC),
                            etag=str(entry.get("ETag", "")).strip('"') or None,
                        )
                    )
        except Exception as exc:
            raise s3_failure(exc, f"listing s3://{self.bucket}/{self._key(prefix)}") from None
        return sorted(found, key=lambda o: (o.written_at, o.key))

    def head(self, key: str) -> StoredObject:
        try:
            meta = self.client.head_object(Bucket=self.bucket, Key=self._key(key), ChecksumMode="ENABLED")
        except Exception as exc:
            raise s3_failure(exc, f"reading s3://{self.bucket}/{self._key(key)}") from None
        checksum = meta.get("ChecksumSHA256")
        # A multipart upload's checksum is of its parts ("...-N" or COMPOSITE): not comparable to a whole-object hash.
        full_object = checksum and "-" not in checksum and meta.get("ChecksumType", "FULL_OBJECT") == "FULL_OBJECT"
        return StoredObject(
            key=key,
            size=int(meta["ContentLength"]),
            written_at=meta["LastModified"].astimezone(UTC),
            etag=str(meta.get("ETag", "")).strip('"') or None,
            sha256=base64.b64decode(checksum).hex() if full_object else None,
            encryption=meta.get("ServerSideEncryption"),
        )

    @contextmanager
    def open(self, key: str) -> Iterator[BinaryIO]:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
        except Exception as exc:
            raise s3_failure(exc, f"reading s3://{self.bucket}/{self._key(key)}") from None
        try:
            yield _S3Stream(body, f"s3://{self.bucket}/{self._key(key)}")
        finally:
            body.close()

    def local_path(self, key: str) -> Path | None:
        return None

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as exc:
            failure = s3_failure(exc, "head")
            if "404" in str(failure) or "NoSuchKey" in str(failure) or "NotFound" in str(failure):
                return False
            raise failure from None
        return True


class _S3Stream:
    """A botocore body whose read errors become Transient/PermanentFailure."""

    def __init__(self, body: Any, where: str) -> None:
        self._body = body
        self._where = where

    def read(self, size: int = -1) -> bytes:
        try:
            return bytes(self._body.read(size))
        except Exception as exc:
            raise s3_failure(exc, f"downloading {self._where}") from None

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def copy_stream(source: BinaryIO, destination: BinaryIO, *hashers: Any) -> int:
    """Copy in 1 MiB chunks, feeding each hasher on the way; return the bytes copied."""
    total = 0
    while chunk := source.read(CHUNK_BYTES):
        for hasher in hashers:
            hasher.update(chunk)
        destination.write(chunk)
        total += len(chunk)
    return total


def hash_stream(source: BinaryIO, hasher: Any) -> int:
    """Feed the whole stream to ``hasher`` in 1 MiB chunks (flat memory); return the byte count."""
    total = 0
    buffer = bytearray(CHUNK_BYTES)
    view = memoryview(buffer)
    readinto = getattr(source, "readinto", None)
    if readinto is None:
        while chunk := source.read(CHUNK_BYTES):
            hasher.update(chunk)
            total += len(chunk)
        return total
    while count := readinto(view):
        hasher.update(view[:count])
        total += count
    return total


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
