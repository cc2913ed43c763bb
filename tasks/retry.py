"""The one retry policy for infrastructure calls (SPEC §7).

Prefect retries the task — at least 3 times, exponential backoff from 1 s, with
jitter — so the UI shows every attempt; the client libraries' own retry loops
are set to a single attempt where the clients are built. An error that cannot
change on retry (a 4xx other than 408/429, bad config, access denied) is raised
as :class:`PermanentFailure` and is not retried.

>>> @task(**IO_RETRIES, task_run_name="notify[{channel}]")      # doctest: +SKIP
... def deliver(channel: str) -> None: ...
"""

from __future__ import annotations

from typing import Any

from prefect.tasks import exponential_backoff

RETRIES = 3
BACKOFF_SECONDS = 1.0
JITTER_FACTOR = 0.5


class PermanentFailure(Exception):
    """An error that retrying cannot change (4xx, bad config, access denied). Its message is user-facing."""


class TransientFailure(Exception):
    """An error that may go away (5xx, throttling, connection reset, time-out). Its message is user-facing."""


def retry_unless_permanent(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry everything except :class:`PermanentFailure`."""
    try:
        state.result()
    except PermanentFailure:
        return False
    except Exception:
        return True
    return True


IO_RETRIES: dict[str, Any] = {
    "retries": RETRIES,
    "retry_delay_seconds": exponential_backoff(backoff_factor=BACKOFF_SECONDS),
    "retry_jitter_factor": JITTER_FACTOR,
    "retry_condition_fn": retry_unless_permanent,
}


def http_status_is_permanent(status_code: int) -> bool:
    """4xx cannot change by retrying, except 408 (time-out) and 429 (throttled)."""
    return 400 <= status_code < 500 and status_code not in (408, 429)
