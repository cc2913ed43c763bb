"""Where opsflow's log records go: into the run's logs in the Prefect UI, and a quiet terminal.

- :func:`send_logs_to_runs` — opsflow's loggers (``opsflow``, ``flows``, ``tasks``...) reach the
  logs of the flow or task run they are emitted in, through Prefect's API log handler;
- :func:`keep_findings_out_of_engine_errors` — Prefect's worker path re-raises a run's Failed
  state at its end and logs it as "Engine execution exited with unexpected exception" with a
  ``FailedRun`` traceback (SPEC §1). That one record is dropped for a failed run's outcome; a
  real crash (any other exception) still logs its traceback;
- :func:`quiet_terminal` — for ``opsflow run``: one line per record on stderr, no tracebacks,
  none of Prefect's per-run chatter ("Finished in state Completed()").

Prefect is imported inside the functions: loading this module costs nothing.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from opsflow.redact import exception_of, redact

#: The project's loggers (module ``__name__`` loggers of each layer).
PROJECT_LOGGERS = ("opsflow", "flows", "tasks", "reports", "deployments")
#: Marks a record that states a check's finding (the terminal shows findings in its table instead).
REASON = "opsflow_reason"
ENGINE_EXIT_MESSAGE = "Engine execution exited with unexpected exception"


class RunLogBridge(logging.Handler):
    """Hands a record to Prefect's API log handler when it is emitted inside a flow or task run."""

    def __init__(self) -> None:
        super().__init__()
        self._api: logging.Handler | None = None

    def emit(self, record: logging.LogRecord) -> None:
        from prefect.context import FlowRunContext, TaskRunContext

        if FlowRunContext.get() is None and TaskRunContext.get() is None:
            return  # outside a run there are no run logs to join
        if self._api is None:
            from prefect.logging.handlers import APILogHandler

            self._api = APILogHandler()
        self._api.handle(record)


def send_logs_to_runs() -> None:
    """Let the project's INFO records and above reach the run's logs. Idempotent."""
    for name in PROJECT_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(h, RunLogBridge) for h in logger.handlers):
            logger.addHandler(RunLogBridge())
        if logger.level == logging.NOTSET or logger.level > logging.INFO:
            logger.setLevel(logging.INFO)


class FailedRunOutcomeFilter(logging.Filter):
    """Drops the engine's record of re-raising a failed run's own outcome (a ``FailedRun``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg != ENGINE_EXIT_MESSAGE:
            return True
        from prefect.exceptions import FailedRun

        return not isinstance(exception_of(record), FailedRun)


def keep_findings_out_of_engine_errors() -> None:
    """Install :class:`FailedRunOutcomeFilter` on Prefect's flow-run logger. Idempotent."""
    logger = logging.getLogger("prefect.flow_runs")
    if not any(isinstance(f, FailedRunOutcomeFilter) for f in logger.filters):
        logger.addFilter(FailedRunOutcomeFilter())


class OneLineFormatter(logging.Formatter):
    """``LEVEL name: message`` on one line; an exception is named, its traceback left out."""

    def format(self, record: logging.LogRecord) -> str:
        message = " ".join(record.getMessage().split())
        exc = exception_of(record)
        if exc is not None and str(exc) not in message:
            message += f" ({type(exc).__name__}: {redact(' '.join(str(exc).split()))})"
        return f"{record.levelname} {record.name}: {message}"


class TerminalFilter(logging.Filter):
    """What ``opsflow run`` shows on stderr: the project's phase lines and warnings, Prefect's
    warnings and errors — not Prefect's INFO chatter, its state lines, or findings (the table has them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, REASON, False):
            return False
        if record.name.startswith("prefect"):
            return record.levelno >= logging.WARNING and not str(record.msg).startswith("Finished in state")
        return True


class TerminalHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """``opsflow run``'s stderr: :class:`OneLineFormatter` lines through :class:`TerminalFilter`,
    written to whatever ``sys.stderr`` is when a record comes (never a stream closed since)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(OneLineFormatter())
        self.addFilter(TerminalFilter())

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass  # always the current stderr


def quiet_terminal() -> None:
    """Give the root logger one :class:`TerminalHandler` on the current stderr in place of its console
    handlers (Prefect's, or a ``basicConfig`` one). Call it after Prefect configured logging."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        # Console handlers only (an earlier call's included): not a capturing handler of a test harness.
        console = type(handler) in (logging.StreamHandler, TerminalHandler)
        if console or type(handler).__name__ == "PrefectConsoleHandler":
            root.removeHandler(handler)
    root.addHandler(TerminalHandler())


def reason_extra() -> dict[str, Any]:
    """``extra=`` for a log call that states a finding."""
    return {REASON: True}
