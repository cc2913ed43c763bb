"""``opsflow.yaml``: the pydantic models of every key (SPEC section 4) and the loader.

Usage::

    from opsflow.config import ConfigError, default_config_path, load_config

    path = default_config_path(args.config, os.environ)  # --config, $OPSFLOW_CONFIG, ./opsflow.yaml
    try:
        config = load_config(path)  # or load_config(path, missing_ok=True) -> Config.empty()
    except ConfigError as exc:
        print(exc, file=sys.stderr)  # one "FILE:LINE: dotted.key.path: message" per line
        raise SystemExit(2)

    for backup in config.backups:
        backup.max_age           # float seconds (``26h`` -> 93600.0)
        backup.min_size          # int bytes (``1MB`` -> 1000000)
    url = resolve_secret(config.notifications.slack.webhook_url)  # loads a Prefect Secret block

Loading never imports prefect and never loads a secret: ``{secret: NAME}`` is
only checked for being a well-formed Prefect block name; ``resolve_secret``
loads it at run time. ``${VAR}`` / ``${VAR:-default}`` in any string value is
replaced from the environment before validation (``$${`` is a literal
``${``). Every problem in the file is reported, each at its own line.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import os
import re
import types
from collections.abc import Callable, Iterator, Mapping
from datetime import date, datetime
from email.utils import parseaddr
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PlainValidator,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from opsflow.redact import register_secret, url_passwords
from opsflow.units import (
    format_duration,
    format_size,
    parse_duration,
    parse_percent,
    parse_size,
)

__all__ = [
    "BackupSet",
    "CapacityMetric",
    "CapacitySource",
    "Certificate",
    "Config",
    "ConfigError",
    "ConfigProblem",
    "DailyDigest",
    "Database",
    "DatedItem",
    "Digests",
    "Drill",
    "Duration",
    "EmailNotification",
    "EscalationTier",
    "Expect",
    "Expectation",
    "Expiry",
    "FilesystemSource",
    "FilesystemStorage",
    "Freshness",
    "ImportSource",
    "MaintenanceWindow",
    "MonthlyReport",
    "Notifications",
    "PagerDutyNotification",
    "Percent",
    "PositiveDuration",
    "PostgresSource",
    "PostgresUrl",
    "PrometheusSource",
    "QualitySuite",
    "Reports",
    "Retention",
    "RowCountChange",
    "S3Source",
    "S3Storage",
    "SchemaCheck",
    "SecretCache",
    "SecretRef",
    "SecretValue",
    "Service",
    "Size",
    "SlackNotification",
    "Slo",
    "SqlCheck",
    "Storage",
    "Store",
    "TableCheck",
    "Threshold",
    "WebhookNotification",
    "WeeklyDigest",
    "aresolve_secret",
    "capacity_unit_problem",
    "default_config_path",
    "expectation_problems",
    "load_config",
    "parse_config",
    "resolve_headers",
    "resolve_secret",
]

CONFIG_ENV_VAR = "OPSFLOW_CONFIG"
DEFAULT_CONFIG_FILE = "opsflow.yaml"
# Validation context key set by the loader: file-only strictness, cross-references checked apart.
_LOADER_CONTEXT = "opsflow.config.loader"


# --------------------------------------------------------------------------- problems


@dataclasses.dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong with a config file, printed as ``FILE:LINE: path: message``."""

    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(Exception):
    """A config that must not be used; ``problems`` lists everything wrong with it."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = list(problems)
        super().__init__(self.problems)  # args round-trip through pickle (Prefect ships exceptions)

    def __str__(self) -> str:
        return "\n".join(str(problem) for problem in self.problems)


class _ItemLevelError(ValueError):
    """Raised by a field validator for a problem that belongs to the enclosing item.

    A model-level validator runs only when every field is valid, so a rule
    across fields ("url or tcp") is checked by the validator of the last field
    instead, to be reported together with the item's other problems; the
    loader then reports it at the item, not at that field.
    """


# --------------------------------------------------------------------------- value types


def _describe(value: object) -> str:
    """How a bad input is quoted in a message."""
    if isinstance(value, str):
        return repr(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return str(value)


def _to_duration(value: object) -> float:
    return parse_duration(value)  # type: ignore[arg-type]  # it reports non-strings itself


def _to_size(value: object) -> int:
    return parse_size(value)  # type: ignore[arg-type]


def _from_loader(info: ValidationInfo) -> bool:
    return isinstance(info.context, Mapping) and bool(info.context.get(_LOADER_CONTEXT))


def _to_percent(value: object, info: ValidationInfo) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        if _from_loader(info):
            # In a config file, 0.999 or 99.9? Refuse to guess what an availability target meant.
            raise ValueError(f"expected a percentage like 80% or 99.9%, got {_describe(value)} (add the % sign)")
        if not 0 <= value <= 100:  # model_dump() round trip, values built in code
            raise ValueError(f"expected a percentage between 0% and 100%, got {value}")
        return float(value)
    return parse_percent(value)  # type: ignore[arg-type]


def _positive_duration(seconds: float) -> float:
    if seconds <= 0:
        raise ValueError("must be longer than 0s")
    return seconds


#: Seconds, written ``90s``, ``15m``, ``6h``, ``30d`` (or a bare number of seconds).
Duration = Annotated[float, BeforeValidator(_to_duration)]
#: A Duration that must be > 0 (intervals, limits).
PositiveDuration = Annotated[float, BeforeValidator(_to_duration), AfterValidator(_positive_duration)]
#: Bytes, written ``512KB``, ``1.5GB``, ``2TB``, ``1GiB`` (or a bare number of bytes).
Size = Annotated[int, BeforeValidator(_to_size)]
#: Percent in 0..100, written ``80%``.
Percent = Annotated[float, BeforeValidator(_to_percent)]


def _not_longer_than_warn_within(fail_within: float, info: ValidationInfo) -> float:
    warn_within = info.data.get("warn_within")  # absent when invalid: no second error
    if warn_within is not None and fail_within > warn_within:
        raise ValueError(
            f"fail_within ({format_duration(fail_within)}) must not exceed warn_within ({format_duration(warn_within)})"
        )
    return fail_within


#: The ``fail_within`` of a warn/fail pair; declare it after the ``warn_within`` it must not exceed.
FailWithin = Annotated[float, BeforeValidator(_to_duration), AfterValidator(_not_longer_than_warn_within)]


def _non_empty(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


#: A name other keys refer to (backup set, service, storage, ...).
Name = Annotated[str, AfterValidator(_non_empty)]
NonEmptyStr = Annotated[str, AfterValidator(_non_empty)]

_BLOCK_NAME_RE = re.compile(r"[a-z0-9-]+")


class _Model(BaseModel):
    """Base of every config model: unknown keys are errors, values are read-only."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _null_means_default(cls, data: Any) -> Any:
        # ``backups:`` with nothing after it (every entry commented out) is
        # YAML null; for a list/mapping/section key that means "use the default".
        if isinstance(data, dict):
            fields = _container_fields(cls)
            if any(key in fields and value is None for key, value in data.items()):
                data = {k: v for k, v in data.items() if not (k in fields and v is None)}
        return data


@functools.cache
def _container_fields(model: type[BaseModel]) -> frozenset[str]:
    """Fields with a default whose type is a list, dict or model (and not nullable)."""
    names = set()
    for name, field in model.model_fields.items():
        if field.is_required():
            continue
        annotation = field.annotation
        if get_origin(annotation) in (list, dict) or (
            isinstance(annotation, type) and issubclass(annotation, BaseModel)
        ):
            names.add(name)
    return frozenset(names)


class SecretRef(_Model):
    """``{secret: NAME}``: a Prefect ``Secret`` block, loaded at run time only."""

    secret: str

    @field_validator("secret")
    @classmethod
    def _block_name(cls, name: str) -> str:
        if not _BLOCK_NAME_RE.fullmatch(name):
            raise ValueError(f"a secret must name a Prefect block (lowercase letters, digits and dashes), got {name!r}")
        return name

    def __str__(self) -> str:
        return f"{{secret: {self.secret}}}"


def _secret_tag(value: Any) -> str:
    return "secret" if isinstance(value, Mapping | SecretRef) else "plain"


#: A credential: a plain string (often from ``${VAR}``) or ``{secret: NAME}``.
SecretValue = Annotated[
    Annotated[str, Tag("plain")] | Annotated[SecretRef, Tag("secret")],
    Discriminator(_secret_tag),
]


def _redact_url(text: str) -> str:
    """Hide the password of a URL or a ``password=`` keyword before quoting it."""
    text = re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://[^/@:?#]*):[^/?#]*@", r"\1:***@", text)  # to the last "@"
    return re.sub(r"(password\s*=\s*)\S+", r"\1***", text)


def _check_postgres_url(value: str | SecretRef) -> str | SecretRef:
    if isinstance(value, SecretRef):
        return value
    if not value.startswith(("postgresql://", "postgres://")):
        raise ValueError(f"expected a PostgreSQL URL like postgresql://user@host:5432/db, got {_redact_url(value)!r}")
    # psycopg costs ~0.3 s to import; only pay it when a URL is present.
    from psycopg import Error as PsycopgError
    from psycopg.conninfo import conninfo_to_dict

    authority = re.split(r"[/?#]", value.partition("://")[2], maxsplit=1)[0]
    if authority.count("@") > 1:  # libpq takes the first "@": the password's tail would be the host
        raise ValueError("not a valid PostgreSQL URL: an '@' in its user name or password must be written %40")
    try:
        params = conninfo_to_dict(value)
    except PsycopgError as exc:
        message = str(exc).strip()
        if message.startswith("invalid percent-encoded token"):  # the token may be a password's
            message = re.sub(r'"[^"]*"', '"..."', message)
        for password in [_url_password(value) or "", *url_passwords(value)]:
            if password:
                message = message.replace(password, "***")
        raise ValueError(f"not a valid PostgreSQL URL: {message}") from None
    for port in str(params.get("port", "")).split(","):
        if port and not port.isdigit():
            raise ValueError(f"not a valid PostgreSQL URL: port {port!r} is not a number")
    return value


def _url_password(url: str) -> str | None:
    try:
        return urlsplit(url).password
    except ValueError:
        return None


def _check_optional_postgres_url(value: str | SecretRef) -> str | SecretRef:
    return value if value == "" else _check_postgres_url(value)


def _check_drill_target(value: str | SecretRef) -> str | SecretRef:
    if value == "embedded":
        return value
    if isinstance(value, str) and not value.startswith(("postgresql://", "postgres://")):
        raise ValueError(
            f"expected 'embedded' or a PostgreSQL URL like postgresql://user@host:5432/db, got {_redact_url(value)!r}"
        )
    return _check_postgres_url(value)


def _empty_if_null(value: Any) -> Any:
    return "" if value is None else value


#: A libpq URL (``postgresql://`` or ``postgres://``, Unix-socket forms too) or a secret.
PostgresUrl = Annotated[SecretValue, AfterValidator(_check_postgres_url)]


def _is_http_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _check_http_url(value: str) -> str:
    if not _is_http_url(value):
        raise ValueError(f"expected an http:// or https:// URL, got {_redact_url(value)!r}")
    return value


def _check_secret_http_url(value: str | SecretRef) -> str | SecretRef:
    # The URL itself is the credential (Slack, webhooks): never quote it.
    if isinstance(value, str) and not _is_http_url(value):
        raise ValueError("expected an http:// or https:// URL (or {secret: NAME})")
    return value


def _is_https(value: object) -> bool:
    """Whether ``value`` is an https:// URL (of a service whose certificate is checked)."""
    return isinstance(value, str) and _is_http_url(value) and urlsplit(value).scheme == "https"


def _check_https_url(value: str) -> str:
    if not _is_https(value):
        raise ValueError(f"expected an https:// URL, got {_redact_url(value)!r}")
    return value


HttpUrl = Annotated[str, AfterValidator(_check_http_url)]
HttpsUrl = Annotated[str, AfterValidator(_check_https_url)]
SecretHttpUrl = Annotated[SecretValue, AfterValidator(_check_secret_http_url)]

_EMAIL_RE = re.compile(r"[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+")


def _check_email(value: str) -> str:
    _, address = parseaddr(value)
    if not _EMAIL_RE.fullmatch(address):
        raise ValueError(f"expected an email address like ops@example.com, got {value!r}")
    return value


#: ``ops@example.com`` or ``Ops Team <ops@example.com>``.
EmailAddress = Annotated[str, AfterValidator(_check_email)]

_HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _check_http_method(value: str) -> str:
    method = value.upper()
    if method not in _HTTP_METHODS:
        raise ValueError(f"expected an HTTP method ({', '.join(_HTTP_METHODS)}), got {value!r}")
    return method


HttpMethod = Annotated[str, AfterValidator(_check_http_method)]


def _check_tcp_address(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):  # [::1]:5432
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"expected host:port like db.example.com:5432, got {value!r}")
    return value


TcpAddress = Annotated[str, AfterValidator(_check_tcp_address)]


def _check_aware(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"a time needs a UTC offset, like 2026-11-10T02:00:00Z, got {value.isoformat()!r}")
    return value


#: An ISO 8601 instant with an offset; naive times are refused, not guessed.
AwareTime = Annotated[datetime, AfterValidator(_check_aware)]

_DATE_HINT = "expected a date like 2027-03-31"


def _not_a_number(value: object) -> object:
    # pydantic would read 20270331 as a Unix timestamp: a number is never a date here.
    if isinstance(value, int | float):
        raise ValueError(f"{_DATE_HINT}, got {_describe(value)}")
    return value


def _check_year(value: date) -> date:
    if not 1970 <= value.year <= 2200:  # SPEC section 7: times outside 1970-2200 are bad input
        raise ValueError(f"expected a date between 1970 and 2200, got {value.isoformat()!r}")
    return value


#: A calendar day, ``YYYY-MM-DD``; an impossible day such as 2027-02-30 is refused.
ConfigDate = Annotated[date, BeforeValidator(_not_a_number), AfterValidator(_check_year)]

_CLOCK_RE = re.compile(r"(\d{1,2}):(\d{2})")


def _to_clock_time(value: object) -> str:
    match = _CLOCK_RE.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None or int(match[1]) > 23 or int(match[2]) > 59:
        raise ValueError(f'expected a time of day from 00:00 to 23:59 like "08:00", got {_describe(value)}')
    return f"{int(match[1]):02d}:{match[2]}"


#: A time of day ``HH:MM`` in the config's timezone, normalized to two-digit hours.
ClockTime = Annotated[str, BeforeValidator(_to_clock_time)]

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def _to_weekday(value: object) -> str:
    day = value.strip().lower() if isinstance(value, str) else None
    if day not in WEEKDAYS:
        raise ValueError(f"expected a day of the week (monday to sunday), got {_describe(value)}")
    return day


#: ``monday`` .. ``sunday``, any case, normalized to lowercase.
Weekday = Annotated[str, BeforeValidator(_to_weekday)]


def _scalar(value: Any) -> str | int | float | bool | None:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise ValueError(f"expected a single value (number, string, true/false or null), got {_describe(value)}")


Scalar = Annotated[str | int | float | bool | None, PlainValidator(_scalar)]


# --------------------------------------------------------------------------- sections


#: The shortest ``store.raw_probe_retention``: the current and the previous month must stay raw
#: (a month's report is final only after it ends; the daily report reads yesterday's raw rows).
MIN_RAW_PROBE_RETENTION = 35 * 86400.0


def _long_enough_retention(seconds: float | None) -> float | None:
    if seconds is not None and seconds < MIN_RAW_PROBE_RETENTION:
        raise ValueError(
            f"must be at least {format_duration(MIN_RAW_PROBE_RETENTION)} (the current and previous month stay raw),"
            f" got {format_duration(seconds)}"
        )
    return seconds


class Store(_Model):
    """The ops store. An empty ``url`` means an embedded PostgreSQL under ``.opsflow/``."""

    url: Annotated[SecretValue, BeforeValidator(_empty_if_null), AfterValidator(_check_optional_postgres_url)] = ""
    raw_probe_retention: Annotated[Duration | None, AfterValidator(_long_enough_retention)] = Field(
        default=None,
        description="drop raw probe results' monthly partitions whose month ended longer ago than this "
        "(e.g. 90d, at least 35d), keeping the SLA rollups so old reports still work; null keeps raw rows forever",
    )

    @property
    def embedded(self) -> bool:
        return self.url == ""


class S3Storage(_Model):
    type: Literal["s3"] = "s3"
    bucket: NonEmptyStr
    prefix: str = ""
    endpoint_url: HttpUrl | None = None
    region: str = "us-east-1"
    access_key_id: SecretValue | None = None
    # Declared last so its validator sees access_key_id; runs even when unset.
    secret_access_key: SecretValue | None = Field(default=None, validate_default=True)

    @field_validator("secret_access_key")
    @classmethod
    def _keys_in_pairs(cls, value: Any, info: ValidationInfo) -> Any:
        key_id = info.data.get("access_key_id", value)  # absent when invalid: no second error
        if (key_id is None) != (value is None):
            raise _ItemLevelError(
                "set both access_key_id and secret_access_key, or neither (to use the default AWS credential chain)"
            )
        return value


class FilesystemStorage(_Model):
    type: Literal["filesystem"] = "filesystem"
    path: NonEmptyStr


#: A named place where backups live, chosen by ``type``.
Storage = Annotated[S3Storage | FilesystemStorage, Field(discriminator="type")]


class Retention(_Model):
    days: int = Field(default=30, ge=1)
    min_count: int = Field(default=1, ge=0)
    max_gap: PositiveDuration | None = None


class BackupSet(_Model):
    """Every object under ``storage``/``prefix`` is one backup of this set."""

    name: Name
    storage: Name
    prefix: str
    format: Literal["pg_dump", "pg_basebackup", "sql_gz", "file"] = "pg_dump"
    max_age: PositiveDuration = 26 * 3600.0
    min_size: Size = 0
    size_drop: Percent = 50.0
    retention: Retention = Field(default_factory=Retention)
    checksum: Literal["auto", "s3", "sidecar", "none"] = "auto"
    require_encryption: bool = False
    restore_test: bool = False
    reverify_after: PositiveDuration = 7 * 86400.0


def _empty_mapping_if_null(value: Any) -> Any:
    return {} if value is None else value


class TableCheck(_Model):
    min_rows: int = Field(default=0, ge=0)


class SqlCheck(_Model):
    """A query run on the restored database; its single value must equal ``expect``."""

    name: Name
    query: NonEmptyStr
    expect: Scalar


class Drill(_Model):
    target: Annotated[SecretValue, AfterValidator(_check_drill_target)] = "embedded"
    rto_target: PositiveDuration = 30 * 60.0
    rpo_target: PositiveDuration = 26 * 3600.0
    jobs: int = Field(default=2, ge=1)
    tables: dict[str, Annotated[TableCheck, BeforeValidator(_empty_mapping_if_null)]] = Field(default_factory=dict)
    sql: list[SqlCheck] = Field(default_factory=list)

    @property
    def embedded(self) -> bool:
        return self.target == "embedded"


class Database(_Model):
    """A DR drill target: restores the newest backup of ``backup`` and checks it."""

    name: Name
    backup: Name
    source_url: PostgresUrl | None = None
    drill: Drill = Field(default_factory=Drill)


class Expect(_Model):
    status: list[Annotated[int, Field(ge=100, le=599)]] = Field(default_factory=lambda: [200])
    body_contains: str | None = None
    max_latency: PositiveDuration | None = None


class Slo(_Model):
    availability: Percent = 99.9
    latency_p95: PositiveDuration | None = None
    # An SLA measured on less of the period than this is a `coverage` warn, not a clean ok.
    min_coverage: Percent = 90.0


class Service(_Model):
    """An uptime probe: an HTTP(S) ``url`` or a ``tcp`` ``host:port``, exactly one."""

    name: Name
    url: HttpUrl | None = None
    # Validated even when absent so that "neither url nor tcp" is reported
    # together with the service's other problems.
    tcp: TcpAddress | None = Field(default=None, validate_default=True)
    method: HttpMethod = "GET"
    interval: PositiveDuration = 60.0
    timeout: PositiveDuration = 5.0
    expect: Expect = Field(default_factory=Expect)
    tls_expiry_warn: Duration = 30 * 86400.0
    failure_threshold: int = Field(default=3, ge=1)
    slo: Slo = Field(default_factory=Slo)
    headers: dict[str, SecretValue] = Field(default_factory=dict)

    @field_validator("tcp")
    @classmethod
    def _url_or_tcp(cls, tcp: str | None, info: ValidationInfo) -> str | None:
        if "url" not in info.data:  # url itself is invalid and already reported
            return tcp
        url = info.data["url"]
        if url is None and tcp is None:
            raise _ItemLevelError("set either url (HTTP) or tcp (host:port)")
        if url is not None and tcp is not None:
            raise _ItemLevelError("set either url or tcp, not both")
        return tcp

    @field_validator("timeout")
    @classmethod
    def _timeout_below_interval(cls, timeout: float, info: ValidationInfo) -> float:
        interval = info.data.get("interval")
        if interval is not None and timeout >= interval:
            raise ValueError(
                f"timeout ({format_duration(timeout)}) must be shorter than interval ({format_duration(interval)})"
            )
        return timeout

    @property
    def target(self) -> str:
        """What is probed, for display: the URL or ``tcp://host:port``."""
        return self.url if self.url is not None else f"tcp://{self.tcp}"


def _at_least_one(names: list[str]) -> list[str]:
    if not names:
        raise ValueError("list at least one service")
    return names


class MaintenanceWindow(_Model):
    """Time taken out of the SLA of ``services``: ``[start, end)``."""

    services: Annotated[list[Name], AfterValidator(_at_least_one)]
    start: AwareTime
    end: AwareTime
    reason: str = ""

    @field_validator("end")
    @classmethod
    def _end_after_start(cls, end: datetime, info: ValidationInfo) -> datetime:
        start = info.data.get("start")
        if start is not None and end <= start:
            raise ValueError(f"end ({end.isoformat()}) must be after start ({start.isoformat()})")
        return end


class PostgresSource(_Model):
    type: Literal["postgres"] = "postgres"
    url: PostgresUrl
    measure: Literal["database_size", "connections"] = "database_size"


class FilesystemSource(_Model):
    type: Literal["filesystem"] = "filesystem"
    path: NonEmptyStr


class S3Source(_Model):
    type: Literal["s3"] = "s3"
    storage: Name
    prefix: str = ""
    measure: Literal["bytes", "objects"] = Field(
        default="bytes",
        description="bytes: the total size of the objects under the prefix (a size threshold); "
        "objects: how many there are (a plain-number threshold)",
    )


class PrometheusSource(_Model):
    type: Literal["prometheus"] = "prometheus"
    url: HttpUrl
    query: NonEmptyStr


class ImportSource(_Model):
    """History fed by ``opsflow capacity import``; nothing is collected."""

    type: Literal["import"] = "import"


CapacitySource = Annotated[
    PostgresSource | FilesystemSource | S3Source | PrometheusSource | ImportSource,
    Field(discriminator="type"),
]

_SIZE_WITH_UNIT_RE = re.compile(r"\s*(?:\d+(?:\.\d+)?|\.\d+)\s*[A-Za-z]+\s*")
_PLAIN_NUMBER_RE = re.compile(r"\s*[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?\s*")


class Threshold(_Model):
    """A capacity limit: ``500GB`` (bytes), ``80%`` (percent) or ``0.8`` (number)."""

    value: float
    unit: Literal["bytes", "percent", "number"]

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, data: Any) -> Any:
        if isinstance(data, Mapping):  # already {value, unit}, e.g. from model_dump()
            return data
        return cls.parse(data).model_dump()

    @classmethod
    def parse(cls, raw: object) -> Threshold:
        """``"500GB"`` -> bytes, ``"80%"`` -> percent, ``0.8`` / ``"5000"`` -> number."""
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            return cls.model_construct(value=float(raw), unit="number")
        if isinstance(raw, str):
            if raw.strip().endswith("%"):
                return cls.model_construct(value=parse_percent(raw), unit="percent")
            if _SIZE_WITH_UNIT_RE.fullmatch(raw):
                return cls.model_construct(value=float(parse_size(raw)), unit="bytes")
            if _PLAIN_NUMBER_RE.fullmatch(raw):
                return cls.model_construct(value=float(raw), unit="number")
        raise ValueError(
            f"expected a size like 500GB, a percentage like 80% or a number like 0.8, got {_describe(raw)}"
        )

    def __str__(self) -> str:
        if self.unit == "bytes":
            return format_size(self.value)
        if self.unit == "percent":
            return f"{self.value:g}%"
        return f"{self.value:g}"


# The threshold units each collected source measures in, with the advice given on a mismatch. Sources
# missing here (prometheus, import) measure in whatever the query or the imported history says: any unit fits.
_CAPACITY_UNITS: dict[tuple[str, str], tuple[tuple[str, ...], str]] = {
    ("postgres", "database_size"): (("bytes",), "postgres database_size is a size: use a size like 500GB"),
    ("postgres", "connections"): (
        ("percent", "number"),
        "postgres connections is a share of max_connections: use a percentage like 80% or a fraction like 0.8",
    ),
    ("filesystem", ""): (
        ("bytes", "percent"),
        "filesystem usage is a size or a percentage: use a size like 500GB or a percentage like 80%",
    ),
    ("s3", "bytes"): (("bytes",), "s3 bytes is a size: use a size like 2TB (or measure: objects to count objects)"),
    ("s3", "objects"): (("number",), "s3 objects is a count: use a plain number like 100000"),
}
_UNIT_NAMES = {"bytes": "a size", "percent": "a percentage", "number": "a plain number"}


def capacity_unit_problem(source_type: str, measure: str | None, threshold: Threshold) -> str | None:
    """Why ``threshold`` does not fit what the source measures, or None when it does.

    ``measure`` None means the source's default. Used by config validation and,
    for configs assembled in code, again by the collector before it samples.

    >>> capacity_unit_problem("postgres", None, Threshold.parse("80%"))
    'threshold 80% is a percentage, but postgres database_size is a size: use a size like 500GB'
    >>> capacity_unit_problem("prometheus", None, Threshold.parse("80%")) is None
    True
    """
    default = {"postgres": "database_size", "s3": "bytes"}.get(source_type, "")
    rule = _CAPACITY_UNITS.get((source_type, measure if measure is not None else default))
    if rule is None or threshold.unit in rule[0]:
        return None
    return f"threshold {threshold} is {_UNIT_NAMES[threshold.unit]}, but {rule[1]}"


class CapacityMetric(_Model):
    metric: Name
    source: CapacitySource
    threshold: Threshold
    warn_within: Duration = 30 * 86400.0
    fail_within: FailWithin = 7 * 86400.0
    window: PositiveDuration = 90 * 86400.0


class Expectation(_Model):
    """One Great Expectations expectation, written ``- expect_x: {kwarg: value}``."""

    name: str
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _from_single_key(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            raise ValueError(
                "expected a mapping like {expect_column_values_to_not_be_null: {column: user_id}}, "
                f"got {_describe(data)}"
            )
        if "name" in data and not any(str(key).startswith("expect_") for key in data):
            return data  # the normalized form, e.g. from model_dump()
        if len(data) != 1:
            keys = ", ".join(str(key) for key in data) or "none"
            raise ValueError(f"an expectation is a mapping with exactly one key, its name; got keys: {keys}")
        ((name, kwargs),) = data.items()
        if not isinstance(name, str) or not name.startswith("expect_"):
            raise ValueError(f"expectation names start with expect_, got {_describe(name)}")
        if kwargs is None:
            kwargs = {}
        if not isinstance(kwargs, Mapping):
            raise ValueError(
                f"the arguments of {name} must be a mapping like {{column: user_id}}, got {_describe(kwargs)}"
            )
        return {"name": name, "kwargs": kwargs}

    @property
    def column(self) -> str | None:
        column = self.kwargs.get("column")
        return column if isinstance(column, str) else None

    @property
    def check_name(self) -> str:
        """``EXPECTATION:COLUMN``, or just ``EXPECTATION`` without a column."""
        return f"{self.name}:{self.column}" if self.column else self.name


class Freshness(_Model):
    column: NonEmptyStr
    max_age: PositiveDuration


class RowCountChange(_Model):
    """The ``row_count_change`` check: the row count against the median of this table's last runs."""

    max_change: Percent = Field(description="a change (up or down) larger than this fails")
    runs: int = Field(default=7, ge=1, description="how many of the last stored runs the median is taken over")


class SchemaCheck(_Model):
    """The ``schema`` check: a column dropped or retyped since the last run fails."""

    allow_new_columns: bool = Field(default=True, description="false: a column added since the last run fails too")


class QualitySuite(_Model):
    """Data-quality checks of one table."""

    # ``schema`` would shadow BaseModel.schema(): the field has another name, the key stays ``schema``.
    model_config = ConfigDict(populate_by_name=True)

    name: Name
    url: PostgresUrl
    table: NonEmptyStr
    expectations: list[Expectation] = Field(default_factory=list)
    freshness: Freshness | None = None
    row_count_change: RowCountChange | None = None
    schema_check: SchemaCheck | None = Field(default=None, alias="schema")


class Certificate(_Model):
    """A certificate checked by ``expiry-check``: read from a TLS endpoint (``tls`` or ``url``) or a PEM ``file``."""

    name: Name
    tls: TcpAddress | None = None
    url: HttpsUrl | None = None
    # Validated even when absent so that "none of tls, url, file" is reported
    # together with the entry's other problems.
    file: NonEmptyStr | None = Field(default=None, validate_default=True)
    server_name: NonEmptyStr | None = Field(default=None, description="SNI name to send, when not the host's own")
    warn_within: Duration | None = Field(default=None, description="overrides expiry.warn_within")
    fail_within: Duration | None = Field(default=None, description="overrides expiry.fail_within")

    @field_validator("file")
    @classmethod
    def _exactly_one_source(cls, file: str | None, info: ValidationInfo) -> str | None:
        if "tls" not in info.data or "url" not in info.data:  # invalid and already reported
            return file
        sources = {"tls": info.data["tls"], "url": info.data["url"], "file": file}
        given = [key for key, value in sources.items() if value is not None]
        if not given:
            raise _ItemLevelError("set one of tls (host:port), url (https://...) or file (a PEM file)")
        if len(given) > 1:
            raise _ItemLevelError(f"set only one of tls, url or file, got {' and '.join(given)}")
        return file

    @field_validator("server_name")
    @classmethod
    def _endpoint_only(cls, server_name: str | None, info: ValidationInfo) -> str | None:
        if server_name is not None and info.data.get("file") is not None:
            raise ValueError("server_name applies to tls and url, not to a file")
        return server_name


class DatedItem(_Model):
    """Something dated without an endpoint (a license, domain, contract, API key); expires at the end of its day."""

    name: Name
    expires: ConfigDate
    owner: NonEmptyStr | None = Field(default=None, description="who renews it: an email address or free text")
    kind: NonEmptyStr | None = Field(default=None, description="free text: license, domain, contract, ...")
    warn_within: Duration | None = Field(default=None, description="overrides expiry.warn_within")
    fail_within: Duration | None = Field(default=None, description="overrides expiry.fail_within")


class Expiry(_Model):
    """Things that expire. Every HTTPS service's certificate is checked too, as an item named after the service."""

    warn_within: Duration = 30 * 86400.0
    fail_within: FailWithin = 7 * 86400.0
    certificates: list[Certificate] = Field(default_factory=list)
    items: list[DatedItem] = Field(default_factory=list)

    def limits(self, entry: Certificate | DatedItem | None = None) -> tuple[float, float]:
        """``(warn_within, fail_within)`` seconds for ``entry``: its overrides, else these
        (``None``: an HTTPS service's certificate, which has no overrides)."""
        warn_within = entry.warn_within if entry is not None and entry.warn_within is not None else self.warn_within
        fail_within = entry.fail_within if entry is not None and entry.fail_within is not None else self.fail_within
        return warn_within, fail_within


class SlackNotification(_Model):
    webhook_url: SecretHttpUrl
    channel: str | None = None


class PagerDutyNotification(_Model):
    routing_key: SecretValue
    events_url: HttpUrl | None = None  # overrides the Events API v2 address


class WebhookNotification(_Model):
    url: SecretHttpUrl | None = None
    headers: dict[str, SecretValue] = Field(default_factory=dict)

    @property
    def configured(self) -> bool:
        return self.url is not None


class EmailNotification(_Model):
    smtp_host: NonEmptyStr
    smtp_port: int = Field(default=587, ge=1, le=65535)
    starttls: bool = True
    username: str | None = None
    password: SecretValue | None = None
    sender: EmailAddress
    to: list[EmailAddress] = Field(default_factory=list)


class EscalationTier(_Model):
    """Who is told, once, about a fail/error still open ``after`` its trigger."""

    after: PositiveDuration
    to: list[EmailAddress] = Field(default_factory=list)
    # Validated even when absent: a tier that tells no one is reported with its other problems.
    slack_mention: NonEmptyStr | None = Field(default=None, validate_default=True, description='e.g. "@ops-lead"')

    @field_validator("slack_mention")
    @classmethod
    def _tells_someone(cls, slack_mention: str | None, info: ValidationInfo) -> str | None:
        if slack_mention is None and info.data.get("to") == []:  # absent when invalid: no second error
            raise _ItemLevelError("a tier must tell someone: set to (email addresses), slack_mention, or both")
        return slack_mention


class Notifications(_Model):
    slack: SlackNotification | None = None
    pagerduty: PagerDutyNotification | None = None
    webhook: WebhookNotification | None = None
    email: EmailNotification | None = None
    escalate: list[EscalationTier] = Field(default_factory=list)  # in increasing order of after
    page_interval: PositiveDuration = 3600.0  # a flapping item pages at most once per this

    @property
    def channels(self) -> list[str]:
        """Names of the configured channels (a webhook without url is not configured)."""
        configured = {
            "slack": self.slack is not None,
            "pagerduty": self.pagerduty is not None,
            "webhook": self.webhook is not None and self.webhook.configured,
            "email": self.email is not None,
        }
        return [name for name, present in configured.items() if present]


class MonthlyReport(_Model):
    to: list[EmailAddress] = Field(default_factory=list)
    out_dir: str = "reports/out"
    storage: Name | None = None  # also upload HTML and PDF here
    slack: bool = False


class Reports(_Model):
    monthly: MonthlyReport | None = None


class DailyDigest(_Model):
    to: list[EmailAddress] = Field(default_factory=list)
    slack: bool = False
    at: ClockTime = Field(default="08:00", description="HH:MM in the config's timezone")

    @property
    def hour_minute(self) -> tuple[int, int]:
        """``at`` as ``(hour, minute)``, e.g. for a cron schedule."""
        hour, minute = self.at.split(":")
        return int(hour), int(minute)


class WeeklyDigest(DailyDigest):
    day: Weekday = "monday"
    at: ClockTime = Field(default="08:30", description="HH:MM in the config's timezone")

    @property
    def weekday(self) -> int:
        """``day`` as 0 (Monday) .. 6 (Sunday), as ``datetime.weekday()`` counts."""
        return WEEKDAYS.index(self.day)


class Digests(_Model):
    """Where ``ops-digest`` delivers: ``weekly`` for a week's digest, ``daily`` otherwise."""

    daily: DailyDigest | None = None
    weekly: WeeklyDigest | None = None


class Config(_Model):
    """The whole ``opsflow.yaml``; every section is optional."""

    timezone: str = "UTC"
    store: Store = Field(default_factory=Store)
    storages: dict[str, Storage] = Field(default_factory=dict)
    backups: list[BackupSet] = Field(default_factory=list)
    databases: list[Database] = Field(default_factory=list)
    services: list[Service] = Field(default_factory=list)
    maintenance: list[MaintenanceWindow] = Field(default_factory=list)
    capacity: list[CapacityMetric] = Field(default_factory=list)
    quality: list[QualitySuite] = Field(default_factory=list)
    expiry: Expiry = Field(default_factory=Expiry)
    notifications: Notifications = Field(default_factory=Notifications)
    digests: Digests = Field(default_factory=Digests)
    reports: Reports = Field(default_factory=Reports)

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {name!r}; use an IANA name like UTC or Europe/Berlin") from None
        return name

    @model_validator(mode="after")
    def _cross_references(self, info: ValidationInfo) -> Config:
        # The loader checks these itself on the raw data, each at its own line,
        # also when other keys are invalid; this covers configs built in code.
        if _from_loader(info):
            return self
        problems = _semantic_problems(self.model_dump())
        if problems:
            raise ValueError("; ".join(f"{_dotted(path)}: {message}" for path, message in problems))
        return self

    @classmethod
    def empty(cls) -> Config:
        """The config used when there is no file: embedded store, nothing to check."""
        return cls()

    @property
    def tzinfo(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def get_storage(self, name: str) -> S3Storage | FilesystemStorage:
        try:
            return self.storages[name]
        except KeyError:
            raise KeyError(f"unknown storage {name!r}") from None

    def get_backup(self, name: str) -> BackupSet:
        return _by_name(self.backups, "name", name, "backup set")

    def get_database(self, name: str) -> Database:
        return _by_name(self.databases, "name", name, "database")

    def get_service(self, name: str) -> Service:
        return _by_name(self.services, "name", name, "service")

    def get_metric(self, metric: str) -> CapacityMetric:
        return _by_name(self.capacity, "metric", metric, "capacity metric")

    def get_quality(self, name: str) -> QualitySuite:
        return _by_name(self.quality, "name", name, "quality suite")

    def get_certificate(self, name: str) -> Certificate:
        return _by_name(self.expiry.certificates, "name", name, "certificate")

    def get_dated_item(self, name: str) -> DatedItem:
        return _by_name(self.expiry.items, "name", name, "dated item")

    @property
    def https_services(self) -> list[Service]:
        """Services whose certificate ``expiry-check`` also reads, as an item named after the service."""
        return [service for service in self.services if _is_https(service.url)]

    def maintenance_for(self, service: str) -> list[MaintenanceWindow]:
        return [window for window in self.maintenance if service in window.services]


_Item = TypeVar("_Item", bound=BaseModel)


def _by_name(items: list[_Item], key: str, name: str, label: str) -> _Item:
    for item in items:
        if getattr(item, key) == name:
            return item
    known = ", ".join(dict.fromkeys(str(getattr(item, key)) for item in items)) or "none"
    raise KeyError(f"unknown {label} {name!r} (defined: {known})")


# --------------------------------------------------------------------------- secrets


def resolve_secret(value: SecretValue | None) -> str | None:
    """The plain value of a credential: strings pass through, ``{secret: NAME}``
    loads the Prefect ``Secret`` block NAME (needs a Prefect API). Never call
    this at deploy or check time. Either way the value is registered with
    :mod:`opsflow.redact`, so it is masked in every log line from then on."""
    if value is None or isinstance(value, str):
        register_secret(value)
        return value
    from prefect.blocks.system import Secret  # lazy: loading a config must not import prefect

    block = Secret.load(value.secret, _sync=True)  # type: ignore[call-arg]
    text = _secret_text(block)
    register_secret(text)
    return text


async def aresolve_secret(value: SecretValue | None) -> str | None:
    """``resolve_secret`` for async code."""
    if value is None or isinstance(value, str):
        register_secret(value)
        return value
    from prefect.blocks.system import Secret

    block = await Secret.aload(value.secret)
    text = _secret_text(block)
    register_secret(text)
    return text


def _secret_text(block: Any) -> str:
    # Secret.get() json-decodes strings ("1.50" -> 1.5); credentials must stay verbatim.
    raw = block.value.get_secret_value()
    return raw if isinstance(raw, str) else json.dumps(raw)


_CREDENTIAL_HEADER = re.compile(r"authorization|token|secret|key|cookie|password", re.IGNORECASE)


class SecretCache:
    """Secret blocks loaded at most once each, for as long as this object lives: make one per run (before
    its loops), so a run loads each block once and the next run sees a rotated secret.

    >>> SecretCache().resolve("plain") == "plain"
    True
    """

    def __init__(self) -> None:
        self._values: dict[str, str | None] = {}

    def resolve(self, value: SecretValue | None) -> str | None:
        """:func:`resolve_secret`, loading each ``{secret: NAME}`` block once."""
        if not isinstance(value, SecretRef):
            return resolve_secret(value)
        if value.secret not in self._values:
            self._values[value.secret] = resolve_secret(value)
        return self._values[value.secret]

    def __repr__(self) -> str:  # never the values
        return f"SecretCache({sorted(self._values)})"


def resolve_headers(headers: Mapping[str, SecretValue], secrets: SecretCache | None = None) -> dict[str, str]:
    """HTTP headers with secret values resolved (``Authorization: {secret: api-token}``), through
    ``secrets`` when given (each block loaded once for all the headers of a run).

    Values from secret blocks and of credential-looking headers are registered
    for redaction; an ordinary ``Accept: application/json`` is not."""
    resolve = secrets.resolve if secrets is not None else resolve_secret
    resolved: dict[str, str] = {}
    for name, value in headers.items():
        if isinstance(value, str) and not _CREDENTIAL_HEADER.search(name):
            resolved[name] = value
        else:
            resolved[name] = resolve(value) or ""
    return resolved


# --------------------------------------------------------------------------- loading


def default_config_path(cli_value: str | None, environ: Mapping[str, str] | None = None) -> Path:
    """``--config PATH``, else ``$OPSFLOW_CONFIG``, else ``./opsflow.yaml``."""
    environ = os.environ if environ is None else environ
    if cli_value:
        return Path(cli_value)
    if environ.get(CONFIG_ENV_VAR):
        return Path(environ[CONFIG_ENV_VAR])
    return Path(DEFAULT_CONFIG_FILE)


def load_config(
    path: str | os.PathLike[str],
    environ: Mapping[str, str] | None = None,
    *,
    missing_ok: bool = False,
) -> Config:
    """Read, interpolate and validate a config file; raise ``ConfigError`` listing
    every problem. With ``missing_ok``, a missing file gives ``Config.empty()``."""
    file = os.fspath(path)
    try:
        text = Path(file).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        if missing_ok:
            return Config.empty()
        raise ConfigError([ConfigProblem(file, None, "", "file not found")]) from None
    except IsADirectoryError:
        raise ConfigError([ConfigProblem(file, None, "", "is a directory, not a file")]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([ConfigProblem(file, None, "", f"not UTF-8 text (bad byte at offset {exc.start})")]) from None
    except OSError as exc:
        raise ConfigError([ConfigProblem(file, None, "", f"cannot read: {exc.strerror or exc}")]) from None
    # The same text and environment parse to the same (frozen) config: a process that reads it twice (the
    # CLI, then the flow run it starts) parses it once; at 10,000 services a parse is seconds.
    key = (file, text, tuple(sorted((os.environ if environ is None else environ).items())))
    known = _LOADED.get(key)
    if known is None:
        known = parse_config(text, file=file, environ=environ)
        if len(_LOADED) >= _LOADED_MAX:
            _LOADED.pop(next(iter(_LOADED)))
        _LOADED[key] = known
    return known


#: Configs loaded by this process, by (file, text, environment): at most this many kept.
_LOADED: dict[tuple[str, str, tuple[tuple[str, str], ...]], Config] = {}
_LOADED_MAX = 4


def parse_config(text: str, *, file: str = "<config>", environ: Mapping[str, str] | None = None) -> Config:
    """``load_config`` for text in hand; ``file`` is only used in messages."""
    environ = os.environ if environ is None else environ
    problems: list[ConfigProblem] = []
    parsed = _read_yaml(text, file, problems)
    if parsed is None:
        raise ConfigError(problems)
    lines, data = parsed
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            [
                ConfigProblem(
                    file,
                    lines[()],
                    "",
                    "the top level must be a mapping of sections (timezone, store, storages, "
                    f"backups, ...), got {_describe(data)}",
                )
            ]
        )

    found: list[tuple[tuple[str | int, ...], str]] = []  # (path, message)
    unresolved: list[tuple[str | int, ...]] = []
    data = _interpolate_tree(data, environ, (), found, unresolved)

    config: Config | None = None
    try:
        config = Config.model_validate(data, context={_LOADER_CONTEXT: True})
    except ValidationError as exc:
        for error in exc.errors():
            path, message = _pydantic_problem(error)
            # A value left empty by an unset ${VAR} was already reported.
            if not any(path[: len(bad)] == bad for bad in unresolved):
                found.append((path, message))
    found.extend(_semantic_problems(data))

    problems.extend(ConfigProblem(file, _line_of(lines, path), _dotted(path), message) for path, message in found)
    if problems:
        raise ConfigError(_ordered(problems))
    if config is None:  # a failed validation always reports a problem above; never hand out an unchecked config
        raise ConfigError([ConfigProblem(file, None, "", "the config did not validate")])
    return config


def _ordered(problems: list[ConfigProblem]) -> list[ConfigProblem]:
    """File order, each problem once."""
    unique = list(dict.fromkeys(problems))
    return sorted(unique, key=lambda problem: problem.line or 0)


def _dotted(path: tuple[str | int, ...]) -> str:
    return ".".join(str(part) for part in path)


class _ConfigLoader(yaml.SafeLoader):
    """SafeLoader that leaves two YAML 1.1 surprises as text for validation to judge.

    An impossible date (``2027-02-30``) would raise a bare ValueError from
    PyYAML, a traceback; as text it is reported at its key. A base-60 number
    (``at: 12:30`` is 750 in YAML 1.1) stays ``"12:30"``.
    """

    def construct_yaml_timestamp(self, node: yaml.ScalarNode) -> Any:
        try:
            return yaml.constructor.SafeConstructor.construct_yaml_timestamp(self, node)
        except ValueError:
            return self.construct_scalar(node)

    def construct_yaml_int(self, node: yaml.ScalarNode) -> Any:
        text = self.construct_scalar(node)
        return text if ":" in text else yaml.constructor.SafeConstructor.construct_yaml_int(self, node)

    def construct_yaml_float(self, node: yaml.ScalarNode) -> Any:
        text = self.construct_scalar(node)
        return text if ":" in text else yaml.constructor.SafeConstructor.construct_yaml_float(self, node)


_ConfigLoader.add_constructor("tag:yaml.org,2002:timestamp", _ConfigLoader.construct_yaml_timestamp)
_ConfigLoader.add_constructor("tag:yaml.org,2002:int", _ConfigLoader.construct_yaml_int)
_ConfigLoader.add_constructor("tag:yaml.org,2002:float", _ConfigLoader.construct_yaml_float)

_FastConfigLoader: type | None = None
if getattr(yaml, "__with_libyaml__", False):

    class _FastConfigLoader(yaml.CSafeLoader):  # type: ignore[no-redef]
        """:class:`_ConfigLoader` on libyaml's parser: ~10x faster on a config of thousands of services,
        which every probe run (each shard too) reads. The same nodes and marks; a YAML error is read again
        by the pure-Python parser, whose messages are the ones reported."""

        construct_yaml_timestamp = _ConfigLoader.construct_yaml_timestamp
        construct_yaml_int = _ConfigLoader.construct_yaml_int
        construct_yaml_float = _ConfigLoader.construct_yaml_float

    _FastConfigLoader.add_constructor("tag:yaml.org,2002:timestamp", _ConfigLoader.construct_yaml_timestamp)
    _FastConfigLoader.add_constructor("tag:yaml.org,2002:int", _ConfigLoader.construct_yaml_int)
    _FastConfigLoader.add_constructor("tag:yaml.org,2002:float", _ConfigLoader.construct_yaml_float)


def _read_yaml(
    text: str, file: str, problems: list[ConfigProblem]
) -> tuple[dict[tuple[str | int, ...], int], Any] | None:
    """Line numbers by key path, and the plain data, from one parse.

    Appends to ``problems``; returns None when the YAML cannot be read at all.
    """
    if _FastConfigLoader is not None:
        found: list[ConfigProblem] = []
        try:
            parsed = _read_yaml_with(_FastConfigLoader, text, file, found)
        except yaml.YAMLError:
            pass  # read again below: the pure-Python parser's messages are the ones reported
        else:
            problems.extend(found)
            return parsed
    return _read_yaml_with(_ConfigLoader, text, file, problems)


def _read_yaml_with(
    loader_class: type, text: str, file: str, problems: list[ConfigProblem]
) -> tuple[dict[tuple[str | int, ...], int], Any] | None:
    """:func:`_read_yaml` with ``loader_class``; the libyaml one raises its YAML errors instead."""
    loader = loader_class(text)
    try:
        root = loader.get_single_node()
        size_problem = _expansion_problem(root) if root is not None else None
        if size_problem:  # an alias bomb: refused before anything walks the expanded tree
            problems.append(ConfigProblem(file, size_problem[0], "yaml", size_problem[1]))
            return None
        # Before construction: constructing flattens "<<" merge keys in place.
        lines = _line_map(root, problems, file) if root is not None else {(): 1}
        data = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as exc:
        if loader_class is not _ConfigLoader:
            raise
        mark = exc.problem_mark or exc.context_mark
        message = exc.problem or exc.context or "invalid YAML"
        if exc.context and exc.problem and exc.problem.startswith("but "):
            # e.g. "expected a single document in the stream but found another document"
            message = f"{exc.context} {exc.problem}"
        problems.append(ConfigProblem(file, mark.line + 1 if mark else None, "yaml", message))
        return None
    except yaml.YAMLError as exc:
        if loader_class is not _ConfigLoader:
            raise
        problems.append(ConfigProblem(file, None, "yaml", str(exc)))
        return None
    finally:
        loader.dispose()
    return lines, data


#: The most nodes a config may hold with every alias expanded (SPEC §7: an alias bomb is refused by size).
MAX_YAML_NODES = 100_000


def _expansion_problem(root: yaml.Node) -> tuple[int | None, str] | None:
    """``(line, why)`` the node graph under ``root`` is too big once aliases are expanded, or None.

    An alias is a second reference to a composed node, so a 344-byte file can
    stand for a billion nodes; every later walk (line map, interpolation,
    validation) would visit each. Sizes are counted per node once (memoized), so
    this costs the size of the file, not of its expansion.
    """
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        known = sizes.get(key)
        if known is not None:
            return known
        if key in open_nodes:
            raise _AliasCycle(node.start_mark.line + 1)
        total = 1
        if isinstance(node, yaml.SequenceNode | yaml.MappingNode):
            open_nodes.add(key)
            children = node.value if isinstance(node, yaml.SequenceNode) else [n for pair in node.value for n in pair]
            for child in children:
                total += size(child)
            open_nodes.discard(key)
        sizes[key] = total
        return total

    try:
        total = size(root)
    except _AliasCycle as cycle:
        return cycle.line, "an alias refers to a node that contains it (recursive YAML is not allowed)"
    except RecursionError:
        return None, "the YAML is nested too deeply"
    # Aliases may add at most MAX_YAML_NODES values beyond the ones written (``sizes`` holds each written
    # node once): a config of 10,000 services is over a hundred thousand values written out, a bomb a few dozen.
    if total > MAX_YAML_NODES + len(sizes):
        return None, f"too big: more than {MAX_YAML_NODES:,} values once aliases are expanded (an alias bomb?)"
    return None


class _AliasCycle(Exception):
    def __init__(self, line: int) -> None:
        super().__init__(line)
        self.line = line


_MERGE_TAG = "tag:yaml.org,2002:merge"
_MAX_DEPTH = 64  # YAML aliases can form cycles; configs are never this deep


def _line_map(root: yaml.Node, problems: list[ConfigProblem], file: str) -> dict[tuple[str | int, ...], int]:
    """Key path -> 1-based line of the key (or of the list item). Also reports
    duplicate keys, which YAML forbids but PyYAML silently resolves to the last."""
    lines: dict[tuple[str | int, ...], int] = {(): root.start_mark.line + 1}

    def walk(node: yaml.Node, path: tuple[str | int, ...], depth: int, explicit: bool) -> None:
        if depth > _MAX_DEPTH:
            return
        if isinstance(node, yaml.MappingNode):
            merged: list[yaml.Node] = []
            seen: dict[str, int] = {}
            for key_node, value_node in node.value:
                if key_node.tag == _MERGE_TAG:
                    merged.extend(value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node])
                    continue
                if not isinstance(key_node, yaml.ScalarNode):
                    continue
                key = key_node.value
                line = key_node.start_mark.line + 1
                child = (*path, key)
                if key in seen and explicit:
                    problems.append(
                        ConfigProblem(file, line, _dotted(child), f"duplicate key (first at line {seen[key]})")
                    )
                seen.setdefault(key, line)
                if explicit:
                    lines[child] = line
                else:
                    lines.setdefault(child, line)
                walk(value_node, child, depth + 1, explicit)
            # "<<: *defaults" keys count only where not set explicitly.
            for merged_node in merged:
                walk(merged_node, path, depth + 1, False)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                child = (*path, index)
                if explicit:
                    lines[child] = item.start_mark.line + 1
                else:
                    lines.setdefault(child, item.start_mark.line + 1)
                walk(item, child, depth + 1, explicit)

    walk(root, (), 0, True)
    return lines


def _line_of(lines: Mapping[tuple[str | int, ...], int], path: tuple[str | int, ...]) -> int | None:
    """The line of the deepest known prefix of ``path``."""
    for end in range(len(path), -1, -1):
        line = lines.get(tuple(str(p) if not isinstance(p, int) else p for p in path[:end]))
        if line is not None:
            return line
    return None


# ${NAME}, ${NAME:-default}; "$${" is a literal "${"; any other "${" is malformed.
_REFERENCE_RE = re.compile(
    r"(?P<escaped>\$\$\{)"
    r"|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<default>:-[^}]*)?\}"
    r"|(?P<malformed>\$\{)"
)


def _interpolate(text: str, environ: Mapping[str, str]) -> tuple[str, list[str]]:
    """Substitute references; return the result and one message per problem."""
    problems: list[str] = []

    def substitute(match: re.Match[str]) -> str:
        if match.group("escaped"):
            return "${"
        if match.group("malformed"):
            problems.append("malformed ${...}; write ${NAME} or ${NAME:-default} ($${ for a literal ${)")
            return ""
        name = match.group("name")
        value = environ.get(name)
        default = match.group("default")
        if default is not None:
            # As in the shell: ":-" also replaces a set but empty variable.
            return value if value else default[2:]
        if value is None:
            problems.append(f"environment variable {name} is not set")
            return ""
        return value

    return _REFERENCE_RE.sub(substitute, text), problems


def _interpolate_tree(
    node: Any,
    environ: Mapping[str, str],
    path: tuple[str | int, ...],
    found: list[tuple[tuple[str | int, ...], str]],
    unresolved: list[tuple[str | int, ...]],
    depth: int = 0,
) -> Any:
    if depth > _MAX_DEPTH:
        return node
    if isinstance(node, str):
        if "${" not in node:
            return node
        value, problems = _interpolate(node, environ)
        for message in problems:
            found.append((path, message))
        if problems:
            unresolved.append(path)
        return value
    if isinstance(node, dict):
        return {
            key: _interpolate_tree(value, environ, (*path, str(key)), found, unresolved, depth + 1)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [
            _interpolate_tree(item, environ, (*path, index), found, unresolved, depth + 1)
            for index, item in enumerate(node)
        ]
    return node


# --------------------------------------------------------------------------- pydantic errors

# Keys whose values are credentials: a message never quotes them.
_SENSITIVE_KEYS = frozenset(
    {
        "password",
        "webhook_url",
        "routing_key",
        "access_key_id",
        "secret_access_key",
        "headers",
        "url",
        "source_url",
        "target",
    }
)


def _pydantic_problem(error: Mapping[str, Any]) -> tuple[tuple[str | int, ...], str]:
    """A pydantic error as (data path, human message)."""
    path, owner, tags = _walk_loc(tuple(error["loc"]))
    kind = error["type"]
    ctx = error.get("ctx") or {}
    value = error.get("input")
    sensitive = any(part in _SENSITIVE_KEYS for part in path if isinstance(part, str))
    got = _describe(value)
    if sensitive and isinstance(value, str | int | float) and not isinstance(value, bool):
        got = "a string" if isinstance(value, str) else "a number"  # never quote a credential

    if isinstance(ctx.get("error"), _ItemLevelError):
        path = path[:-1]
    if kind == "missing":
        return path, "required key is missing"
    if kind == "invalid_key":  # a non-string key where only named keys exist
        return path[:-1], f"unknown key {_describe(value)}"
    if "[key]" in error["loc"]:
        return path, f"expected a string key, got {got}"
    if kind == "extra_forbidden":
        key = str(path[-1]) if path else ""
        message = f"unknown key {key!r}"
        if owner is not None:
            close = difflib.get_close_matches(key, _keys_of(owner), n=1)
            if close:
                message += f" (did you mean {close[0]!r}?)"
        return path, message
    if kind == "union_tag_invalid":
        return (*path, "type"), f"unknown type {ctx.get('tag')!r}; expected one of {ctx.get('expected_tags')}"
    if kind == "union_tag_not_found":
        expected = f" ({', '.join(tags)})" if tags else ""
        if not isinstance(value, Mapping):
            return path, f"expected a mapping with a type{expected}, got {got}"
        return (*path, "type"), f"required key is missing{expected}"
    if kind in ("value_error", "assertion_error"):
        return path, _strip_prefix(error["msg"])
    templates: dict[str, str] = {
        "model_type": "expected a mapping, got {got}",
        "model_attributes_type": "expected a mapping, got {got}",
        "dict_type": "expected a mapping, got {got}",
        "list_type": "expected a list, got {got}",
        "string_type": "expected a string, got {got}",
        "int_type": "expected a whole number, got {got}",
        "int_parsing": "expected a whole number, got {got}",
        "int_from_float": "expected a whole number, got {got}",
        "float_type": "expected a number, got {got}",
        "float_parsing": "expected a number, got {got}",
        "bool_type": "expected true or false, got {got}",
        "bool_parsing": "expected true or false, got {got}",
        "literal_error": "expected {expected}, got {got}",
        "greater_than_equal": "must be at least {ge}, got {got}",
        "greater_than": "must be greater than {gt}, got {got}",
        "less_than_equal": "must be at most {le}, got {got}",
        "less_than": "must be less than {lt}, got {got}",
        "datetime_type": "expected a time like 2026-11-10T02:00:00Z, got {got}",
        "datetime_parsing": "expected a time like 2026-11-10T02:00:00Z, got {got}",
        "datetime_from_date_parsing": "expected a time like 2026-11-10T02:00:00Z, got {got}",
        "date_type": _DATE_HINT + ", got {got}",
        "date_parsing": _DATE_HINT + ", got {got}",
        "date_from_datetime_parsing": _DATE_HINT + ", got {got}",
        "date_from_datetime_inexact": _DATE_HINT + ", got {got}",
    }
    template = templates.get(kind)
    if template is not None:
        try:
            message = template.format(got=got, **ctx)
        except (KeyError, IndexError):
            pass
        else:
            reason = str(ctx.get("error", ""))
            if "outside expected range" in reason:  # 2027-02-30: say which part is impossible
                message += f" ({reason})"
            return path, message
    return path, f"{_strip_prefix(error['msg'])}, got {got}"


def _strip_prefix(message: str) -> str:
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            return message[len(prefix) :]
    return message


def _walk_loc(
    loc: tuple[str | int, ...],
) -> tuple[tuple[str | int, ...], type[BaseModel] | None, list[str]]:
    """Follow a pydantic ``loc`` through the model types.

    Returns the data path (union tags such as ``s3`` or ``secret`` dropped),
    the model owning the last key (for "did you mean"), and the tags of the
    union reached at the end (for "missing type").
    """
    path: list[str | int] = []
    current: Any = Config
    owner: type[BaseModel] | None = None
    for part in loc:
        if part == "[key]":  # a dict key itself is wrong: report at the key
            continue
        current = _unwrap(current)
        consumed = False
        while _is_union(current):
            members = [m for m in get_args(current) if m is not type(None)]
            tagged = next((m for m in members if part in _tags_of(m)), None)
            if tagged is not None:
                current, consumed = _unwrap(tagged), True
                break
            if len(members) != 1:
                current = None
                break
            current = _unwrap(members[0])
        if consumed:
            continue
        owner = None
        if isinstance(current, type) and issubclass(current, BaseModel):
            owner = current
            field = _field_of(current, part) if isinstance(part, str) else None
            current = field.annotation if field is not None else None
        elif get_origin(current) is list and isinstance(part, int):
            current = get_args(current)[0]
        elif get_origin(current) is dict:
            current = get_args(current)[1]
        else:
            current = None
        path.append(part)
    current = _unwrap(current)
    tags: list[str] = []
    if _is_union(current):
        for member in get_args(current):
            tags.extend(_tags_of(member))
    return tuple(path), owner, tags


def _keys_of(model: type[BaseModel]) -> list[str]:
    """The keys a model takes in a file: a field's alias where it has one (``schema``)."""
    return [field.alias or name for name, field in model.model_fields.items()]


def _field_of(model: type[BaseModel], key: str) -> FieldInfo | None:
    """The field a key names, by alias (errors from a file) or by field name (from code)."""
    if key in model.model_fields:
        return model.model_fields[key]
    return next((field for field in model.model_fields.values() if field.alias == key), None)


def _unwrap(annotation: Any) -> Any:
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def _is_union(annotation: Any) -> bool:
    return get_origin(annotation) in (Union, types.UnionType)


def _tags_of(member: Any) -> list[str]:
    """Union tags selecting ``member``: a ``Tag`` or its ``type`` literal."""
    if get_origin(member) is Annotated:
        tags = [meta.tag for meta in get_args(member)[1:] if isinstance(meta, Tag)]
        if tags:
            return tags
    model = _unwrap(member)
    if isinstance(model, type) and issubclass(model, BaseModel) and "type" in model.model_fields:
        annotation = model.model_fields["type"].annotation
        if get_origin(annotation) is Literal:
            return [str(arg) for arg in get_args(annotation)]
    return []


# --------------------------------------------------------------------------- cross-references


_Found = list[tuple[tuple[str | int, ...], str]]  # (data path, message)
_NO_SMTP = "recipients are set but notifications.email (the SMTP server) is not configured"


def _mappings(value: Any) -> Iterator[tuple[int, Mapping[str, Any]]]:
    """``(index, item)`` of the mapping items of a raw list; nothing for anything else."""
    if isinstance(value, list):
        for index, item in enumerate(value):
            if isinstance(item, Mapping):
                yield index, item


def _seconds(value: Any) -> float | None:
    """A raw duration in seconds; None where it is invalid (validation reports that)."""
    try:
        return parse_duration(value)
    except (TypeError, ValueError):
        return None


def _semantic_problems(data: Mapping[str, Any]) -> _Found:
    """Rules spanning sections (names that refer to each other, unique names).

    Works on raw data and skips whatever has the wrong shape: that is reported
    by validation, and these rules must still be checked beside it.
    """
    found: _Found = []

    def items(section: str) -> Iterator[tuple[int, Mapping[str, Any]]]:
        return _mappings(data.get(section))

    def names(section: str, key: str) -> list[str]:
        return [item[key] for _, item in items(section) if isinstance(item.get(key), str)]

    def defined(known: Mapping[str, Any] | list[str], what: str) -> str:
        listed = ", ".join(sorted(set(known)))  # a duplicated name is reported on its own, listed once here
        return f" (defined: {listed})" if listed else f" (no {what} are defined)"

    for section, key, label in (
        ("backups", "name", "backup set"),
        ("databases", "name", "database"),
        ("services", "name", "service"),
        ("capacity", "metric", "capacity metric"),
        ("quality", "name", "quality suite"),
    ):
        first: dict[str, int] = {}
        for index, item in items(section):
            name = item.get(key)
            if not isinstance(name, str):
                continue
            if name in first:
                found.append(
                    ((section, index, key), f"duplicate {label} name {name!r} (first at {section}.{first[name]})")
                )
            else:
                first[name] = index

    raw_storages = data.get("storages")
    storages: dict[str, Any] = {}
    if isinstance(raw_storages, Mapping):
        for name, storage in raw_storages.items():
            storages[str(name)] = storage.get("type") if isinstance(storage, Mapping) else None

    def check_storage(path: tuple[str | int, ...], name: Any, need_s3: bool) -> None:
        if not isinstance(name, str):
            return
        if name not in storages:
            found.append((path, f"unknown storage {name!r}{defined(storages, 'storages')}"))
        elif need_s3 and storages[name] not in ("s3", None):
            found.append((path, f"storage {name!r} is a {storages[name]} storage, not s3"))

    for index, backup in items("backups"):
        check_storage(("backups", index, "storage"), backup.get("storage"), need_s3=False)
        name = backup.get("storage")
        if backup.get("checksum") == "s3" and isinstance(name, str) and storages.get(name) == "filesystem":
            found.append(
                (("backups", index, "checksum"), f"checksum s3 needs an s3 storage; {name!r} is a filesystem storage")
            )

    backup_names = names("backups", "name")
    for index, database in items("databases"):
        backup = database.get("backup")
        if isinstance(backup, str) and backup not in backup_names:
            found.append(
                (("databases", index, "backup"), f"unknown backup set {backup!r}{defined(backup_names, 'backup sets')}")
            )
        drill = database.get("drill")
        if isinstance(drill, Mapping):
            if _same_database(drill.get("target"), database.get("source_url")):
                found.append(
                    (
                        ("databases", index, "drill", "target"),
                        "the drill target is the source database; a drill never writes to it",
                    )
                )
            sql = drill.get("sql")
            first_sql: dict[str, int] = {}
            for sql_index, check in enumerate(sql if isinstance(sql, list) else []):
                name = check.get("name") if isinstance(check, Mapping) else None
                if not isinstance(name, str):
                    continue
                if name in first_sql:
                    found.append(
                        (
                            ("databases", index, "drill", "sql", sql_index, "name"),
                            f"duplicate SQL check name {name!r} (first at sql.{first_sql[name]})",
                        )
                    )
                else:
                    first_sql[name] = sql_index

    service_names = names("services", "name")
    for index, window in items("maintenance"):
        listed = window.get("services")
        for service_index, service in enumerate(listed if isinstance(listed, list) else []):
            if isinstance(service, str) and service not in service_names:
                found.append(
                    (
                        ("maintenance", index, "services", service_index),
                        f"unknown service {service!r}{defined(service_names, 'services')}",
                    )
                )

    for index, metric in items("capacity"):
        source = metric.get("source")
        if isinstance(source, Mapping) and source.get("type") == "s3":
            check_storage(("capacity", index, "source", "storage"), source.get("storage"), need_s3=True)
        found.extend(_capacity_unit_problems(index, metric))

    reports = data.get("reports")
    monthly = reports.get("monthly") if isinstance(reports, Mapping) else None
    if isinstance(monthly, Mapping) and monthly.get("storage") is not None:
        check_storage(("reports", "monthly", "storage"), monthly.get("storage"), need_s3=False)
    found.extend(_delivery_problems(data))
    found.extend(_expiry_problems(data))
    found.extend(_expectation_problems(data, _catalog_problems))
    return found


# Expectation fields GX sets itself: never taken from the config.
_GX_RESERVED_KWARGS = frozenset({"id", "batch_id", "rendered_content", "meta"})


def expectation_problems(config: Config) -> list[str]:
    """``KEY: message`` for each expectation of ``config`` that Great Expectations' own models refuse,
    values included (``min_value: lots``): ``data-quality``'s check before a run. Imports GX (seconds) when
    the config has expectations; loading a config checks names and arguments only, from a snapshot
    (:mod:`opsflow.expectations`), without GX."""
    found = _expectation_problems(config.model_dump(by_alias=True), _expectation_problem)
    return [f"{_dotted(path)}: {message}" for path, message in found]


def _catalog_problems(name: str, kwargs: Mapping[str, Any]) -> list[tuple[tuple[str, ...], str]]:
    from opsflow.expectations import expectation_problems as catalog_problems

    return catalog_problems(name, kwargs)


def _expectation_problems(
    data: Mapping[str, Any], judge: Callable[[str, Mapping[str, Any]], list[tuple[tuple[str, ...], str]]]
) -> _Found:
    """Each ``quality.N.expectations.M`` names a GX expectation and takes its kwargs, as ``judge`` sees
    them: the snapshot of names and arguments when a config loads, GX's own models before a run."""
    entries: list[tuple[tuple[str | int, ...], str, Mapping[str, Any]]] = []
    for index, suite in _mappings(data.get("quality")):
        for position, raw in _mappings(suite.get("expectations")):
            normalized = isinstance(raw.get("name"), str) and not any(str(k).startswith("expect_") for k in raw)
            if normalized:  # {name, kwargs}: a config built in code
                name, kwargs = raw["name"], raw.get("kwargs")
            elif len(raw) == 1:
                ((name, kwargs),) = raw.items()
            else:
                continue  # the wrong shape is reported by validation
            kwargs = {} if kwargs is None else kwargs
            if isinstance(name, str) and name.startswith("expect_") and isinstance(kwargs, Mapping):
                entries.append((("quality", index, "expectations", position, name), name, kwargs))
    if not entries:
        return []
    found: _Found = []
    for path, name, kwargs in entries:
        found.extend(((*path, *key), message) for key, message in judge(name, kwargs))
    return found


def _expectation_problem(name: str, kwargs: Mapping[str, Any]) -> list[tuple[tuple[str, ...], str]]:
    """Problems of one expectation as (key path below its name, message), judged by GX's own model."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import great_expectations  # noqa: F401  (registers the expectations)
        from great_expectations.compatibility.pydantic import ValidationError as GxValidationError
        from great_expectations.exceptions import ExpectationNotFoundError
        from great_expectations.expectations.registry import (
            get_expectation_impl,
            list_registered_expectation_implementations,
        )
    try:
        model = get_expectation_impl(name)
    except ExpectationNotFoundError:
        close = difflib.get_close_matches(name, list_registered_expectation_implementations(), n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return [((), f"unknown Great Expectations expectation {name!r}{hint}")]
    fields = [field for field in model.__fields__ if field not in _GX_RESERVED_KWARGS]
    problems: list[tuple[tuple[str, ...], str]] = []
    for key in kwargs:
        if str(key) in _GX_RESERVED_KWARGS:
            problems.append(((str(key),), f"{key!r} is set by opsflow, not in the config"))
    try:
        model(**{str(k): v for k, v in kwargs.items() if str(k) not in _GX_RESERVED_KWARGS})
    except GxValidationError as exc:
        seen: set[tuple[str, ...]] = set()
        errors = exc.errors()
        if any(error["loc"] != ("__root__",) for error in errors):
            # A model-wide rule on top of a bad field is mostly its echo ("min_value and max_value
            # cannot both be None" for an invalid min_value): the field's own problem is enough.
            errors = [error for error in errors if error["loc"] != ("__root__",)]
        for error in errors:
            key = tuple(str(part) for part in error["loc"] if part != "__root__")
            if key in seen:  # a union reports once per member: the first says enough
                continue
            seen.add(key)
            problems.append((key, _gx_error_message(error, key, fields)))
    except Exception as exc:  # GX's own checks beyond pydantic (e.g. a bad regex): one line
        problems.append(((), str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__))
    return problems


def _gx_error_message(error: Mapping[str, Any], key: tuple[str, ...], fields: list[str]) -> str:
    kind = str(error.get("type", ""))
    if kind == "value_error.missing":
        return "required key is missing"
    if kind == "value_error.extra":
        message = f"unknown argument {key[-1]!r}" if key else "unknown argument"
        close = difflib.get_close_matches(key[-1], fields, n=1) if key else []
        return message + (f" (did you mean {close[0]!r}?)" if close else f"; it takes: {', '.join(fields)}")
    return str(error.get("msg", "invalid value"))


def _capacity_unit_problems(index: int, metric: Mapping[str, Any]) -> _Found:
    """A threshold whose unit does not fit what the metric's source measures (``capacity_unit_problem``).
    A source or threshold that is invalid on its own is skipped: validation reports it."""
    source, raw = metric.get("source"), metric.get("threshold")
    if not isinstance(source, Mapping) or not isinstance(source.get("type"), str) or raw is None:
        return []
    measure = source.get("measure")
    if measure is not None and not isinstance(measure, str):
        return []
    try:
        threshold = Threshold.model_validate(raw)
    except (ValidationError, ValueError, TypeError):
        return []
    problem = capacity_unit_problem(source["type"], measure, threshold)
    return [(("capacity", index, "threshold"), problem)] if problem else []


def _delivery_problems(data: Mapping[str, Any]) -> _Found:
    """Whatever sends email or Slack messages needs that channel in ``notifications``."""
    notifications = data.get("notifications")
    channels = notifications if isinstance(notifications, Mapping) else {}
    reports, digests = data.get("reports"), data.get("digests")
    senders: list[tuple[tuple[str, str], Any]] = [
        (("reports", "monthly"), reports.get("monthly") if isinstance(reports, Mapping) else None),
        (("digests", "daily"), digests.get("daily") if isinstance(digests, Mapping) else None),
        (("digests", "weekly"), digests.get("weekly") if isinstance(digests, Mapping) else None),
    ]
    found: _Found = []
    for path, sender in senders:
        if not isinstance(sender, Mapping):
            continue
        if sender.get("to") and channels.get("email") is None:
            found.append(((*path, "to"), _NO_SMTP))
        if sender.get("slack") is True and channels.get("slack") is None:
            found.append(((*path, "slack"), "slack is true but notifications.slack is not configured"))
    found.extend(_escalation_problems(channels))
    return found


def _escalation_problems(notifications: Mapping[str, Any]) -> _Found:
    """Tiers in strictly increasing order of ``after``, each telling someone over a configured channel."""
    found: _Found = []
    latest: tuple[int, float] | None = None  # (index, after) of the latest tier so far
    for index, tier in _mappings(notifications.get("escalate")):
        path = ("notifications", "escalate", index)
        after = _seconds(tier.get("after"))
        if after is not None and after > 0:  # 0s is reported by validation
            if latest is None or after > latest[1]:
                latest = (index, after)
            else:
                found.append(
                    (
                        (*path, "after"),
                        f"must be later than notifications.escalate.{latest[0]}.after "
                        f"({format_duration(latest[1])}); tiers go in increasing order",
                    )
                )
        if tier.get("to") and notifications.get("email") is None:
            found.append(((*path, "to"), _NO_SMTP))
        if tier.get("slack_mention") is not None and notifications.get("slack") is None:
            found.append(((*path, "slack_mention"), "slack_mention is set but notifications.slack is not configured"))
    return found


def _expiry_problems(data: Mapping[str, Any]) -> _Found:
    """Expiry names are unique, also against HTTPS services (each one's certificate is an
    item named after it), and an entry's own windows keep fail_within <= warn_within."""
    expiry = data.get("expiry")
    if not isinstance(expiry, Mapping):
        return []
    https_services: dict[str, int] = {}
    for index, service in _mappings(data.get("services")):
        if isinstance(service.get("name"), str) and _is_https(service.get("url")):
            https_services.setdefault(service["name"], index)
    found: _Found = []
    first: dict[str, str] = {}  # name -> where it is first defined
    for section in ("certificates", "items"):
        for index, entry in _mappings(expiry.get(section)):
            path = ("expiry", section, index)
            name = entry.get("name")
            if isinstance(name, str) and name in https_services:
                found.append(
                    (
                        (*path, "name"),
                        f"name {name!r} is taken by the HTTPS service services.{https_services[name]}, "
                        "whose certificate is checked under that name",
                    )
                )
            elif isinstance(name, str) and name in first:
                found.append(((*path, "name"), f"duplicate expiry name {name!r} (first at {first[name]})"))
            elif isinstance(name, str):
                first[name] = _dotted(path)
            found.extend(_expiry_window_problems(path, entry, expiry))
    return found


def _expiry_window_problems(path: tuple[str | int, ...], entry: Mapping[str, Any], expiry: Mapping[str, Any]) -> _Found:
    """An entry's own warn_within/fail_within, taken with the global one it does not override."""
    own_warn, own_fail = entry.get("warn_within"), entry.get("fail_within")
    if own_warn is None and own_fail is None:
        return []  # the global pair is checked by the Expiry model
    defaults = Expiry.model_fields
    warn = _seconds(own_warn if own_warn is not None else expiry.get("warn_within", defaults["warn_within"].default))
    fail = _seconds(own_fail if own_fail is not None else expiry.get("fail_within", defaults["fail_within"].default))
    if warn is None or fail is None or fail <= warn:
        return []
    if own_fail is None:
        message = f"warn_within ({format_duration(warn)}) must not be shorter than expiry.fail_within"
        return [((*path, "warn_within"), f"{message} ({format_duration(fail)})")]
    against = "warn_within" if own_warn is not None else "expiry.warn_within"
    message = f"fail_within ({format_duration(fail)}) must not exceed {against} ({format_duration(warn)})"
    return [((*path, "fail_within"), message)]


def _same_database(target: Any, source: Any) -> bool:
    """Whether two plain PostgreSQL URLs name the same database (password ignored)."""
    if not isinstance(target, str) or not isinstance(source, str) or target == "embedded":
        return False
    if target == source:
        return True
    from psycopg import Error as PsycopgError
    from psycopg.conninfo import conninfo_to_dict

    def identity(url: str) -> dict[str, Any]:
        params = conninfo_to_dict(url)
        params.pop("password", None)
        return params

    try:
        return identity(target) == identity(source)
    except PsycopgError:
        return False
