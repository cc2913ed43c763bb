"""What every routine's tasks share: a task run that found a problem ends Failed and says why.

A finding is a result, not an error (SPEC §1). A task that checked something
returns :func:`item_state` (or :func:`finding_state` for a batch): its value when
all is well (the task run completes), else a ``Failed`` state whose message names the failing checks
(``fresh: newest backup is 31h old, limit 26h``) and which carries what was found
in a :class:`Finding`. The task is not retried for it (``tasks.retry`` knows a
finding), no traceback is logged for it, and the flow reads the item back with
:func:`settle`. An exception that escapes a task after its retries is an
infrastructure failure: :func:`settle` hands it back for the flow to turn into an
``error`` item.

    @task(**IO_RETRIES, cache_policy=NO_CACHE)
    def verify_task(...) -> Item | State[Item]:
        return item_state(verify(...))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from prefect.exceptions import FailedRun
from prefect.futures import PrefectFuture
from prefect.states import Failed, State

from opsflow.redact import redact
from opsflow.results import STATUS_RANK, Item

T = TypeVar("T")

#: A state message stays short enough to read in the UI's run list.
MAX_MESSAGE_CHARS = 1000


class Finding(FailedRun):
    """What a task run found wrong, carried by its Failed state: ``payload`` is what the task produced
    (an :class:`Item`, or a batch's results). A ``FailedRun``, so Prefect treats it as a failed run's
    outcome and never as a crash."""

    def __init__(self, message: str, payload: Any) -> None:
        super().__init__(message)
        self.payload = payload

    def __reduce__(self) -> tuple[Any, ...]:  # results are pickled when persisted
        return (type(self), (str(self), self.payload))


def shorten(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``text`` cut to ``limit`` characters with an ellipsis.

    >>> shorten("abcdef", 4)
    'abc…'
    """
    return text if len(text) <= limit else text[: limit - 1] + "…"


def failing_checks(item: Item) -> list[str]:
    """``check: detail`` of each ``fail`` or ``error`` check of ``item``, worst first."""
    bad = [c for c in item.checks if STATUS_RANK[c.status] >= STATUS_RANK["fail"]]
    bad.sort(key=lambda c: -STATUS_RANK[c.status])
    return [f"{c.check}: {c.detail}" if c.detail else c.check for c in bad]


def finding_state(payload: T, problems: Sequence[str]) -> T | State[T]:
    """A task's return value: ``payload`` itself when there are no ``problems`` (the task run completes
    with it), else a ``Failed`` state with them as its message, carrying ``payload``."""
    if not problems:
        return payload
    message = shorten(redact("; ".join(problems)))
    return Failed(message=message, data=Finding(message, payload))


def item_state(item: Item) -> Item | State[Item]:
    """The task run's final state for one checked item: Failed with its failing checks, else Completed."""
    return finding_state(item, failing_checks(item))


def settle(future: PrefectFuture[Any]) -> tuple[Any, BaseException | None]:
    """Wait for a task run: ``(payload, None)`` when it completed or ended on a finding,
    ``(None, exception)`` when it failed for another reason (retries exhausted)."""
    future.wait()
    state = future.state
    if state.is_completed():
        return future.result(), None
    outcome = state.result(raise_on_failure=False)
    if isinstance(outcome, Finding):
        return outcome.payload, None
    if isinstance(outcome, BaseException):
        return None, outcome
    return None, FailedRun(state.message or f"task run ended {state.name}")
