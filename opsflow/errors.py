"""opsflow's one exception tree: what a caller can tell apart, and how each ends.

::

    OpsflowError
    ├── UsageError           bad usage, config or input: exit 2, the message on stderr
    ├── RoutineIncomplete    the routine as a whole could not complete: exit 3
    │   └── StoreUnavailable the ops store cannot be reached or used
    ├── PermanentFailure     an infrastructure call that retrying cannot change (4xx, access denied)
    └── TransientFailure     an infrastructure call that may succeed later (5xx, throttling, time-out)

Errors of client libraries (botocore, psycopg, httpx, smtplib) are translated into
these at the boundary that calls them, with a user-facing message that carries no
secret. A *finding* (a failing check) is not an exception at all: it is a result.
"""

from __future__ import annotations


class OpsflowError(Exception):
    """Base of every error opsflow raises on purpose; its message is what the user reads."""


class UsageError(OpsflowError):
    """Bad usage, config or input (exit code 2). The message is what the user reads."""


class RoutineIncomplete(OpsflowError):
    """The routine as a whole could not complete (exit code 3), e.g. the ops store is unreachable."""


class StoreUnavailable(RoutineIncomplete):
    """The ops store cannot be reached or used; the URL is never part of the message."""


class PermanentFailure(OpsflowError):
    """An error that retrying cannot change (4xx, bad config, access denied). Never retried."""


class TransientFailure(OpsflowError):
    """An error that may go away (5xx, throttling, connection reset, time-out). Retried."""
