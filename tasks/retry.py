"""The one retry policy for infrastructure calls (SPEC §7).

Prefect retries the task — at least 3 times, exponential backoff from 1 s, with
jitter — so the UI shows every attempt; the client libraries' own retry loops
are set to a single attempt where the clients are built. An error that cannot
change on retry (a 4xx other than 408/429, bad config, access denied) is raised
as :class:`PermanentFailure` and is not retried.

>>> from prefect import task
>>> @task(**IO_RETRIES, task_run_name="notify[{channel}]")
... def deliver(channel: str) -> None: ...
>>> deliver.retries
3
>>> [http_status_is_permanent(code) for code in (403, 404, 408, 429, 503)]
[True, True, False, False, False]
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

from prefect.tasks import exponential_backoff

# Re-exported: tasks raise them from here.
from opsflow.errors import PermanentFailure, TransientFailure, UsageError
from tasks.routine import Finding

__all__ = [
    "IO_RETRIES",
    "PermanentFailure",
    "TransientFailure",
    "http_status_is_permanent",
    "retry_unless_permanent",
    "with_retries",
]

RETRIES = 3
BACKOFF_SECONDS = 1.0
JITTER_FACTOR = 0.5

log = logging.getLogger(__name__)
T = TypeVar("T")


def retry_unless_permanent(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry everything except what cannot change — a
    :class:`PermanentFailure`, a :class:`UsageError`, and a finding (a failing check is a result)."""
    try:
        state.result()
    except (PermanentFailure, UsageError, Finding):
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


def with_retries(call: Callable[[], T], what: str, sleep: Callable[[float], None] = time.sleep) -> T:
    """``call()`` under the same policy, for bookkeeping that is plain code rather than a task run
    (opening the ops store, saving the result): each failed attempt is one WARNING line in the run's
    logs; what cannot change (:class:`PermanentFailure`, :class:`UsageError`) is raised at once."""
    attempt = 1
    while True:
        try:
            return call()
        except (PermanentFailure, UsageError):
            raise
        except Exception as exc:
            if attempt > RETRIES:
                raise
            delay = BACKOFF_SECONDS * 2 ** (attempt - 1) * (1 + random.uniform(-JITTER_FACTOR, JITTER_FACTOR))
            log.warning("%s: attempt %d of %d failed (%s); retrying in %.1fs", what, attempt, RETRIES + 1, exc, delay)
            sleep(delay)
            attempt += 1
