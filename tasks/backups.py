"""Backup verification: can we restore last night's backups? (SPEC §5 backup-verification, §6 Backups)

Per backup set, each check a named result with a human detail:

- ``present`` — at least one backup under the prefix;
- ``fresh`` — the newest is younger than ``max_age`` (the RPO);
- ``size`` — the newest is at least ``min_size`` and not ``size_drop`` smaller
  than the median of the previous ones (up to 7);
- ``checksum`` — bytes match S3's ``ChecksumSHA256`` or the ``NAME.sha256``
  sidecar (``auto`` warns when neither exists);
- ``readable`` — the whole archive decodes with the format's own reader
  (``pg_restore -f /dev/null``, a full gzip read, ``pg_verifybackup``);
- ``retention`` — at least ``min_count`` backups within ``days``, no gap over ``max_gap``;
- ``encryption`` — S3 reports server-side encryption on the newest (when required);
- ``restore`` — the newest restores into a throwaway PostgreSQL (when ``restore_test``).

A run sees only the backups written at or before its "now" (``--as-of``): one in the past is judged on
the backups that existed then, for every check and metric.

``checksum``, ``readable`` and ``restore`` read whole objects, so each object
is verified once and recorded in the ledger (``opsflow.backup_verifications``);
a later run re-reads it only when its size or ETag changed or
``reverify_after`` has passed. Checks that do not apply are left out.

Each set is verified in a work directory of its own in the system temp dir, marked with the process
that owns it (host, pid, its start time); a run killed outright leaves it, with a restore test's
PostgreSQL still running in it, and the next run removes it (:func:`remove_restore_leftovers`, one
WARNING line) — never one whose process still runs.

The pure checks take plain values and are tested directly; :func:`verify_backup_set`
does the I/O and is wrapped by the thin task :data:`verify_backup_set_task`.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import itertools
import json
import logging
import shutil
import statistics
import subprocess
import tarfile
import tempfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.states import State

from opsflow.config import BackupSet, Retention, Storage
from opsflow.embedded import EmbeddedPostgres, client_bin, pg_restore_command
from opsflow.owners import owner_alive, owner_marker, stop_postmaster
from opsflow.redact import redact
from opsflow.results import Check, Item, worst
from opsflow.store import OpsStore
from opsflow.units import format_duration, format_size
from tasks.retry import IO_RETRIES, PermanentFailure
from tasks.routine import item_state
from tasks.storage import BackupStorage, StoredObject, copy_stream, hash_stream, open_storage

log = logging.getLogger(__name__)

SIDECAR_SUFFIX = ".sha256"
SIZE_MEDIAN_WINDOW = 7
READER_TIMEOUT_SECONDS = 3600
DEEP_CHECKS = ("checksum", "readable", "restore")


def _check(name: str, status: str, detail: str, observed: Any = None, expected: Any = None) -> Check:
    return Check(check=name, status=status, detail=detail, observed=observed, expected=expected)  # type: ignore[arg-type]


# -- pure checks ----------------------------------------------------------------------


def backups_of(objects: Sequence[StoredObject]) -> list[StoredObject]:
    """The backups among ``objects``, oldest first: sidecar checksum files and zero-byte "folder"
    keys ending in ``/`` (what S3 consoles create) are not backups (SPEC §6)."""
    return sorted(
        (o for o in objects if not o.key.endswith(SIDECAR_SUFFIX) and not is_folder_marker(o)),
        key=lambda o: (o.written_at, o.key),
    )


def backups_as_of(backups: Sequence[StoredObject], now: datetime) -> list[StoredObject]:
    """Those of ``backups`` written at or before ``now`` (a run ``--as-of`` the past sees only those)."""
    return [o for o in backups if o.written_at <= now]


def is_folder_marker(obj: StoredObject) -> bool:
    """A zero-byte object key ending in ``/`` (an S3 console "folder"), not a directory-format dump."""
    return obj.key.endswith("/") and obj.size == 0 and not obj.is_directory


def check_present(backups: Sequence[StoredObject], where: str, skipped: Sequence[str] = (), later: int = 0) -> Check:
    """At least one backup; ``warn`` naming what the listing skipped (a dangling symlink...) when it skipped any.
    ``later`` backups were written after the run's "now" (an ``--as-of`` in the past) and are not counted."""
    noted = ""
    if skipped:
        noted = "; " + "; ".join(skipped[:3]) + (f" (+{len(skipped) - 3} more skipped)" if len(skipped) > 3 else "")
    if later:
        noted += f"; {later} written after the as-of time not counted"
    if not backups:
        return _check("present", "fail", f"no backup under {where}{noted}", observed=0, expected=1)
    status = "warn" if skipped else "ok"
    return _check("present", status, f"{len(backups)} backups under {where}{noted}", observed=len(backups))


def check_fresh(newest: StoredObject, now: datetime, max_age: float) -> Check:
    age = (now - newest.written_at).total_seconds()
    limit = format_duration(max_age)
    if age > max_age:
        detail = f"newest backup is {format_duration(round(age))} old, limit {limit}"
        return _check("fresh", "fail", detail, observed=round(age), expected=round(max_age))
    return _check(
        "fresh",
        "ok",
        f"newest backup is {format_duration(max(0, round(age)))} old, limit {limit}",
        observed=round(age),
        expected=round(max_age),
    )


def check_size(newest: StoredObject, previous: Sequence[StoredObject], min_size: int, size_drop: float) -> Check:
    """``min_size``, then the drop against the median of up to 7 earlier backups."""
    if newest.size < min_size:
        detail = f"newest backup is {format_size(newest.size)}, minimum {format_size(min_size)}"
        return _check("size", "fail", detail, observed=newest.size, expected=min_size)
    window = [o.size for o in previous[-SIZE_MEDIAN_WINDOW:]]
    if not window:
        return _check(
            "size",
            "ok",
            f"newest backup is {format_size(newest.size)}; no earlier backup to compare",
            observed=newest.size,
        )
    median = statistics.median(window)
    floor = median * (1 - size_drop / 100)
    drop = 100 * (1 - newest.size / median) if median else 0.0
    if newest.size < floor:
        detail = (
            f"newest backup is {format_size(newest.size)}, {drop:.0f}% smaller than the median "
            f"{format_size(round(median))} of the previous {len(window)} (limit {size_drop:g}%)"
        )
        return _check("size", "fail", detail, observed=newest.size, expected=round(floor))
    return _check(
        "size",
        "ok",
        f"newest backup is {format_size(newest.size)}, median of the previous "
        f"{len(window)} is {format_size(round(median))}",
        observed=newest.size,
        expected=round(floor),
    )


def check_retention(backups: Sequence[StoredObject], now: datetime, retention: Retention) -> Check:
    """At least ``min_count`` backups within ``days``; no two consecutive ones further apart than ``max_gap``."""
    window_start = now - timedelta(days=retention.days)
    recent = [o for o in backups if window_start <= o.written_at <= now]
    if len(recent) < retention.min_count:
        detail = f"{len(recent)} backups in the last {retention.days} days, minimum {retention.min_count}"
        return _check("retention", "fail", detail, observed=len(recent), expected=retention.min_count)
    if retention.max_gap is not None:
        gaps = [
            ((later.written_at - earlier.written_at).total_seconds(), earlier, later)
            for earlier, later in itertools.pairwise(recent)
        ]
        too_long = [g for g in gaps if g[0] > retention.max_gap]
        if too_long:
            seconds, earlier, later = max(too_long, key=lambda g: g[0])
            detail = (
                f"{len(too_long)} gaps over {format_duration(retention.max_gap)}; longest "
                f"{format_duration(round(seconds))} between {earlier.name} and {later.name}"
            )
            return _check("retention", "fail", detail, observed=round(seconds), expected=round(retention.max_gap))
    return _check(
        "retention",
        "ok",
        f"{len(recent)} backups in the last {retention.days} days",
        observed=len(recent),
        expected=retention.min_count,
    )


def check_encryption(newest: StoredObject) -> Check:
    if not newest.encryption:
        return _check("encryption", "fail", f"{newest.name} has no server-side encryption", expected="aws:kms|AES256")
    return _check("encryption", "ok", f"{newest.name} is encrypted ({newest.encryption})", observed=newest.encryption)


def parse_sidecar(text: str) -> str | None:
    """The hex digest of a ``sha256sum``-style line (``HEX  NAME`` or just ``HEX``)."""
    token = text.strip().split(maxsplit=1)[0] if text.strip() else ""
    token = token.lower()
    return token if len(token) == 64 and all(c in "0123456789abcdef" for c in token) else None


def compare_checksum(name: str, computed: str | None, expected: str | None, source: str | None, mode: str) -> Check:
    """The per-object checksum verdict."""
    if expected is None:
        if mode == "auto":
            return _check("checksum", "warn", f"{name}: no checksum stored with the object (S3 or sidecar)")
        return _check("checksum", "fail", f"{name}: no {mode} checksum found", expected=mode)
    if computed != expected:
        return _check(
            "checksum",
            "fail",
            f"{name}: sha256 mismatch against the {source} checksum "
            f"(expected {expected[:12]}…, read {str(computed)[:12]}…)",
            observed=computed,
            expected=expected,
        )
    return _check("checksum", "ok", f"{name}: sha256 matches the {source} checksum", observed=computed)


# -- readers ----------------------------------------------------------------------------


def detect_pg_dump_format(path: Path) -> str | None:
    """``custom``, ``tar`` or ``directory`` for a pg_dump archive, else None."""
    if path.is_dir():
        return "directory" if (path / "toc.dat").exists() else None
    with path.open("rb") as stream:
        head = stream.read(512)
    if head.startswith(b"PGDMP"):
        return "custom"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    return None


def _run_reader(command: list[str], what: str) -> tuple[bool, str]:
    done = subprocess.run(command, capture_output=True, text=True, timeout=READER_TIMEOUT_SECONDS, check=False)
    if done.returncode == 0:
        return True, ""
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    return False, redact(lines[-1] if lines else f"{what} exited {done.returncode}")


def read_pg_dump(path: Path, name: str) -> Check:
    archive_format = detect_pg_dump_format(path)
    if archive_format is None:
        return _check("readable", "fail", f"{name}: not a pg_dump archive (custom, tar or directory)")
    # -f /dev/null decodes every table's data; --list would read only the table of contents.
    ok, error = _run_reader([str(client_bin("pg_restore")), "-f", "/dev/null", str(path)], "pg_restore")
    if not ok:
        return _check("readable", "fail", f"{name}: pg_restore failed: {error}", observed=archive_format)
    return _check("readable", "ok", f"{name}: {archive_format}-format archive decodes fully", observed=archive_format)


def read_gzip(path: Path, name: str) -> Check:
    try:
        with gzip.open(path, "rb") as stream:
            while stream.read(1 << 20):
                pass
    except (OSError, EOFError, zlib.error) as exc:
        return _check("readable", "fail", f"{name}: gzip stream is damaged: {exc}")
    return _check("readable", "ok", f"{name}: gzip stream decodes fully")


def read_basebackup(path: Path, name: str, workdir: Path) -> Check:
    """``pg_verifybackup`` on a backup directory, or on a tar(.gz) of one (as shipped to object storage)."""
    directory = path
    if not path.is_dir():
        directory = workdir / "basebackup"
        try:
            with tarfile.open(path) as archive:
                archive.extractall(directory, filter="data")
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            return _check("readable", "fail", f"{name}: not a readable tar of a base backup: {exc}")
        entries = list(directory.iterdir())
        if len(entries) == 1 and entries[0].is_dir():
            directory = entries[0]
    if not (directory / "backup_manifest").exists():
        return _check("readable", "fail", f"{name}: no backup_manifest: pg_verifybackup needs one")
    ok, error = _run_reader([str(client_bin("pg_verifybackup")), "--no-parse-wal", str(directory)], "pg_verifybackup")
    if not ok:
        return _check("readable", "fail", f"{name}: pg_verifybackup failed: {error}")
    return _check("readable", "ok", f"{name}: pg_verifybackup verified every file against the manifest")


def read_archive(path: Path, backup_format: str, name: str, workdir: Path) -> Check | None:
    """The ``readable`` check for one backup, None for ``format: file`` (nothing to decode)."""
    if backup_format == "pg_dump":
        return read_pg_dump(path, name)
    if backup_format == "sql_gz":
        return read_gzip(path, name)
    if backup_format == "pg_basebackup":
        return read_basebackup(path, name, workdir)
    return None


def restore_into_scratch(path: Path, name: str, workdir: Path, jobs: int = 2) -> Check:
    """Restore a pg_dump archive into a throwaway embedded PostgreSQL and count rows per table.

    As a role that is not a superuser and owns only the scratch database (SPEC §7): a backup cannot run
    programs or read files on this host; one that needs superuser powers fails, saying so.
    """
    from tasks.drill.common import _libpq  # tasks.drill imports this module: imported when used
    from tasks.drill.roles import create_role_owning, needs_superuser

    server = EmbeddedPostgres.start(workdir / "restore-pg", keep_running=False)
    try:
        server.ensure_database("restore_test")
        role = create_role_owning(server.url(), "restore_test")
        url = role.conninfo(server.url(), "restore_test")
        conninfo, env = _libpq(url)
        command = pg_restore_command(conninfo, path, jobs)
        done = subprocess.run(
            command, capture_output=True, text=True, env=env, timeout=READER_TIMEOUT_SECONDS, check=False
        )
        if done.returncode != 0:
            denied = needs_superuser(done.stderr)
            if denied is not None:
                detail = (
                    f"{name}: the backup needs superuser powers ({redact(denied)}); "
                    "a restore test restores as a non-superuser role"
                )
                return _check("restore", "fail", detail)
            lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
            error = redact(lines[-1] if lines else f"pg_restore exited {done.returncode}")
            return _check("restore", "fail", f"{name}: restore failed: {error}")
        tables = count_rows(url)
    finally:
        server.stop()
    total = sum(tables.values())
    return _check("restore", "ok", f"{name}: restored {len(tables)} tables, {total} rows", observed=tables)


def count_rows(url: str) -> dict[str, int]:
    """Exact row counts of every user table (``schema.table`` outside ``public``)."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(url) as conn:
        names = conn.execute(
            """select table_schema, table_name from information_schema.tables
               where table_type = 'BASE TABLE' and table_schema not in ('pg_catalog', 'information_schema')
               order by 1, 2"""
        ).fetchall()
        counts = {}
        for schema, table in names:
            row = conn.execute(
                sql.SQL("select count(*) from {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
            ).fetchone()
            counts[table if schema == "public" else f"{schema}.{table}"] = int(row[0]) if row else 0
    return counts


# -- work directories, and what killed runs left -------------------------------------------

#: A verification's work directory (downloads, the restore test's throwaway PostgreSQL) in the system
#: temp dir, and the marker in it naming the process that owns it (as drill work directories have).
WORKDIR_PREFIX = "opsflow-verify-"
WORKDIR_MARKER = "opsflow-verify.json"


def verification_root() -> Path:
    """Where verification work directories live (the system temp dir; ``TMPDIR`` moves it)."""
    return Path(tempfile.gettempdir())


@contextlib.contextmanager
def verification_workdir() -> Iterator[Path]:
    """A fresh work directory with its owner marker (host, pid, pid_started); removed afterwards. A run
    killed outright (SIGKILL) leaves it, and the restore test's server, to :func:`remove_restore_leftovers`."""
    workdir = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX, dir=verification_root())).resolve()
    try:
        (workdir / WORKDIR_MARKER).write_text(json.dumps(owner_marker()) + "\n")
        yield workdir
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def remove_restore_leftovers() -> list[str]:
    """Remove the work directories (and stop the restore tests' PostgreSQL servers) of verifications
    whose process is gone (killed outright); never one whose process still runs, nor one made on
    another host. Returns what was removed; says so in one WARNING line."""
    removed: list[str] = []
    problems: list[str] = []
    for marker in sorted(verification_root().glob(f"{WORKDIR_PREFIX}*/{WORKDIR_MARKER}")):
        workdir = marker.parent
        try:
            info = json.loads(marker.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(info, dict) or owner_alive(info) is not False:
            continue
        stopped = [pid.parent for pid in sorted(workdir.glob("*/*/postmaster.pid")) if stop_postmaster(pid.parent)]
        shutil.rmtree(workdir, ignore_errors=True)
        if workdir.exists():
            problems.append(f"could not delete {workdir}")
            continue
        server = ", stopped its restore-test PostgreSQL" if stopped else ""
        removed.append(f"{workdir} (its run, pid {info.get('pid')}, is gone{server})")
    if removed or problems:
        log.warning(
            "backup-verification: removed %d leftovers of killed runs: %s",
            len(removed),
            "; ".join(removed + problems),
        )
    return removed


# -- one object, one set ------------------------------------------------------------------


@dataclass
class ObjectVerification:
    """The deep checks of one object, as recorded in the ledger."""

    obj: StoredObject
    sha256: str | None
    checks: dict[str, Check] = field(default_factory=dict)

    @property
    def outcome(self) -> str:
        return worst(c.status for c in self.checks.values())


def expected_checksum(
    storage: BackupStorage, obj: StoredObject, head: StoredObject | None, mode: str
) -> tuple[str | None, str | None]:
    """The stored checksum to compare with and where it came from, per ``checksum`` mode."""
    if mode in ("auto", "s3") and head is not None and head.sha256:
        return head.sha256, "S3 ChecksumSHA256"
    if mode in ("auto", "sidecar") and not obj.is_directory and storage.exists(obj.key + SIDECAR_SUFFIX):
        with storage.open(obj.key + SIDECAR_SUFFIX) as stream:
            digest = parse_sidecar(stream.read(4096).decode("utf-8", "replace"))
        if digest is None:
            return "malformed", "sidecar"
        return digest, "sidecar"
    return None, None


def fetch_for_reading(storage: BackupStorage, obj: StoredObject, workdir: Path) -> tuple[Path, str | None]:
    """A local path to read ``obj`` from, and its sha256 (None for a directory-format dump).

    A file already on local disk is used in place and only hashed; anything else is
    downloaded once into ``workdir``, hashing on the way (the readers need a seekable file).
    """
    local = storage.local_path(obj.key)
    hasher = hashlib.sha256()
    if obj.is_directory:
        if local is None:  # only a filesystem storage holds directory-format dumps, and they are on disk
            raise PermanentFailure(f"{obj.key}: a directory-format dump can only be read on local disk")
        return local, None
    if local is not None:
        with storage.open(obj.key) as stream:
            hash_stream(stream, hasher)
        return local, hasher.hexdigest()
    # A fixed local name: an object's own name may be no file name at all (``..``, over 255 bytes).
    # The readers tell formats by content, not by name.
    path = workdir / "object"
    with storage.open(obj.key) as source, path.open("wb") as target:
        copy_stream(source, target, hasher)
    return path, hasher.hexdigest()


def verify_object(
    storage: BackupStorage, obj: StoredObject, backup: BackupSet, workdir: Path | None, restore: bool, is_s3: bool
) -> ObjectVerification:
    """Checksum, full read and (optionally) restore of one backup, reading it once. ``workdir`` is needed
    (not None) to download the object, extract a base backup or restore it; a local file is read in place."""
    head = storage.head(obj.key) if is_s3 else None
    local = storage.local_path(obj.key)
    if workdir is None and (local is None or restore or backup.format == "pg_basebackup"):
        raise ValueError(f"{obj.key}: verifying it needs a work directory")
    scratch = workdir if workdir is not None else Path(tempfile.gettempdir())  # never written: see above
    path, computed = fetch_for_reading(storage, obj, scratch)
    result = ObjectVerification(obj=obj, sha256=computed)
    if backup.checksum != "none":
        expected, source = expected_checksum(storage, obj, head, backup.checksum)
        result.checks["checksum"] = compare_checksum(obj.name, computed, expected, source, backup.checksum)
    readable = read_archive(path, backup.format, obj.name, scratch)
    if readable is not None:
        result.checks["readable"] = readable
    if restore and backup.format == "pg_dump" and (readable is None or readable.status == "ok"):
        result.checks["restore"] = restore_into_scratch(path, obj.name, scratch)
    if local is None:
        path.unlink(missing_ok=True)
    return result


def _needs_verification(obj: StoredObject, ledger: dict[str, Any] | None, now: datetime, reverify_after: float) -> bool:
    if ledger is None or ledger["size"] != obj.size or ledger["etag"] != obj.etag:
        return True
    return (now - ledger["verified_at"]).total_seconds() >= reverify_after


def _aggregate(name: str, per_object: list[tuple[str, Check]], fresh_count: int) -> Check | None:
    """One set-level check from each object's latest verdict: the worst one, naming the objects at fault."""
    if not per_object:
        return None
    status = worst(c.status for _, c in per_object)
    if status == "ok":
        detail = f"{len(per_object)} backups verified ({fresh_count} this run, the rest from the ledger)"
        return _check(name, "ok", detail, observed=len(per_object))
    bad = [c for _, c in per_object if c.status == status]
    detail = "; ".join(c.detail for c in bad[:3]) + (f" (+{len(bad) - 3} more)" if len(bad) > 3 else "")
    return _check(name, status, detail, observed=len(bad), expected=0)


@dataclass
class SetVerification:
    """A backup set's item, and the ledger rows of what this run verified."""

    item: Item
    ledger_rows: list[dict[str, Any]]


def verify_backup_set(
    backup: BackupSet, storage_settings: Storage, now: datetime, ledger: dict[str, dict[str, Any]]
) -> SetVerification:
    """Every check of one backup set. A storage that refuses access is a ``fail`` naming the reason."""
    storage = open_storage(storage_settings)
    is_s3 = storage_settings.type == "s3"
    where = f"{backup.storage}:{backup.prefix or '/'}"
    try:
        listed = backups_of(storage.list(backup.prefix))
    except PermanentFailure as exc:
        return SetVerification(Item(name=backup.name, checks=[_check("present", "fail", str(exc))]), [])
    # "Now" is the run's as-of: a backup written after it did not exist yet, for every check (SPEC §5).
    backups = backups_as_of(listed, now)
    checks = [check_present(backups, where, storage.skipped, later=len(listed) - len(backups))]
    metrics: dict[str, Any] = {"count": len(backups)}
    if not backups:
        return SetVerification(Item(name=backup.name, checks=checks, metrics=metrics), [])
    newest, previous = backups[-1], backups[:-1]
    age = round((now - newest.written_at).total_seconds())
    metrics.update(
        newest_key=newest.key, newest_taken_at=newest.written_at.isoformat(), newest_bytes=newest.size, age_seconds=age
    )
    checks += [
        check_fresh(newest, now, backup.max_age),
        check_size(newest, previous, backup.min_size, backup.size_drop),
    ]

    verdicts: dict[str, list[tuple[str, Check]]] = {name: [] for name in DEEP_CHECKS}
    rows: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        scratch: list[Path] = []  # the set's work directory, made when the first object needs one
        for obj in backups:
            earlier = ledger.get(obj.key)
            restore = backup.restore_test and obj is newest
            missing_restore = restore and earlier is not None and "restore" not in earlier["checks"]
            if (
                earlier is not None
                and not missing_restore
                and not _needs_verification(obj, earlier, now, backup.reverify_after)
            ):
                for name, stored in earlier["checks"].items():
                    if name in verdicts:
                        verdicts[name].append((obj.key, Check.model_validate(stored)))
                continue
            # Only a download, an extracted base backup or a restore test needs a work directory: a local
            # file is read in place (hundreds of small sets: no directory made and removed per object).
            workdir = None
            if restore or backup.format == "pg_basebackup" or storage.local_path(obj.key) is None:
                if not scratch:
                    scratch.append(stack.enter_context(verification_workdir()))
                workdir = scratch[0] / str(len(rows))
                workdir.mkdir()
            try:
                verified = verify_object(storage, obj, backup, workdir, restore=restore, is_s3=is_s3)
            except PermanentFailure as exc:
                verified = ObjectVerification(obj, None, {"readable": _check("readable", "fail", f"{obj.name}: {exc}")})
            except OSError as exc:  # this object's own problem (a local file it cannot become), not the set's
                detail = f"{obj.name}: could not be read locally: {exc.strerror or type(exc).__name__}"
                verified = ObjectVerification(obj, None, {"readable": _check("readable", "fail", detail)})
            finally:
                if workdir is not None:
                    shutil.rmtree(workdir, ignore_errors=True)
            for name, check in verified.checks.items():
                verdicts[name].append((obj.key, check))
            rows.append(
                {
                    "backup_set": backup.name,
                    "storage": backup.storage,
                    "key": obj.key,
                    "size": obj.size,
                    "etag": obj.etag,
                    "sha256": verified.sha256,
                    "written_at": obj.written_at,
                    "as_of": now,
                    "outcome": verified.outcome,
                    "checks": {n: c.model_dump(mode="json") for n, c in verified.checks.items()},
                }
            )

    for name in ("checksum", "readable"):
        aggregated = _aggregate(name, verdicts[name], sum(1 for r in rows if name in r["checks"]))
        if aggregated is not None:
            checks.append(aggregated)
    checks.append(check_retention(backups, now, backup.retention))
    if backup.require_encryption and is_s3:
        checks.append(check_encryption(storage.head(newest.key)))
    if backup.restore_test:
        restored = [c for key, c in verdicts["restore"] if key == newest.key]
        if restored:
            checks.append(restored[-1])
            if isinstance(restored[-1].observed, dict):
                metrics["tables"] = restored[-1].observed
        else:
            checks.append(_check("restore", "fail", f"{newest.name}: not restored: it is not readable"))
    return SetVerification(Item(name=backup.name, checks=checks, metrics=metrics), rows)


# -- tasks ----------------------------------------------------------------------------------


@task(**IO_RETRIES, cache_policy=NO_CACHE, task_run_name="verify[{backup.name}]")
def verify_backup_set_task(
    backup: BackupSet, storage_settings: Storage, now: datetime, store: OpsStore, flow_run_id: str | None
) -> Item | State[Item]:
    """Verify one set and append what it read to the ledger; Failed with the failing checks when it fails."""
    verification = verify_backup_set(backup, storage_settings, now, store.latest_verifications(backup.name))
    store.record_verifications([{**row, "flow_run_id": flow_run_id} for row in verification.ledger_rows])
    return item_state(verification.item)
