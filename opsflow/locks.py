"""Locks that die with their holder: PostgreSQL session advisory locks in the ops store.

A lock is held by one connection of its holder; PostgreSQL releases it the moment that connection ends. A
holder killed outright (SIGKILL, the OOM killer) frees it at once, since its kernel closes the socket; a
holder whose host vanishes frees it when the store's TCP keepalive gives up (set per session below: about
a minute). Nothing else has to expire it, wherever the Prefect API lives (a lease in the memory of a CLI's
temporary Prefect server outlives nobody's process and was never released: issue 13, item 4).

Who holds a lock is the holding connection's ``application_name`` (``pg_stat_activity``), so a refusal can
say who is in the way without a table to keep in step.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg

from opsflow.errors import RoutineIncomplete, StoreUnavailable, UsageError

CONNECT_TIMEOUT_SECONDS = 10
#: How often a waiting holder asks again.
POLL_SECONDS = 0.5
# Server-side keepalive of the holding connection: idle 30 s, then 3 probes 10 s apart.
_KEEPALIVE = {"tcp_keepalives_idle": "30", "tcp_keepalives_interval": "10", "tcp_keepalives_count": "3"}
_MAX_APPLICATION_NAME = 63

_TRY_LOCK = "select pg_try_advisory_lock(%s)"
_HOLDER = """select a.application_name, a.backend_start from pg_locks l join pg_stat_activity a using (pid)
             where l.locktype = 'advisory' and l.granted and l.objsubid = 1
               and l.classid = %s::bigint::oid and l.objid = %s::bigint::oid"""


class LockBusy(RoutineIncomplete):
    """Somebody else holds the lock (exit 3): ``holder`` says who, when the store can tell."""

    def __init__(self, message: str, holder: str | None) -> None:
        super().__init__(message)
        self.holder = holder


@dataclass(frozen=True)
class Lock:
    """One named lock: its 64-bit advisory key and the label its holder shows (``application_name``)."""

    name: str
    label: str

    @property
    def key(self) -> int:
        """A signed 64-bit key from the name (advisory locks are keyed by number; sha256: no collisions).

        >>> Lock("dr-drill-orders", "x").key == Lock("dr-drill-orders", "y").key
        True
        >>> Lock("dr-drill-orders", "x").key != Lock("dr-drill-billing", "x").key
        True
        """
        return int.from_bytes(hashlib.sha256(f"opsflow:{self.name}".encode()).digest()[:8], "big", signed=True)


def _connect(url: str, label: str) -> psycopg.Connection:
    """An autocommit connection that says who it is and notices a vanished peer within about a minute."""
    try:
        conn = psycopg.connect(
            url,
            autocommit=True,
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            application_name=label[:_MAX_APPLICATION_NAME],
            keepalives=1,
            keepalives_idle=30,
            keepalives_interval=10,
            keepalives_count=3,
        )
    except psycopg.ProgrammingError:
        raise UsageError("the ops store URL is not a valid PostgreSQL URL") from None
    except psycopg.OperationalError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StoreUnavailable(f"ops store unreachable: {first_line}") from None
    for setting, value in _KEEPALIVE.items():
        conn.execute("select set_config(%s, %s, false)", (setting, value))
    with contextlib.suppress(psycopg.Error):  # PostgreSQL 14+: an idle lock holder must not be timed out
        conn.execute("select set_config('idle_session_timeout', '0', false)")
    return conn


def _holder(conn: psycopg.Connection, key: int) -> str | None:
    unsigned = key & 0xFFFF_FFFF_FFFF_FFFF
    row = conn.execute(_HOLDER, (unsigned >> 32, unsigned & 0xFFFF_FFFF)).fetchone()
    if row is None:
        return None
    name, since = row
    return f"{name or 'a session without a name'}, since {since:%Y-%m-%d %H:%M:%S %Z}".strip()


def _acquire(conn: psycopg.Connection, key: int, wait_seconds: float) -> bool:
    deadline = time.monotonic() + wait_seconds
    while True:
        row = conn.execute(_TRY_LOCK, (key,)).fetchone()
        if row is not None and row[0]:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_SECONDS)


@contextlib.contextmanager
def held(url: str, lock: Lock, *, wait_seconds: float) -> Iterator[None]:
    """Hold ``lock`` (in the store at ``url``) for the ``with`` block, waiting up to ``wait_seconds`` for it.

    Raises :class:`LockBusy` (saying who holds it) when it is still taken, :class:`StoreUnavailable` when the
    store cannot be reached. The lock is released when the block ends, and if this process dies.
    """
    conn = _connect(url, lock.label)
    try:
        if not _acquire(conn, lock.key, wait_seconds):
            holder = _holder(conn, lock.key)
            raise LockBusy(f"lock {lock.name} is held by {holder or 'another session'}", holder)
        yield
    finally:
        conn.close()  # closing the session releases its advisory locks


@contextlib.contextmanager
def held_if_free(url: str, lock: Lock) -> Iterator[bool]:
    """Take ``lock`` if nobody holds it, without waiting: yields whether it is held for the block."""
    conn = _connect(url, lock.label)
    try:
        yield _acquire(conn, lock.key, 0)
    finally:
        conn.close()
