"""Raw probe retention (``store.raw_probe_retention``): dropping old monthly partitions of
``opsflow.probe_results`` while keeping the SLA rollups, so old months' reports still work.

A partition is dropped only when its whole month ended before ``older_than`` and before the
previous month began (the current and previous month always stay raw), and only after every hour,
day and week it covers is present and complete in the rollups (built here with the rollup
functions of :mod:`opsflow.sla_store` when missing). One that cannot be completed (results of a
service neither configured nor rolled up, a rollup still missing) is kept and said in one warning
line. Each partition is dropped in a transaction of its own, under the rollup lock, together with
its row in ``opsflow.probe_retention``, which tells the report and the rollup refresh that the
month has no raw rows any more (see :mod:`opsflow.sla_store`).

    store.drop_raw_probe_partitions(datetime.now(UTC) - timedelta(days=90), services)  # Pruned(dropped=[...])
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import psycopg
from psycopg import sql

from opsflow import sla_store
from opsflow.errors import StoreUnavailable
from opsflow.redact import first_line

if TYPE_CHECKING:
    from opsflow.config import Config
    from opsflow.store import OpsStore

log = logging.getLogger(__name__)

_PARTITION_NAME = re.compile(r"^probe_results_(\d{4})_(\d{2})$")
#: How long a drop waits for readers of ``probe_results`` to finish before giving up (kept, warned).
LOCK_TIMEOUT = "30s"
#: How many names a warning line lists at most.
NAMED = 5

Connect = Callable[[], AbstractContextManager[psycopg.Connection]]


@dataclass(frozen=True)
class Partition:
    """One monthly partition of ``opsflow.probe_results``: ``[month, end)`` in UTC."""

    name: str
    month: datetime
    end: datetime


@dataclass
class Pruned:
    """What a prune did: the partitions ``dropped`` (with ``dry_run``: would drop), and those old
    enough but kept, with why (``refused``)."""

    older_than: datetime
    dry_run: bool = False
    dropped: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "older_than": self.older_than.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "dry_run": self.dry_run,
            "dropped": self.dropped,
            "refused": self.refused,
        }


def month_start(moment: datetime) -> datetime:
    """The start of the UTC month ``moment`` is in."""
    return sla_store.floor_day(moment).replace(day=1)


def next_month(month: datetime) -> datetime:
    """The start of the UTC month after the one starting at ``month``.

    >>> next_month(datetime(2026, 12, 1, tzinfo=UTC)).isoformat()
    '2027-01-01T00:00:00+00:00'
    """
    return (month + timedelta(days=32)).replace(day=1)


def cutoff(retention_seconds: float, now: datetime | None = None) -> datetime:
    """``now - retention``: partitions whose month ended before it are dropped."""
    return (now or datetime.now(UTC)) - timedelta(seconds=retention_seconds)


def raw_partitions(conn: psycopg.Connection) -> list[Partition]:
    """The monthly partitions of ``opsflow.probe_results`` (named ``probe_results_YYYY_MM`` by
    ``opsflow.ensure_probe_partition``), oldest first; any other partition is left alone."""
    rows = conn.execute(
        """select c.relname from pg_inherits i
           join pg_class c on c.oid = i.inhrelid
           where i.inhparent = 'opsflow.probe_results'::regclass order by 1"""
    ).fetchall()
    found = []
    for (name,) in rows:
        match = _PARTITION_NAME.match(name)
        if match:
            month = datetime(int(match[1]), int(match[2]), 1, tzinfo=UTC)
            found.append(Partition(name, month, next_month(month)))
    return found


def candidates(partitions: Sequence[Partition], older_than: datetime, now: datetime | None = None) -> list[Partition]:
    """The partitions whose month ended by ``older_than``, never the current or previous month of ``now``.

    >>> parts = [Partition(f"p{m}", datetime(2026, m, 1, tzinfo=UTC), next_month(datetime(2026, m, 1, tzinfo=UTC)))
    ...          for m in (8, 9, 10, 11)]
    >>> [p.name for p in candidates(parts, datetime(2026, 12, 1, tzinfo=UTC), datetime(2026, 11, 5, tzinfo=UTC))]
    ['p8', 'p9']
    """
    previous = month_start(month_start(now or datetime.now(UTC)) - timedelta(days=1))
    return [p for p in partitions if p.end <= older_than and p.end <= previous]


def prune(
    connect: Connect, services: Sequence[tuple[str, float]], older_than: datetime, dry_run: bool = False
) -> Pruned:
    """Drop the raw partitions :func:`candidates` names, each once its rollups are complete; ``services``
    are the configured ``(name, interval seconds)``. With ``dry_run``, only say which are old enough."""
    pruned = Pruned(older_than=older_than, dry_run=dry_run)
    with connect() as conn:
        old = candidates(raw_partitions(conn), older_than)
    for partition in old:
        if dry_run:
            pruned.dropped.append(partition.name)
            continue
        try:
            with connect() as conn:
                why = _drop_when_complete(conn, partition, dict(services))
        except psycopg.errors.LockNotAvailable:
            why = f"readers held it longer than {LOCK_TIMEOUT}; the next prune tries again"
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"ops store lost while pruning {partition.name}: {first_line(exc)}") from None
        except psycopg.Error as exc:  # rolled back: the partition and its rollups are as they were
            why = f"the ops store refused: {first_line(exc)}"
        if why is None:
            pruned.dropped.append(partition.name)
            log.info(
                "raw probe results of %s dropped (%s); its rollups are kept", f"{partition.month:%Y-%m}", partition.name
            )
        else:
            pruned.refused[partition.name] = why
            log.warning("raw probe partition %s kept: %s", partition.name, why)
    return pruned


def _drop_when_complete(conn: psycopg.Connection, partition: Partition, configured: dict[str, float]) -> str | None:
    """In ``conn``'s transaction, under the rollup lock: complete the rollups of the partition's month,
    then drop it and record it; or say why not (nothing dropped)."""
    sla_store.lock_rollups(conn)  # no refresh and no report in between: what was checked is what stays
    conn.execute(f"set local lock_timeout = '{LOCK_TIMEOUT}'")
    spans, unknown = _month_spans(conn, partition, configured)
    if unknown:
        listed = ", ".join(unknown[:NAMED]) + (f" and {len(unknown) - NAMED} more" if len(unknown) > NAMED else "")
        return (
            f"it holds results of services neither configured nor rolled up ({listed}): their rollups cannot be built"
        )
    whole = [(name, partition.month, partition.end, iv) for name, iv in spans]
    weeks = sla_store.plan_reads(whole).weeks
    # Twice: rebuilding missing hours drops the days and weeks over them, which the second pass rebuilds.
    for _ in range(2):
        if not sla_store.ensure_rollups(conn, sla_store.ReadPlan(weeks=weeks, days=whole, hours=whole)):
            break
    missing = [
        f"{level.table} of {span[0]}"
        for level, level_spans in ((sla_store.HOURLY, whole), (sla_store.DAILY, whole), (sla_store.WEEKLY, weeks))
        for span in sla_store.missing_rollups(conn, level, level_spans)
    ]
    if missing:
        return f"its rollups could not be completed ({', '.join(missing[:NAMED])})"
    conn.execute(
        """insert into opsflow.probe_retention (month, month_end, partition) values (%s, %s, %s)
           on conflict (month) do update set dropped_at = now(), partition = excluded.partition""",
        (partition.month, partition.end, partition.name),
    )
    conn.execute(sql.SQL("drop table opsflow.{}").format(sql.Identifier(partition.name)))
    return None


def _month_spans(
    conn: psycopg.Connection, partition: Partition, configured: dict[str, float]
) -> tuple[list[tuple[str, float]], list[str]]:
    """The services with results in ``partition`` with the interval their rollups are built with (the
    configured one; for a service no longer configured, the one its rollups of the month were built
    with), and those with neither."""
    # A loose index scan of the primary key (service, checked_at): one probe per service, not a full read.
    names = [
        row[0]
        for row in conn.execute(
            sql.SQL(
                """with recursive s(service) as (
                       (select service from opsflow.{part} order by service limit 1)
                       union all
                       select (select p.service from opsflow.{part} p where p.service > s.service
                               order by p.service limit 1)
                       from s where s.service is not null)
                   select service from s where service is not null"""
            ).format(part=sql.Identifier(partition.name))
        )
    ]
    built = dict(
        conn.execute(
            """select service, min(interval_s) from opsflow.probe_hourly
               where service = any(%s) and hour >= %s and hour < %s
               group by service having min(interval_s) = max(interval_s)""",
            (names, partition.month, partition.end),
        ).fetchall()
    )
    spans = [
        (name, configured.get(name) or float(built[name])) for name in names if name in configured or name in built
    ]
    return spans, [name for name in names if name not in configured and name not in built]


def prune_after_report(store: OpsStore, config: Config) -> None:
    """The daily ``sla-report``'s bookkeeping when ``store.raw_probe_retention`` is set: prune, and
    turn any failure into one WARNING line (it is never the run's outcome)."""
    retention = config.store.raw_probe_retention
    if retention is None:
        return
    try:
        services = [(s.name, s.interval) for s in config.services]
        store.drop_raw_probe_partitions(cutoff(retention), services)
    except Exception as exc:  # bookkeeping: the report is done and stored either way
        log.warning("raw probe retention skipped this time: %s", first_line(exc))
