"""Errors the CLI turns into exit codes, so no expected failure ends in a traceback.

- :class:`UsageError` — bad usage, config or input: exit 2, the message's lines on stderr;
- :class:`RoutineIncomplete` — the routine as a whole could not complete: exit 3.
"""

from __future__ import annotations


class UsageError(Exception):
    """Bad usage, config or input (exit code 2). The message is what the user reads."""


class RoutineIncomplete(RuntimeError):
    """The routine as a whole could not complete (exit code 3), e.g. the ops store is unreachable."""


class StoreUnavailable(RoutineIncomplete):
    """The ops store cannot be reached or used; the URL is never part of the message."""
