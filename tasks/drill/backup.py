"""Select and download: the backup to restore (the newest, or the one asked for), fetched and hashed,
with the ``download`` and ``checksum`` checks."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from opsflow.config import BackupSet, Storage
from opsflow.results import Check
from opsflow.units import format_duration, format_size
from tasks.backups import backups_of, compare_checksum, expected_checksum, fetch_for_reading
from tasks.drill.clock import Phase
from tasks.drill.common import _check
from tasks.retry import PermanentFailure
from tasks.storage import StoredObject, open_storage


def select_backup(backup: BackupSet, settings: Storage, key: str | None = None) -> StoredObject:
    """The newest backup of the set by write time, or the one named ``key`` (full key, or relative to the prefix)."""
    where = f"{backup.storage}:{backup.prefix or '/'}"
    found = backups_of(open_storage(settings).list(backup.prefix))
    if key is None:
        if not found:
            raise PermanentFailure(f"no backup under {where}")
        return found[-1]
    wanted = {key.rstrip("/"), (backup.prefix + key).rstrip("/")}
    for obj in reversed(found):
        if obj.key.rstrip("/") in wanted:
            return obj
    raise PermanentFailure(f"no backup {key!r} under {where}")


@dataclass(frozen=True)
class Downloaded:
    """The backup on local disk, its sha256, and the ``download`` and ``checksum`` checks."""

    path: Path
    sha256: str | None
    checks: list[Check]
    phase: Phase


def download_backup(backup: BackupSet, settings: Storage, obj: StoredObject, workdir: Path) -> Downloaded:
    """Fetch ``obj`` for pg_restore (a local file in place, else into ``workdir``), hashing it, and check the hash."""
    started = time.monotonic()
    storage = open_storage(settings)
    head = storage.head(obj.key) if settings.type == "s3" else None
    in_place = storage.local_path(obj.key) is not None
    target_dir = workdir / "download"
    target_dir.mkdir(exist_ok=True)
    path, sha256 = fetch_for_reading(storage, obj, target_dir)
    seconds = time.monotonic() - started
    rate = f", {format_size(obj.size / seconds)}/s" if seconds > 0 and obj.size else ""
    where = f"{backup.storage}:{obj.key}"
    if in_place:
        detail = f"{where} read in place ({format_size(obj.size)}, hashed in {format_duration(round(seconds, 3))})"
    else:
        detail = f"{where} downloaded ({format_size(obj.size)} in {format_duration(round(seconds, 3))}{rate})"
    checks = [_check("download", "ok", detail, observed=obj.size)]
    if backup.checksum != "none" and not obj.is_directory:
        expected, source = expected_checksum(storage, obj, head, backup.checksum)
        checks.append(compare_checksum(obj.name, sha256, expected, source, backup.checksum))
    return Downloaded(path=path, sha256=sha256, checks=checks, phase=Phase.since("download", started))
