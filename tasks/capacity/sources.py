"""Capacity sources: sample one configured metric now, from where it lives.

Plain functions (the ``@task`` wrappers with retries live in ``tasks.capacity.collect``):
:func:`sample_metric` dispatches on the source's ``type`` — PostgreSQL, S3, a
filesystem, Prometheus — and returns the samples measured now;
:func:`backfill_prometheus` reads a Prometheus metric's past through
``/api/v1/query_range`` so a new metric starts with history.

A sample's value is in the metric's threshold unit: bytes for a size threshold,
percent (0-100) for a percentage, a plain number otherwise (a fraction 0-1 for
``connections``). A threshold unit that does not fit the source is refused by the
config (``opsflow.config.capacity_unit_problem``) and again here, for configs
built in code.

Errors follow the retry policy (SPEC §7): what may change on retry (connection
refused, time-out, 5xx) is :class:`~tasks.retry.TransientFailure`; what cannot (a
bad query, 4xx, a missing path, a unit mismatch) is
:class:`~tasks.retry.PermanentFailure`. Messages are one line and never carry a
password.

>>> Sample("root-disk", datetime(2026, 11, 1, tzinfo=UTC), 41.5)
Sample(metric='root-disk', ts=datetime.datetime(2026, 11, 1, 0, 0, tzinfo=datetime.timezone.utc), value=41.5)
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from opsflow.config import (
    CapacityMetric,
    Config,
    FilesystemSource,
    ImportSource,
    PostgresSource,
    PrometheusSource,
    S3Source,
    S3Storage,
    capacity_unit_problem,
    resolve_secret,
)
from opsflow.redact import first_line, redact, register_url_secrets
from tasks.retry import PermanentFailure, TransientFailure, http_status_is_permanent
from tasks.storage import S3BackupStorage, s3_failure

__all__ = [
    "PROMETHEUS_MAX_POINTS",
    "Sample",
    "backfill_prometheus",
    "sample_metric",
]

CONNECT_TIMEOUT_SECONDS = 10
# Server-side limit on one query, so a slow database or Prometheus gives a time-out we classify,
# not a task hanging until Prefect's own timeout.
QUERY_TIMEOUT_SECONDS = 30
# The Prometheus answer is untrusted input: a query matching millions of series must not exhaust memory.
PROMETHEUS_MAX_BODY_BYTES = 10 * 1024 * 1024
# Prometheus refuses a range query giving more than 11,000 points per series.
PROMETHEUS_MAX_POINTS = 11_000


@dataclass(frozen=True)
class Sample:
    """One measurement of a capacity metric."""

    metric: str
    ts: datetime  # aware UTC, when measured
    value: float  # in the metric's threshold unit: bytes, percent (0-100) or a plain number


def sample_metric(metric: CapacityMetric, config: Config, now: datetime) -> list[Sample]:
    """The samples of ``metric`` measured at ``now`` (aware): one for a collected source, none for
    ``import`` (its history comes from ``opsflow capacity import``).

    Raises :class:`TransientFailure` or :class:`PermanentFailure` (see the module docstring)."""
    source = metric.source
    if isinstance(source, ImportSource):
        return []
    problem = capacity_unit_problem(source.type, getattr(source, "measure", None), metric.threshold)
    if problem:
        raise PermanentFailure(problem)
    now = now.astimezone(UTC)
    if isinstance(source, PostgresSource):
        value = _postgres_value(source, metric.threshold.unit)
    elif isinstance(source, S3Source):
        value = _s3_value(source, config)
    elif isinstance(source, FilesystemSource):
        value = _filesystem_value(source, metric.threshold.unit)
    elif isinstance(source, PrometheusSource):
        return [_prometheus_instant(metric.metric, source, now)]
    else:  # a new source type must be added here; never a silent "nothing to sample"
        raise PermanentFailure(f"unknown capacity source type {source.type!r}")
    return [Sample(metric.metric, now, value)]


# -- PostgreSQL ---------------------------------------------------------------------------


def _postgres_value(source: PostgresSource, unit: str) -> float:
    """``database_size``: bytes of the URL's database; ``connections``: client backends as a share of
    ``max_connections`` (percent 0-100 for a percentage threshold, a fraction 0-1 for a number)."""
    import psycopg

    url = resolve_secret(source.url) or ""
    register_url_secrets(url)
    where = _postgres_where(url)
    try:
        # autocommit: a read-only sample must not leave a transaction open on a production server.
        conn = psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS)
    except psycopg.Error as exc:
        raise _postgres_connect_failure(exc, where) from None
    try:
        with conn:
            # SET, not an `options` connection parameter: that would replace any the URL carries.
            conn.execute(f"set statement_timeout = {QUERY_TIMEOUT_SECONDS * 1000}")
            if source.measure == "database_size":
                row = conn.execute("select pg_database_size(current_database())").fetchone()
                return float(row[0]) if row else 0.0
            # numbackends counts the sessions connected to each database: what max_connections limits.
            row = conn.execute(
                "select (select coalesce(sum(numbackends), 0) from pg_stat_database),"
                " current_setting('max_connections')::int"
            ).fetchone()
    except psycopg.OperationalError as exc:  # lost connection, statement time-out, shutting down
        raise TransientFailure(f"postgres {where}: {first_line(exc)}") from None
    except psycopg.Error as exc:  # permission denied and the like: the same next time
        raise PermanentFailure(f"postgres {where}: {first_line(exc)}") from None
    used, limit = (float(row[0]), float(row[1])) if row else (0.0, 0.0)
    if limit <= 0:
        raise PermanentFailure(f"postgres {where}: max_connections is {limit:g}")
    fraction = used / limit
    return fraction * 100.0 if unit == "percent" else fraction


_PERMANENT_CONNECT_ERRORS = (
    "password authentication failed",
    "authentication failed",
    "does not exist",  # database "x" / role "x" does not exist
    "no pg_hba.conf entry",
    "permission denied",
    "invalid connection option",
    "invalid dsn",
    "invalid integer value",
)


def _postgres_connect_failure(exc: Exception, where: str) -> Exception:
    """A refused login or a missing database cannot change on retry; a refused or timed-out connection may."""
    message = first_line(exc)
    permanent = any(marker in message.lower() for marker in _PERMANENT_CONNECT_ERRORS)
    return (PermanentFailure if permanent else TransientFailure)(f"postgres {where}: {message}")


def _postgres_where(url: str) -> str:
    """``DATABASE on HOST``, for messages: never the URL itself, which may hold a password."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(url)
    except Exception:  # an unparseable URL is reported by psycopg.connect, also without echoing it
        return "(database)"
    host = str(params.get("host") or "localhost")
    port = f":{params['port']}" if params.get("port") else ""
    return redact(f"{params.get('dbname') or '(default database)'} on {host}{port}")


# -- S3 -----------------------------------------------------------------------------------


def _s3_value(source: S3Source, config: Config) -> float:
    """Total bytes (``measure: bytes``) or count (``objects``) of the objects under the storage's prefix
    followed by the source's. Every page of the listing is read (1,000 keys a page); zero-byte keys
    ending in ``/`` (the "folders" S3 consoles create) are not counted as objects."""
    try:
        storage = config.get_storage(source.storage)
    except KeyError as exc:
        raise PermanentFailure(str(exc.args[0])) from None
    if not isinstance(storage, S3Storage):  # refused by the config; a config built in code may still try
        raise PermanentFailure(f"storage {source.storage!r} is a {storage.type} storage, not s3")
    prefix = f"{storage.prefix}{source.prefix}"
    where = f"s3://{storage.bucket}/{prefix}"
    total_bytes = objects = 0
    try:
        pages = (
            S3BackupStorage(storage)
            .client.get_paginator("list_objects_v2")
            .paginate(Bucket=storage.bucket, Prefix=prefix)
        )
        for page in pages:
            for entry in page.get("Contents", []):
                size = int(entry.get("Size", 0))
                total_bytes += size
                objects += not (size == 0 and str(entry.get("Key", "")).endswith("/"))
    except Exception as exc:
        raise s3_failure(exc, f"listing {where}") from None
    return float(total_bytes if source.measure == "bytes" else objects)


# -- filesystem ---------------------------------------------------------------------------


def _filesystem_value(source: FilesystemSource, unit: str) -> float:
    """Used bytes of the filesystem holding ``path``, or used percent for a percentage threshold.

    The percentage is df's ``Use%``: used / (used + available to unprivileged users), so it reaches
    100% when ordinary processes can no longer write, though root's reserved blocks remain."""
    try:
        usage = shutil.disk_usage(source.path)
    except (FileNotFoundError, NotADirectoryError):
        raise PermanentFailure(f"filesystem path {source.path} does not exist") from None
    except PermissionError:
        raise PermanentFailure(f"filesystem path {source.path}: permission denied") from None
    except OSError as exc:  # EIO, a stale NFS handle: may clear
        raise TransientFailure(f"filesystem path {source.path}: {exc.strerror or exc}") from None
    if unit != "percent":
        return float(usage.used)
    usable = usage.used + usage.free
    return 100.0 * usage.used / usable if usable else 0.0


# -- Prometheus ---------------------------------------------------------------------------


def backfill_prometheus(metric: CapacityMetric, start: datetime, end: datetime, step: timedelta) -> list[Sample]:
    """The history of a Prometheus metric from ``start`` to ``end`` (aware), one sample every ``step``
    (coarsened when needed so the range stays within :data:`PROMETHEUS_MAX_POINTS` points), oldest first.

    Empty when Prometheus has no data in the range. The query must give one series (aggregate it with
    ``sum()`` or ``avg()``); every point must be a finite number. Errors as :func:`sample_metric`."""
    source = metric.source
    if not isinstance(source, PrometheusSource):
        raise PermanentFailure(f"only a prometheus source can be backfilled, not {source.type}")
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    if end <= start:
        raise PermanentFailure(f"backfill range ends ({end.isoformat()}) before it starts ({start.isoformat()})")
    step_seconds = _range_step(start, end, step)
    data = _prometheus_get(
        source,
        "query_range",
        {
            "query": source.query,
            "start": _timestamp(start),
            "end": _timestamp(end),
            "step": f"{step_seconds:g}",
        },
    )
    values = _one_series(source, data, "matrix", "values")
    if values is None:
        return []
    if not isinstance(values, list):
        raise PermanentFailure(f"prometheus {_where(source)}: malformed range result")
    return [_point(metric.metric, source, point) for point in values]


def _range_step(start: datetime, end: datetime, step: timedelta) -> float:
    """``step`` in whole seconds, at least 1 s, and coarse enough for at most PROMETHEUS_MAX_POINTS points
    (Prometheus counts both ends: points = span / step + 1)."""
    span = (end - start).total_seconds()
    return float(max(math.ceil(step.total_seconds()), math.ceil(span / (PROMETHEUS_MAX_POINTS - 1)), 1))


def _prometheus_instant(name: str, source: PrometheusSource, now: datetime) -> Sample:
    """``query`` evaluated at ``now``: one sample, or an error."""
    data = _prometheus_get(source, "query", {"query": source.query, "time": _timestamp(now)})
    if data.get("resultType") == "scalar":  # e.g. scalar(...) or a literal: [ts, "value"]
        point = data.get("result")
    else:
        point = _one_series(source, data, "vector", "value")
        if point is None:
            raise PermanentFailure(
                f"prometheus {_where(source)}: the query returned no series at {now.isoformat()}; "
                "check its metric name and labels"
            )
    # Measured as of `now` (the evaluation time asked for), not Prometheus's millisecond echo of it.
    return replace(_point(name, source, point), ts=now)


def _one_series(source: PrometheusSource, data: Mapping[str, Any], kind: str, field: str) -> Any:
    """The ``field`` of the single series of a ``kind`` result; None when there is no series."""
    result_type, result = data.get("resultType"), data.get("result")
    if result_type != kind or not isinstance(result, list):
        expected = "an instant vector or scalar" if kind == "vector" else "a range of one series"
        raise PermanentFailure(
            f"prometheus {_where(source)}: the query gives a {result_type} result, expected {expected}"
        )
    if not result:
        return None
    if len(result) > 1:
        shown = ", ".join(_labels(series) for series in result[:2]) + (", ..." if len(result) > 2 else "")
        raise PermanentFailure(
            f"prometheus {_where(source)}: the query returned {len(result)} series ({shown}); "
            "it must return one: aggregate it, e.g. sum(...) or avg(...)"
        )
    series = result[0]
    return series.get(field) if isinstance(series, Mapping) else None


def _point(name: str, source: PrometheusSource, point: Any) -> Sample:
    """A ``[unix_ts, "value"]`` pair as a Sample; NaN, ±Inf and non-numbers are errors, never samples."""
    try:
        # Prometheus sends every value as a string ("NaN", "+Inf" included); anything else is not its API.
        if not isinstance(point, list | tuple) or len(point) != 2 or not isinstance(point[1], str):
            raise TypeError
        ts, raw = point
        when = datetime.fromtimestamp(float(ts), UTC)
        value = float(raw)
    except (TypeError, ValueError, OverflowError, OSError):
        raise PermanentFailure(f"prometheus {_where(source)}: malformed sample {_clip(point)}") from None
    if not math.isfinite(value):
        raise PermanentFailure(
            f"prometheus {_where(source)}: the query gives {raw} at {when.isoformat()}, not a finite number"
        )
    return Sample(name, when, value)


def _prometheus_get(source: PrometheusSource, endpoint: str, params: dict[str, str]) -> Mapping[str, Any]:
    """GET ``/api/v1/ENDPOINT``; the ``data`` of a successful answer, else the failure classified."""
    import httpx

    url = str(source.url)
    register_url_secrets(url)  # basic-auth credentials in the URL stay out of every log line
    # Prometheus stops the evaluation itself after `timeout`; ours is a little longer so its error arrives.
    params = {**params, "timeout": f"{QUERY_TIMEOUT_SECONDS}s"}
    where = _where(source)
    try:
        # retries=0: Prefect's task retries are the one retry policy (SPEC §7).
        with (
            httpx.Client(
                transport=httpx.HTTPTransport(retries=0),
                timeout=httpx.Timeout(QUERY_TIMEOUT_SECONDS + 5.0, connect=CONNECT_TIMEOUT_SECONDS),
                follow_redirects=False,
            ) as client,
            client.stream("GET", f"{url.rstrip('/')}/api/v1/{endpoint}", params=params) as response,
        ):
            body = _read_capped(response, where)
            status = response.status_code
    except httpx.TimeoutException as exc:
        raise TransientFailure(f"prometheus {where}: timed out ({type(exc).__name__})") from None
    except httpx.HTTPError as exc:
        raise TransientFailure(f"prometheus {where}: {type(exc).__name__}: {first_line(exc)}") from None
    return _answer_data(where, status, body)


def _read_capped(response: Any, where: str) -> bytes:
    """The body, refusing one larger than PROMETHEUS_MAX_BODY_BYTES before reading it whole."""
    declared = response.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > PROMETHEUS_MAX_BODY_BYTES:
        raise _too_big(where)
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > PROMETHEUS_MAX_BODY_BYTES:
            raise _too_big(where)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_big(where: str) -> PermanentFailure:
    limit = PROMETHEUS_MAX_BODY_BYTES // (1024 * 1024)
    return PermanentFailure(
        f"prometheus {where}: the answer is larger than {limit} MiB; the query must return one series"
    )


def _answer_data(where: str, status: int, body: bytes) -> Mapping[str, Any]:
    """The ``data`` of a Prometheus API answer. An error answer is permanent when it is about the query
    (HTTP 4xx: bad_data, execution) and transient when the server is busy or failing (5xx, time-out)."""
    try:
        answer = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        answer = None
    if not isinstance(answer, Mapping):
        # Not the Prometheus API (a proxy's error page, a wrong URL): the HTTP status decides.
        what = f"HTTP {status}, not a Prometheus API answer (expected JSON): {_clip(body)}"
        transient = status >= 500 or (status >= 400 and not http_status_is_permanent(status))
        raise (TransientFailure if transient else PermanentFailure)(f"prometheus {where}: {what}")
    if answer.get("status") == "success" and 200 <= status < 300:
        data = answer.get("data")
        if isinstance(data, Mapping):
            return data
        raise PermanentFailure(f"prometheus {where}: a success answer without data")
    error_type = str(answer.get("errorType") or "error")
    detail = f"{error_type}: {_clip(answer.get('error') or 'no error message')} (HTTP {status})"
    transient = error_type in _TRANSIENT_PROMETHEUS_ERRORS
    if not 200 <= status < 300:  # a 2xx saying "error" breaks the API contract: a retry would not change it
        transient = transient or not http_status_is_permanent(status)
    raise (TransientFailure if transient else PermanentFailure)(f"prometheus {where}: {detail}")


# Prometheus's errorType values for a busy or stopping server (HTTP 503), as opposed to bad_data (400)
# and execution (422: e.g. a query loading too many samples), which the same query meets again.
_TRANSIENT_PROMETHEUS_ERRORS = frozenset({"timeout", "canceled", "unavailable", "internal"})


def _where(source: PrometheusSource) -> str:
    """The Prometheus address for messages, without userinfo."""
    parts = urlsplit(str(source.url))
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path.rstrip('/')}"


def _labels(series: Any) -> str:
    labels = series.get("metric") if isinstance(series, Mapping) else None
    if not isinstance(labels, Mapping):
        return "{}"
    return _clip("{" + ", ".join(f"{key}={value!r}" for key, value in labels.items()) + "}", 120)


def _timestamp(moment: datetime) -> str:
    """Unix seconds at Prometheus's millisecond precision, rounded down: a range never ends after ``end``."""
    return f"{math.floor(moment.timestamp() * 1000) / 1000:.3f}"


def _clip(value: Any, limit: int = 200) -> str:
    """One line of at most ``limit`` characters of untrusted text, redacted."""
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    text = " ".join(text.split())
    return redact(text if len(text) <= limit else text[: limit - 1] + "…")
