"""A local spool for probe results the ops store could not take (SPEC §7: never lost).

Rows are appended as JSON lines and fsync'd; the next run writes the spool
first and empties it only after the store has committed. Writing is idempotent
(keyed by service and instant), so a spool replayed twice writes nothing twice.
A probe run uses it so (the store is a server: not a doctest)::

    spool = ProbeSpool(home_dir() / "spool" / "probes.jsonl")
    spool.append(rows)                    # the store failed: keep the rows
    with spool.pending() as spooled:      # the next run: spooled rows first
        store.write_probe_results(spooled + new_rows)
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from opsflow.embedded import home_dir
from opsflow.history_csv import ProbeRow


class ProbeSpool:
    def __init__(self, path: Path) -> None:
        self.path = path

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with (self.path.parent / (self.path.name + ".lock")).open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def append(self, rows: Sequence[ProbeRow]) -> None:
        """Add rows durably (fsync) before returning."""
        if not rows:
            return
        with self._locked():
            _write_lines(self.path, [_line(row) for row in rows])

    @property
    def rejected_path(self) -> Path:
        """Where rows the store will never take are set aside (``probe_results.rejected.jsonl``)."""
        return self.path.with_name(self.path.name.removesuffix(".jsonl") + ".rejected.jsonl")

    def reject(self, rows: Sequence[tuple[ProbeRow, str]]) -> None:
        """Set ``(row, why)`` aside durably, beside the spool: the store refused these rows themselves
        (a value PostgreSQL will never take), so they must not block the rows after them."""
        if rows:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            _write_lines(self.rejected_path, [_line(row, rejected=why) for row, why in rows])

    @contextmanager
    def pending(self) -> Iterator[list[ProbeRow]]:
        """The spooled rows, under the lock; the spool is emptied when the block exits without error.

        A torn last line (a crash mid-write) is skipped.
        """
        with self._locked():
            rows = []
            if self.path.exists():
                for line in self.path.read_text(encoding="utf-8").splitlines():
                    try:
                        data = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    rows.append(ProbeRow(**{**data, "checked_at": datetime.fromisoformat(data["checked_at"])}))
            yield rows
            self.path.unlink(missing_ok=True)


def _line(row: ProbeRow, **extra: str) -> str:
    return json.dumps({**row._asdict(), "checked_at": row.checked_at.isoformat(), **extra}) + "\n"


def _write_lines(path: Path, lines: Sequence[str]) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.writelines(lines)
        handle.flush()
        os.fsync(handle.fileno())


def probe_spool() -> ProbeSpool:
    """The probe results' spool under ``$OPSFLOW_HOME`` (default ``./.opsflow``)."""
    return ProbeSpool(home_dir() / "spool" / "probe_results.jsonl")
