"""Keep secrets out of logs, artifacts, reports, exceptions and JSON — in one place.

Every secret value opsflow resolves (``opsflow.config.resolve_secret``) is
registered here, and the first registration installs a log-record factory that
redacts every record of the process — ours, Prefect's (including the handler
that ships logs to the UI) and libraries' — before any handler sees it.
Text that leaves by another road (artifacts, exception messages, payload
echoes) goes through :func:`redact`. Passwords in URLs (``scheme://user:pw@``,
up to the last ``@`` before the host, so an unencoded ``@`` in it is no escape)
and ``password=`` parameters are masked whether registered or not; a URL's
password is registered in every spelling (:func:`register_url_secrets`).

>>> register_secret("xoxb-123456-abcdef")
>>> redact("posting to https://hooks.example/xoxb-123456-abcdef failed")
'posting to https://hooks.example/*** failed'
>>> redact("postgresql://ops:hunter2@db/opsflow")
'postgresql://ops:***@db/opsflow'
>>> redact("postgresql://ops:Hunter@2Secret@db/opsflow?sslmode=require&password=x%20y")
'postgresql://ops:***@db/opsflow?sslmode=require&password=***'
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any
from urllib.parse import unquote

MASK = "***"
# Shorter values would mask ordinary words; a real credential is never this short.
MIN_SECRET_LENGTH = 6
# Greedy up to the LAST "@" of the token: a password may hold "@", "/", anything but white space or '"'.
_URL_PASSWORD = re.compile(r"(?P<prefix>[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]*:)(?P<password>[^\s\"]+)@")
# ``password=`` in a URL's query or a libpq keyword string (``sslpassword=`` too), quoted or not.
_PASSWORD_PARAMETER = re.compile(
    r"(?P<prefix>password\s*=\s*)(?P<password>'(?:[^'\\]|\\.)*'?|[^&\s'\"]+)", re.IGNORECASE
)

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
    text = _URL_PASSWORD.sub(lambda m: m["prefix"] + MASK + "@", text)
    return _PASSWORD_PARAMETER.sub(lambda m: m["prefix"] + MASK, text)


def first_line(exc: BaseException) -> str:
    """An exception as one redacted line: its message's first line, else its class name."""
    text = str(exc).strip()
    return redact(text.splitlines()[0] if text else type(exc).__name__)


def url_passwords(url: str) -> list[str]:
    """Every spelling of the passwords ``url`` holds: its userinfo's (read up to the first
    ``@`` as libpq does, and up to the last as a person means it) and its ``password=``
    parameters, each as written and percent-decoded.

    >>> url_passwords("postgresql://ops:Hunter%40%zz@db/x?password=a%20b")
    ['Hunter%40%zz', 'Hunter@%zz', 'a%20b', 'a b']
    >>> url_passwords("postgresql://ops:Hunter@2Secret@db/x")
    ['Hunter@2Secret', 'Hunter']
    """
    found: list[str] = []
    _, separator, rest = url.partition("://")
    if separator and "@" in rest:
        head = rest.split("?", 1)[0].split("#", 1)[0]
        whole = head[: head.rfind("@")] if "@" in head else ""
        first = re.split(r"[@/]", rest, maxsplit=1)[0] if re.search(r"^[^/]*@", rest) else ""
        for userinfo in (whole, first):
            _, colon, password = userinfo.partition(":")
            if colon and password:
                found.append(password)
    found += [match["password"].strip("'") for match in _PASSWORD_PARAMETER.finditer(url)]
    spellings: list[str] = []
    for password in found:
        for spelling in (password, unquote(password)):
            if spelling and spelling not in spellings:
                spellings.append(spelling)
    return spellings


def register_url_secrets(url: str | None) -> None:
    """Register ``url`` and every spelling of every password in it (:func:`url_passwords`)."""
    if not url:
        return
    register_secret(url)
    for password in url_passwords(url):
        register_secret(password)


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
