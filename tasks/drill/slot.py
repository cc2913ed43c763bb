"""One drill per database: a lock in the ops store (``dr-drill-<db>``), held for the whole drill.

The lock is a PostgreSQL advisory lock held by a connection of the drill's process (:mod:`opsflow.locks`):
a drill that ends, crashes or is killed outright frees it at once (a drill whose host vanishes, within about
a minute), wherever the Prefect API lives. ``--cleanup`` takes it too when it is free, which tells it that
no drill of the database runs anywhere.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator

from opsflow.locks import Lock, LockBusy, held, held_if_free
from opsflow.units import format_duration
from tasks.drill.names import slot_name

#: How long a drill waits for the drill of the same database before it gives up (exit 3).
SLOT_WAIT_SECONDS = 90


def drill_lock(database: str, what: str, flow_run_id: str | None = None) -> Lock:
    """The slot of ``database``, labelled with who holds it (``what``: a drill, a cleanup)."""
    run = f" run {flow_run_id[:8]}" if flow_run_id else ""
    return Lock(name=slot_name(database), label=f"opsflow {what} pid {os.getpid()}@{socket.gethostname()}{run}")


@contextlib.contextmanager
def drill_slot(database: str, flow_run_id: str | None, store_url: str) -> Iterator[None]:
    """Hold the slot of ``database`` for the whole drill; :class:`opsflow.locks.LockBusy` (exit 3) when
    another drill of it still holds it after :data:`SLOT_WAIT_SECONDS`."""
    lock = drill_lock(database, "dr-drill", flow_run_id)
    slot = contextlib.ExitStack()
    try:
        slot.enter_context(held(store_url, lock, wait_seconds=SLOT_WAIT_SECONDS))
    except LockBusy as busy:
        holder = f"; its slot {lock.name} is held by {busy.holder}" if busy.holder else ""
        raise LockBusy(
            f"another drill of {database} is running{holder}; waited {format_duration(SLOT_WAIT_SECONDS)}, "
            "try again when it has finished",
            busy.holder,
        ) from None
    with slot:
        yield


@contextlib.contextmanager
def slot_if_free(database: str, store_url: str) -> Iterator[bool]:
    """Take the slot of ``database`` if no drill of it is running; yields whether it is held."""
    with held_if_free(store_url, drill_lock(database, "drill cleanup")) as free:
        yield free
