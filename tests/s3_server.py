"""A real S3 endpoint on loopback for the tests: moto over HTTP, with a request log and fault injection.

moto's WSGI app (the same one ``moto_server`` runs) is served by werkzeug in a
daemon thread, behind a small middleware that

- records every S3 request (method, path, query string, bucket, key) so a test
  can count what the code under test really sent — a download (``GET`` of a
  key) is told apart from a listing (``GET /bucket?list-type=2``) and a
  ``HEAD`` by :attr:`S3Request.operation`;
- answers as a failing S3 would, per bucket: :meth:`S3Server.deny` gives every
  request an ``AccessDenied`` (HTTP 403), :meth:`S3Server.throttle` gives the
  next N a ``SlowDown`` (HTTP 503). The error bodies are S3's XML, so botocore
  parses them exactly as it would AWS's.

Requests are path-style (``http://127.0.0.1:PORT/bucket/key``, what boto3 uses
for an IP endpoint); virtual-host style (``bucket.localhost:PORT``) is
understood too. moto's own ``/moto-api/...`` calls are neither logged nor faulted.

moto runs in this process, so tests may also reach its store directly:
:meth:`S3Server.put_objects` for bulk setup, :meth:`S3Server.set_last_modified`
to backdate an object. One fidelity fix: a HeadObject of a multipart upload
reports its COMPOSITE checksum as S3 does (``VALUE-N``), not bare as moto does.

>>> with S3Server() as server:                                  # doctest: +SKIP
...     client = boto3.client("s3", endpoint_url=server.url, region_name="us-east-1")
...     server.throttle("backups", times=1)
...     server.requests_matching(operation="GetObject", bucket="backups", key_prefix="orders/")
"""

from __future__ import annotations

import socket
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

_ERRORS = {
    "AccessDenied": ("403 Forbidden", "Access Denied"),
    "SlowDown": ("503 Slow Down", "Please reduce your request rate."),
}


@dataclass(frozen=True)
class S3Request:
    """One request as the endpoint received it."""

    method: str
    path: str  # decoded, e.g. "/backups/orders/2026-11-01.dump"
    query: str  # raw query string, e.g. "list-type=2&prefix=orders%2F"
    bucket: str | None  # None for service-level calls (ListBuckets)
    key: str | None  # None for bucket-level calls (listing, CreateBucket...)
    fault: str | None = None  # the injected error code it was answered with, if any

    @property
    def params(self) -> dict[str, list[str]]:
        return parse_qs(self.query, keep_blank_values=True)

    @property
    def operation(self) -> str:
        """The S3 API operation, as far as the tests need it: ``GetObject``, ``HeadObject``, ``PutObject``,
        ``ListObjectsV2``, ``ListObjects``, ``CreateBucket``, ... (``Other`` when unsure)."""
        params = self.params
        if self.bucket is None:
            return "ListBuckets" if self.method == "GET" else "Other"
        if self.key is None:
            if self.method == "GET":
                if params.get("list-type") == ["2"]:
                    return "ListObjectsV2"
                if "versions" in params:
                    return "ListObjectVersions"
                if "uploads" in params:
                    return "ListMultipartUploads"
                return "ListObjects" if not params or "prefix" in params or "marker" in params else "Other"
            return {"HEAD": "HeadBucket", "PUT": "CreateBucket", "DELETE": "DeleteBucket"}.get(self.method, "Other")
        if self.method == "GET":
            return "GetObject" if not (set(params) - {"versionId", "partNumber"}) else "Other"
        if self.method == "HEAD":
            return "HeadObject"
        if self.method == "PUT":
            return "UploadPart" if "partNumber" in params else "PutObject"
        if self.method == "DELETE":
            return "DeleteObject"
        if self.method == "POST":
            return "CreateMultipartUpload" if "uploads" in params else "Other"
        return "Other"

    @property
    def is_download(self) -> bool:
        """A GET of an object's bytes (not a listing, not a HEAD)."""
        return self.operation == "GetObject"


class S3Server:
    """moto's S3 on ``127.0.0.1`` (a free port unless given), started by :meth:`start` or ``with``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self._lock = threading.Lock()
        self._requests: list[S3Request] = []
        self._denied: set[str] = set()
        self._throttled: Counter[str] = Counter()
        self._server: Any = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------

    @property
    def url(self) -> str:
        """The endpoint URL, e.g. ``http://127.0.0.1:40123``."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> S3Server:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
        from werkzeug.serving import make_server

        if self.port == 0:
            with socket.socket() as sock:
                sock.bind((self.host, 0))
                self.port = int(sock.getsockname()[1])

        class QuietHandler(MotoRequestHandler):
            def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
                pass  # no access log: the request log is ``requests``; errors are still logged

        app = DomainDispatcherApplication(create_backend_app)
        self._server = make_server(
            self.host, self.port, self._middleware(app), threaded=True, request_handler=QuietHandler
        )
        self._thread = threading.Thread(target=self._server.serve_forever, name="moto-s3", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def reset(self) -> None:
        """Forget every bucket and object (moto's ``/moto-api/reset``), the request log and the faults."""
        import httpx

        self.clear_faults()
        httpx.post(f"{self.url}/moto-api/reset").raise_for_status()
        self.clear()

    # -- request log -----------------------------------------------------------

    @property
    def requests(self) -> list[S3Request]:
        """Every S3 request received since the last :meth:`clear`, oldest first (a copy)."""
        with self._lock:
            return list(self._requests)

    def requests_matching(
        self,
        method: str | None = None,
        bucket: str | None = None,
        key_prefix: str | None = None,
        operation: str | None = None,
    ) -> list[S3Request]:
        """The logged requests with this method, bucket, operation and key prefix (each filter optional).
        ``key_prefix`` only matches requests naming an object (``""`` selects every object request)."""
        return [
            r
            for r in self.requests
            if (method is None or r.method == method.upper())
            and (bucket is None or r.bucket == bucket)
            and (operation is None or r.operation == operation)
            and (key_prefix is None or (r.key is not None and r.key.startswith(key_prefix)))
        ]

    def downloads(self, bucket: str | None = None, key_prefix: str | None = None) -> list[S3Request]:
        """The object GETs (bytes downloaded), optionally for one bucket and key prefix."""
        return self.requests_matching(bucket=bucket, key_prefix=key_prefix, operation="GetObject")

    def clear(self) -> None:
        """Empty the request log."""
        with self._lock:
            self._requests.clear()

    # -- faults ----------------------------------------------------------------

    def deny(self, bucket: str) -> None:
        """Answer every request for ``bucket`` with ``AccessDenied`` (403) until :meth:`clear_faults`."""
        with self._lock:
            self._denied.add(bucket)

    def throttle(self, bucket: str, times: int = 1) -> None:
        """Answer the next ``times`` requests for ``bucket`` with ``SlowDown`` (503)."""
        with self._lock:
            self._throttled[bucket] += times

    def clear_faults(self) -> None:
        with self._lock:
            self._denied.clear()
            self._throttled.clear()

    # -- object state --------------------------------------------------------

    def put_objects(self, bucket: str, objects: Mapping[str, bytes]) -> None:
        """Bulk setup: store objects straight into moto's backend, no HTTP (1,000 objects in well under a
        second, where 1,000 PUTs take seconds). They are ordinary objects to every later request."""
        backend = self._backend()
        for key, body in objects.items():
            backend.put_object(bucket, key, body)

    def set_last_modified(self, bucket: str, key: str, when: datetime) -> None:
        """Backdate (or postdate) an object's write time, as S3 LastModified reports it: for age-based checks."""
        obj = self._backend().get_object(bucket, key)
        if obj is None:
            raise KeyError(f"s3://{bucket}/{key}")
        if when.tzinfo is not None:
            when = when.astimezone(UTC).replace(tzinfo=None)  # moto keeps naive UTC
        obj.last_modified = when

    @staticmethod
    def _backend() -> Any:
        """moto's S3 store for the default account: the server runs in this process."""
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.s3.models import s3_backends

        return s3_backends[DEFAULT_ACCOUNT_ID]["aws"]

    # -- the middleware ----------------------------------------------------------

    def _locate(self, environ: dict[str, Any]) -> tuple[str | None, str | None, str]:
        # WSGI hands the path over percent-decoded as latin-1; S3 keys are UTF-8.
        path = environ.get("PATH_INFO", "").encode("latin-1").decode("utf-8", "replace")
        host = environ.get("HTTP_HOST", "").rsplit(":", 1)[0]
        for suffix in (".localhost", f".{self.host}"):
            if host.endswith(suffix) and host != suffix[1:]:  # virtual-host style: bucket.localhost:PORT
                return host[: -len(suffix)], path[1:] or None, path
        parts = path[1:].split("/", 1)
        bucket = parts[0] or None
        key = parts[1] if len(parts) > 1 and parts[1] else None
        return bucket, key, path

    def _middleware(self, app: WsgiApp) -> WsgiApp:
        def handle(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            if environ.get("PATH_INFO", "").startswith("/moto-api"):
                return app(environ, start_response)
            bucket, key, path = self._locate(environ)
            method = environ.get("REQUEST_METHOD", "GET")
            with self._lock:
                fault = None
                if bucket is not None and bucket in self._denied:
                    fault = "AccessDenied"
                elif bucket is not None and self._throttled[bucket] > 0:
                    self._throttled[bucket] -= 1
                    fault = "SlowDown"
                self._requests.append(S3Request(method, path, environ.get("QUERY_STRING", ""), bucket, key, fault))
            if fault is None:
                if method == "HEAD" and key is not None and environ.get("HTTP_X_AMZ_CHECKSUM_MODE") == "ENABLED":
                    start_response = self._composite_checksum_as_s3(bucket, key, start_response)
                return app(environ, start_response)
            _drain(environ)
            return _error(fault, path, method, start_response)

        return handle

    def _composite_checksum_as_s3(
        self, bucket: Any, key: str, start_response: Callable[..., Any]
    ) -> Callable[..., Any]:
        """moto's HeadObject reports a multipart upload's COMPOSITE checksum (a checksum of the parts'
        checksums) bare, as if it were the whole object's; S3 says ``VALUE-PARTS`` with
        ``x-amz-checksum-type: COMPOSITE`` (moto's GetObject already does). Answer as S3 does."""
        try:
            obj = self._backend().get_object(bucket, key)
        except Exception:
            obj = None
        if obj is None or getattr(obj, "checksum_type", None) != "COMPOSITE" or not obj.checksum_parts:
            return start_response
        header = f"x-amz-checksum-{str(obj.checksum_algorithm).lower()}"
        value = f"{obj.checksum_value}-{obj.checksum_parts}"

        def patched(status: str, headers: list[tuple[str, str]], *args: Any) -> Any:
            headers = [(name, value if name.lower() == header else text) for name, text in headers]
            if not any(name.lower() == "x-amz-checksum-type" for name, _ in headers):
                headers.append(("x-amz-checksum-type", "COMPOSITE"))
            return start_response(status, headers, *args)

        return patched


def _drain(environ: dict[str, Any]) -> None:
    """Read the request body we will not use, so the kept-alive connection stays in step."""
    stream = environ.get("wsgi.input")
    if stream is None:
        return
    if environ.get("wsgi.input_terminated"):
        while stream.read(1 << 16):
            pass
        return
    remaining = int(environ.get("CONTENT_LENGTH") or 0)
    while remaining > 0:
        chunk = stream.read(min(remaining, 1 << 16))
        if not chunk:
            break
        remaining -= len(chunk)


def _error(code: str, resource: str, method: str, start_response: Callable[..., Any]) -> list[bytes]:
    status, message = _ERRORS[code]
    request_id = uuid.uuid4().hex[:16].upper()
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message><Resource>{resource}</Resource>"
        f"<RequestId>{request_id}</RequestId><HostId>opsflow-test</HostId></Error>"
    ).encode()
    if method == "HEAD":
        body = b""  # as S3: a HEAD error has no body, the client sees only the status
    start_response(
        status,
        [
            ("Content-Type", "application/xml"),
            ("Content-Length", str(len(body))),
            ("x-amz-request-id", request_id),
        ],
    )
    return [body]
