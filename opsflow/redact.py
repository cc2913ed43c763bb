"""Keep secrets out of logs, artifacts, reports, exceptions and JSON — in one place.

Every secret value opsflow resolves (``opsflow.config.resolve_secret``) is
registered here, and the first registration installs a log-record factory that
redacts every record of the process — ours, Prefect's (including the handler
that ships logs to the UI) and libraries' — before any handler sees it.
Text that leaves by another road (artifacts, exception messages, payload
echoes) goes through :func:`redact`. Passwords in URLs (``scheme://user:pw@``)
are masked whether registered or not.

>>> register_secret("xoxb-123456-abcdef")
>>> redact("posting to https://hooks.example/xoxb-123456-abcdef failed")
'posting to https://hooks.example/*** failed'
>>> redact("postgresql://ops:hunter2@db/opsflow")
'postgresql://ops:***@db/opsflow'
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

MASK = "***"
# Shorter values would mask ordinary words; a real credential is never this short.
MIN_SECRET_LENGTH = 6
_URL_PASSWORD = re.compile(r"(?P<prefix>[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]*:)(?P<password>[^@\s/]+)@")

_lock = threading.Lock()
_secrets: tuple[str, ...] = ()
_installed = False


def register_secret(value: str | None) -> None:
    """Mask ``value`` wherever it appears from now on, in this process."""
    global _secrets
    if not value or len(value) < MIN_SECRET_LENGTH:
        return
    with _lock:
        if value in _secrets:
            return
        # Longest first, so a secret containing another is masked whole.
        _secrets = tuple(sorted((*_secrets, value), key=len, reverse=True))
    install_log_redaction()


def redact(text: str) -> str:
    """``text`` with every registered secret and every URL password replaced by ``***``."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return _URL_PASSWORD.sub(lambda m: m["prefix"] + MASK + "@", text)


def redact_data(value: Any) -> Any:
    """:func:`redact` applied to every string inside dicts, lists and tuples."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: redact_data(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact_data(item) for item in value)
    return value


EXCEPTION_ATTRIBUTE = "opsflow_exception"


def exception_of(record: logging.LogRecord) -> BaseException | None:
    """The exception a record was logged with, also after redaction moved its traceback to ``exc_text``."""
    if record.exc_info and record.exc_info[1] is not None:
        return record.exc_info[1]
    return getattr(record, EXCEPTION_ATTRIBUTE, None)


def install_log_redaction() -> None:
    """Wrap the log-record factory so every record is redacted at creation (idempotent)."""
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
    make_record = logging.getLogRecordFactory()

    def redacting_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is the logging module's to report
            return record
        record.msg, record.args = redact(message), None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            # Handlers that render exc_info themselves (rich tracebacks) must not see the original;
            # filters that judge a record by its exception's type still can (``exception_of``).
            setattr(record, EXCEPTION_ATTRIBUTE, record.exc_info[1])
            record.exc_info = None
        return record

    logging.setLogRecordFactory(redacting_factory)
