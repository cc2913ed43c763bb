"""The I/O handles of one routine run, built once from the config and handed to its work.

:meth:`Resources.from_config` builds the real ones: the ops store (connected and
migrated on first use, under the one retry policy), the probe spool and a work
directory under ``$OPSFLOW_HOME``, and the clock. A test hands a routine other
ones instead (``tests/fakes.py``: an in-memory store, a fixed clock) through
``Routine(resources=...)``. Backup storages are not here: each task that reads
one opens its own client, so a retried task starts from a fresh connection.

>>> from opsflow.config import Config
>>> resources = Resources.from_config(Config())
>>> resources.spool.path.name
'probe_results.jsonl'
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from opsflow.config import Config
from opsflow.embedded import home_dir
from opsflow.spool import ProbeSpool, probe_spool
from opsflow.store import OpsStore
from tasks.retry import with_retries


def system_clock() -> datetime:
    """Now, in UTC, to the second (results and ledgers are keyed by it)."""
    return datetime.now(UTC).replace(microsecond=0)


@dataclass
class Resources:
    """What a routine's work may touch besides its own task arguments."""

    open_store: Callable[[], Any]
    spool: ProbeSpool
    workdir: Path
    clock: Callable[[], datetime] = system_clock
    _store: Any = field(default=None, init=False, repr=False)

    @classmethod
    def from_config(cls, config: Config) -> Resources:
        home = home_dir()
        return cls(
            open_store=lambda: OpsStore.open(config),
            spool=probe_spool(),
            workdir=home / "work",
        )

    @property
    def store(self) -> OpsStore:
        """The ops store, opened once (retried; :class:`~opsflow.errors.StoreUnavailable` when it stays down)."""
        if self._store is None:
            self._store = with_retries(self.open_store, "open the ops store")
        return self._store  # type: ignore[no-any-return]

    def close(self) -> None:
        """Close what the run opened and keeps open between operations (the store's idle connections)."""
        close = getattr(self._store, "close", None)
        if callable(close):
            close()
