"""One drill per database: the Prefect global concurrency limit ``dr-drill-<db>`` (1 slot), created when
missing and held for the whole drill (:func:`drill_slot`); its task lives here too, as :func:`drill_slot` uses it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from prefect import task
from prefect.cache_policies import NO_CACHE

from opsflow.errors import RoutineIncomplete
from opsflow.units import format_duration
from tasks.drill.names import slot_name
from tasks.retry import IO_RETRIES

#: One drill per database at a time (a Prefect global concurrency limit of 1 per database).
#: A drill killed outright holds its slot until the lease expires: at most this long.
SLOT_LEASE_SECONDS = 60
#: How long a drill waits for the drill of the same database before it gives up.
SLOT_WAIT_SECONDS = 90


class DrillBusy(RoutineIncomplete):
    """Another drill of the same database holds the slot (exit 3)."""


@contextlib.contextmanager
def drill_slot(database: str, flow_run_id: str | None) -> Iterator[None]:
    """Hold the Prefect global concurrency slot ``dr-drill-<db>`` (limit 1) for the whole drill."""
    from prefect.client.schemas.objects import ConcurrencyLeaseHolder
    from prefect.concurrency._asyncio import AcquireConcurrencySlotTimeoutError
    from prefect.concurrency.sync import concurrency

    name = slot_name(database)
    ensure_slot_task(name)
    holder = ConcurrencyLeaseHolder(type="flow_run", id=flow_run_id) if flow_run_id else None
    stack = contextlib.ExitStack()
    try:
        stack.enter_context(
            concurrency(
                name,
                occupy=1,
                timeout_seconds=SLOT_WAIT_SECONDS,
                lease_duration=SLOT_LEASE_SECONDS,
                strict=True,
                holder=holder,
            )
        )
    except AcquireConcurrencySlotTimeoutError:
        raise DrillBusy(
            f"another drill of {database} is running (concurrency limit {name} busy for "
            f"{format_duration(SLOT_WAIT_SECONDS)}); try again when it has finished"
        ) from None
    with stack:
        yield


def ensure_slot(name: str) -> None:
    """Create the global concurrency limit ``name`` (1 slot) unless it exists."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            with contextlib.suppress(ObjectAlreadyExists):
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))


# -- task ------------------------------------------------------------------------------------------------


@task(**IO_RETRIES, cache_policy=NO_CACHE, task_run_name="concurrency-limit[{name}]")
def ensure_slot_task(name: str) -> None:
    ensure_slot(name)
