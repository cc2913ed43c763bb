"""Uptime probes: HTTP(S) with expectations and TLS expiry, and TCP connects — all services at once.

One aiohttp session per run probes every service concurrently, at most
:data:`MAX_IN_FLIGHT` at a time, each with its own time-out, under an overall
deadline shorter than the shortest interval, so a run finishes before the next
one starts even when targets hang. A service that refuses, times out or answers
wrongly is *down* (``ok=False`` with an error class and message) — a
measurement, not an exception::

    outcomes = asyncio.run(probe_all(config.services, deadline=50))
    outcomes[0].ok, outcomes[0].latency_ms, outcomes[0].error
    # (False, None, 'ConnectError: connection refused (127.0.0.1:5432)')

The client: aiohttp directly on the hot path. Measured on 2,000 loopback URLs
with 100 in flight (issue 19): httpx's own pool 238 probes/s, httpx's API over
an aiohttp transport (``httpx-aiohttp``) 3,428/s, bare aiohttp 7,046/s. The
transport route keeps httpx's request/response objects on every probe and
tops out near half of bare aiohttp (re-measured here: a bare ``httpx-aiohttp``
loop at 0.44 of a bare aiohttp loop, before any probe logic), short of SPEC
§8's 0.80; aiohttp directly (``bench probes``: 0.80–0.88 of a bare aiohttp
loop here) leaves only what a probe must add. What aiohttp does not do the way a probe needs is done here:

- redirects are followed by :meth:`ProbeClient.send`, one hop at a time, so the
  configured headers (API keys, tokens) and the URL's credentials never reach
  another origin (scheme, host, port — SPEC §7), nor do aiohttp's stand-ins
  for them (a configured ``Accept`` is not replaced by ``*/*`` there);
- the session does not decompress: :func:`_read_body` counts the raw bytes and
  inflates gzip/deflate itself, each capped at 1 MiB (a bomb reads as its first
  MiB); only those two encodings are asked for;
- time-outs are aiohttp's (:func:`_timeout`): the probe's ``timeout`` for the
  connection (TCP and TLS), again for each read, and a backstop a second later
  for the whole answer; none for the wait on the pool, which the in-flight cap
  keeps empty, so a queued probe is never judged down. The run's deadline is
  one timer for the run, not one per probe;
- one attempt: aiohttp's resend of an idempotent request on a dropped
  connection is switched off (SPEC §7: Prefect's task retries are the one
  policy);
- errors read as they did with httpx (``ConnectError: connection refused
  (HOST:PORT)``, ``ReadError``, ``RemoteProtocolError``, ``TooManyRedirects``,
  ``Timeout: no connection|answer|complete answer within …``): aiohttp's
  exceptions are translated into httpx's classes, which are this module's
  error vocabulary (:func:`connection_error`); secrets are redacted;
- TLS verification is httpx's (``httpx.create_ssl_context()``: ``SSL_CERT_FILE``
  / ``SSL_CERT_DIR`` or certifi's CAs), built on the run's first HTTPS request;
- proxies come from the environment (``HTTP(S)_PROXY``, ``ALL_PROXY``,
  ``NO_PROXY``) as httpx took them, read once per run rather than per request;
- certificate expiry (``tls_days_left``) is read from the connection, not per
  probe: the connector keeps the peer certificate of each TLS connection it
  opens and parses it only when it differs from the one already known for that
  origin — once per origin per run in practice, nothing on a reused connection.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import os
import socket
import ssl
import time
import urllib.request
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import httpx
import yarl

from opsflow.config import SecretCache, Service, resolve_headers
from opsflow.history_csv import ProbeRow
from opsflow.redact import redact
from opsflow.units import format_duration

MAX_BODY_BYTES = 1 << 20
MAX_CONNECTIONS = 100
# Probes in flight at once. A probe's time-out starts when it starts, so one queued behind a busy
# pool is never judged down; unbounded, a thousand requests contend for the pool and all slow down.
MAX_IN_FLIGHT = MAX_CONNECTIONS
# Past the deadline a probe is recorded as timed out, so the run always ends in time.
DEADLINE_SHARE_OF_INTERVAL = 0.8
BACKSTOP_SECONDS = 1.0


@dataclass(frozen=True)
class ProbeOutcome:
    """One probe of one service."""

    service: str
    checked_at: datetime
    ok: bool
    latency_ms: float | None
    status_code: int | None = None
    error: str | None = None
    tls_days_left: float | None = None

    def row(self) -> ProbeRow:
        return ProbeRow(self.service, self.checked_at, self.ok, self.latency_ms, self.status_code, self.error)


def run_deadline(services: Sequence[Service]) -> float:
    """Seconds a run may take: 80% of the shortest interval, and never less than the longest time-out."""
    if not services:
        return 0.0
    return max(min(s.interval for s in services) * DEADLINE_SHARE_OF_INTERVAL, max(s.timeout for s in services))


#: Short forms of the socket errors a probe meets, by errno (``ConnectError: connection refused (HOST:PORT)``).
SOCKET_ERRORS = {
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset",
    errno.ECONNABORTED: "connection aborted",
    errno.ETIMEDOUT: "connection timed out",
    errno.ENETUNREACH: "network unreachable",
    errno.EHOSTUNREACH: "host unreachable",
    errno.EHOSTDOWN: "host down",
    errno.EADDRNOTAVAIL: "address not available",
}
#: getaddrinfo's answers for a name that does not exist (the rest are failures to ask).
UNKNOWN_NAME = {getattr(socket, n) for n in ("EAI_NONAME", "EAI_NODATA", "EAI_ADDRFAMILY") if hasattr(socket, n)}


def _socket_error(exc: BaseException) -> str | None:
    """The short form of the socket error behind ``exc`` (itself, or what it wraps), None when there is none.

    TLS errors are left to their own message (they say what was wrong with the certificate)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLError):
            return None
        if isinstance(current, socket.gaierror):
            return "unknown host" if current.errno in UNKNOWN_NAME else "name resolution failed"
        if isinstance(current, OSError) and current.errno is not None:
            if current.errno in SOCKET_ERRORS:
                return SOCKET_ERRORS[current.errno]
            return (current.strerror or os.strerror(current.errno)).lower()
        current = current.__cause__ or current.__context__
    return None


def host_port(host: str, port: int | None) -> str:
    host = host.strip("[]")
    shown = f"[{host}]" if ":" in host else host
    return shown if port is None else f"{shown}:{port}"


def connection_error(exc: BaseException, target: str | None = None) -> str:
    """One line for a probe that got no answer: ``CLASS: what happened (HOST:PORT)``.

    Socket errors read the same for HTTP and TCP probes (``ConnectError: connection refused
    (127.0.0.1:5432)``, ``ConnectError: unknown host (db.invalid:5432)``); an httpx error keeps its class
    (``ConnectError``, ``ReadError``), a bare socket error of a TCP connect is a ``ConnectError``."""
    name = type(exc).__name__ if isinstance(exc, httpx.HTTPError) else "ConnectError"
    if target is None and isinstance(exc, httpx.RequestError):
        try:
            url = exc.request.url  # the request that failed: after a redirect, not the configured URL
            target = host_port(url.host, url.port or {"https": 443, "http": 80}.get(url.scheme))
        except RuntimeError:  # no request attached
            target = None
    short = _socket_error(exc)
    if short is not None:
        message = short if target is None else f"{short} ({target})"
    else:
        message = str(exc).strip() or type(exc).__name__
        name = type(exc).__name__
    return redact(f"{name}: {message}")[:500]


#: Redirect statuses a probe follows (with a ``Location``), at most :data:`MAX_REDIRECTS` of them.
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 20
#: The encodings a probe accepts: those :func:`_read_body` decompresses itself, with its cap.
ACCEPT_ENCODING = "gzip, deflate"
_DEFAULT_PORTS = {"https": 443, "http": 80}
_NEVER = float("inf")  # aiohttp's timers never rounded up to the next second (its default past 5 s)
_AIOHTTP_ACCEPT_ENCODING = aiohttp.ClientRequest.DEFAULT_HEADERS.get("Accept-Encoding")


def _origin(url: yarl.URL) -> tuple[str, str | None, int | None]:
    return url.scheme, url.host, url.port


def _redirect_method(method: str, status: int) -> str:
    """The method of the request that follows a redirect, as browsers (and httpx) do it."""
    if status == 303 and method != "HEAD":
        return "GET"
    if status in (301, 302) and method == "POST":
        return "GET"
    return method


def _as_httpx_error(exc: Exception, url: yarl.URL | str) -> httpx.HTTPError:
    """An aiohttp error as the httpx class that names it in a probe's error (``ConnectError``, ``ReadError``,
    ``RemoteProtocolError``): the vocabulary of :func:`connection_error`, whichever client met the error.
    ``url``: the request that failed (after a redirect, not the configured URL)."""
    try:
        request = httpx.Request("GET", str(url))  # names the target in the message (connection_error)
    except (httpx.InvalidURL, ValueError):
        request = None
    cause: BaseException = exc
    error: httpx.HTTPError
    if isinstance(exc, aiohttp.ClientConnectorError):
        cause = exc.os_error
        error = httpx.ConnectError(str(exc.os_error).strip() or type(exc.os_error).__name__, request=request)
    elif isinstance(exc, aiohttp.ServerDisconnectedError):
        error = httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request)
    elif isinstance(exc, aiohttp.ClientOSError):
        error = httpx.ReadError(str(exc).strip() or type(exc).__name__, request=request)
    elif isinstance(exc, aiohttp.TooManyRedirects):
        error = httpx.TooManyRedirects("Exceeded maximum allowed redirects.", request=request)
    elif isinstance(exc, aiohttp.InvalidURL):
        error = httpx.UnsupportedProtocol(f"Request URL is not a valid http(s) URL: {exc}", request=request)
    elif isinstance(exc, ValueError):  # a request aiohttp refuses to send (a header value with a newline, ...)
        error = httpx.LocalProtocolError(str(exc).strip() or type(exc).__name__, request=request)
    else:  # ClientPayloadError, ClientResponseError (a malformed answer), and the rest
        error = httpx.RemoteProtocolError(str(exc).strip() or type(exc).__name__, request=request)
    error.__cause__ = cause
    return error


class ProbeClient:
    """One run's HTTP client: one aiohttp session (pooled keep-alive connections, at most
    :data:`MAX_CONNECTIONS`), redirects followed here, no client-level retry, and the expiry of each
    origin's certificate read from its connections (see the module docstring)."""

    def __init__(self, max_connections: int = MAX_CONNECTIONS) -> None:
        self._ssl: ssl.SSLContext | None = None
        self._proxies = {k: v for k, v in urllib.request.getproxies().items() if v}
        #: Each HTTPS origin's certificate (DER) and its not-after, from the latest connection opened to it.
        self.certificates: dict[tuple[str, int], tuple[bytes, datetime | None]] = {}
        connector = _CertificateReadingConnector(
            self.certificates,
            limit=max_connections,
            limit_per_host=0,
            ttl_dns_cache=None,
            enable_cleanup_closed=False,
            timeout_ceil_threshold=_NEVER,
        )
        self.session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,  # _read_body decompresses, capped
            trust_env=False,  # proxies: from the environment once per run, below (not per request)
            raise_for_status=False,
            # aiohttp's own Accept-Encoding is "gzip, deflate" unless brotli or zstd is installed: then only
            # these two are asked for (per-request headers cost a header merge on every probe: avoided)
            headers=None if _AIOHTTP_ACCEPT_ENCODING == ACCEPT_ENCODING else {"Accept-Encoding": ACCEPT_ENCODING},
        )
        # One attempt (SPEC §7: Prefect's task retries are the one policy). aiohttp resends an idempotent
        # request once when its connection drops; it has no public switch for that, only this attribute
        # (tests/test_probe_client.py counts the connections, so an aiohttp that renames it fails there).
        self.session._retry_connection = False

    @property
    def ssl_context(self) -> ssl.SSLContext:
        """TLS verification as httpx does it (``SSL_CERT_FILE``/``SSL_CERT_DIR`` or certifi's CAs), built on
        the first HTTPS request (loading the CA bundle costs a run of plain-HTTP probes tens of ms)."""
        if self._ssl is None:
            self._ssl = httpx.create_ssl_context()
        return self._ssl

    def _proxy(self, url: yarl.URL) -> str | None:
        if not self._proxies:
            return None
        proxy = self._proxies.get(url.scheme) or self._proxies.get("all")
        if proxy is None or urllib.request.proxy_bypass_environment(url.host or "", self._proxies):
            return None
        return proxy

    def tls_days_left(self, url: yarl.URL, now: datetime) -> float | None:
        """Days until the certificate of ``url``'s origin expires, None for plain HTTP."""
        if url.scheme != "https":
            return None
        known = self.certificates.get((url.host or "", url.port or 443))
        if known is None or known[1] is None:
            return None
        return (known[1] - now).total_seconds() / 86400

    async def send(self, method: str, url: str, headers: Mapping[str, str], seconds: float) -> aiohttp.ClientResponse:
        """Send the request and follow its redirects (its body unread: the caller reads and releases it).
        The configured ``headers`` (API keys, tokens) go only to the configured URL's origin (scheme, host,
        port), never to another one (SPEC §7); a redirect's own body is never read. aiohttp errors are
        raised as the httpx errors that name them (:func:`_as_httpx_error`). ``seconds``: the probe's
        time-out (:func:`_timeout`); the backstop covers all the hops together."""
        current = yarl.URL(url)
        timeout = _timeout(seconds)
        started = time.monotonic()
        origin: tuple[str, str | None, int | None] | None = None
        origin_auth = auth = None  # the first request's credentials are the URL's own (aiohttp sends them)
        sent: Mapping[str, str] | None = headers or None
        skip: tuple[str, ...] | None = None
        hops = 0
        while True:
            try:
                response = await self.session.request(
                    method,
                    current,
                    headers=sent,
                    skip_auto_headers=skip,
                    auth=auth,
                    allow_redirects=False,
                    timeout=timeout,
                    ssl=self.ssl_context if current.scheme == "https" else True,
                    proxy=self._proxy(current) if self._proxies else None,
                )
            except (aiohttp.ClientError, ValueError) as exc:
                if isinstance(exc, TimeoutError):
                    raise
                error = _as_httpx_error(exc, current)
                raise error from error.__cause__
            location = response.headers.get("Location") if response.status in REDIRECT_STATUSES else None
            if location is None:
                return response
            response.release()
            hops += 1
            try:
                following = current.join(yarl.URL(location))
            except ValueError as exc:
                raise httpx.RemoteProtocolError(f"Invalid URL in location header: {exc}.") from None
            if hops > MAX_REDIRECTS:
                raise httpx.TooManyRedirects("Exceeded maximum allowed redirects.")
            if following.scheme not in _DEFAULT_PORTS or not following.host:
                raise httpx.UnsupportedProtocol(f"Request URL has an unsupported protocol '{following.scheme}://'.")
            if current.fragment and not following.fragment:
                following = following.with_fragment(current.fragment)
            method = _redirect_method(method, response.status)
            if origin is None:  # the configured URL: at the first redirect, current still is
                origin, origin_auth = _origin(current), aiohttp.BasicAuth.from_url(current)
            if _origin(following) != origin:
                # Another origin: none of the configured headers, nor aiohttp's own stand-ins for them
                # (a configured Accept is not replaced by aiohttp's "*/*" there: it is not sent at all),
                # nor the configured URL's credentials; and none of them again on a way back (as httpx).
                sent, skip, auth, origin_auth = None, (tuple(headers) or None), None, None
            else:  # the URL's credentials stay on its origin, as httpx kept them
                auth = None if following.user is not None else origin_auth
            left = seconds + BACKSTOP_SECONDS - (time.monotonic() - started)
            if left <= 0:
                raise TimeoutError
            timeout = aiohttp.ClientTimeout(
                total=left, connect=None, sock_connect=seconds, sock_read=seconds, ceil_threshold=_NEVER
            )
            current = following


class _CertificateReadingConnector(aiohttp.TCPConnector):
    """A connector that keeps the peer certificate of each TLS connection it opens (DER, parsed only when
    it changed): a probe's certificate expiry costs nothing on a reused connection."""

    def __init__(self, certificates: dict[tuple[str, int], tuple[bytes, datetime | None]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._certificates = certificates

    async def _create_connection(self, req: Any, traces: Any, timeout: aiohttp.ClientTimeout) -> Any:
        protocol = await super()._create_connection(req, traces, timeout)
        if req.is_ssl():
            transport = protocol.transport
            ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
            der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
            key = (req.url.host or "", req.url.port or 443)
            if der and self._certificates.get(key, (None,))[0] != der:
                self._certificates[key] = (der, _not_after(der))
        return protocol


def _not_after(der: bytes) -> datetime | None:
    from cryptography import x509

    try:
        return x509.load_der_x509_certificate(der).not_valid_after_utc
    except ValueError:
        return None


#: Content-Encodings a probe decompresses itself, with a cap (zlib's ``wbits``); others are read as they are.
_ZLIB_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


async def _read_body(response: aiohttp.ClientResponse) -> tuple[bytes, bool]:
    """At most :data:`MAX_BODY_BYTES` of the body, both on the wire and decompressed (a gzip bomb reads
    as its first MiB, not as the 50 MB it inflates to); and whether the body went on past that.

    The session does not decompress (``auto_decompress=False``): the raw bytes are counted here, and
    aiohttp's stream buffers at most its read buffer (64 KiB) ahead of this loop."""
    encoding = response.headers.get("Content-Encoding")
    encodings = [e.strip().lower() for e in encoding.split(",")] if encoding else []
    encodings = [e for e in encodings if e and e != "identity"]
    wbits = _ZLIB_WBITS.get(encodings[0]) if len(encodings) == 1 else None
    decoder = zlib.decompressobj(wbits) if wbits is not None else None
    body = bytearray()
    wire = 0
    stream = response.content
    try:
        while raw := await stream.readany():
            wire += len(raw)
            if decoder is None:
                body += raw
            else:
                try:
                    body += decoder.decompress(raw, MAX_BODY_BYTES - len(body))
                except zlib.error:
                    if wbits != zlib.MAX_WBITS or body or wire > len(raw):
                        raise
                    # "deflate" sent raw, without the zlib wrapper (as httpx reads it too)
                    wbits = -zlib.MAX_WBITS
                    decoder = zlib.decompressobj(wbits)
                    body += decoder.decompress(raw, MAX_BODY_BYTES - len(body))
            if len(body) >= MAX_BODY_BYTES or wire >= MAX_BODY_BYTES:
                return bytes(body[:MAX_BODY_BYTES]), True
    except zlib.error as exc:
        raise httpx.DecodingError(f"cannot decode the {encodings[0]} body: {exc}") from None
    except aiohttp.ClientError as exc:
        if isinstance(exc, TimeoutError):
            raise
        error = _as_httpx_error(exc, response.url)
        raise error from error.__cause__
    return bytes(body), False


class ProbeHeaders(dict[str, dict[str, str]]):
    """Each service's request headers by service name, secrets resolved (:func:`resolve_probe_headers`).
    Its repr names the headers, never their values."""

    def __repr__(self) -> str:
        return f"ProbeHeaders({ {service: sorted(headers) for service, headers in self.items()} })"


def resolve_probe_headers(services: Sequence[Service], secrets: SecretCache | None = None) -> ProbeHeaders:
    """The configured headers of every service, each secret block loaded once (through one
    :class:`SecretCache` for the call unless given). Call it once per run, before probing: never inside
    the event loop, where a block's load would stall every probe in flight."""
    secrets = SecretCache() if secrets is None else secrets
    return ProbeHeaders({s.name: resolve_headers(s.headers, secrets) for s in services if s.headers})


@functools.lru_cache(maxsize=64)
def _timeout(seconds: float) -> aiohttp.ClientTimeout:
    """A probe's time-outs: ``seconds`` for the connection (TCP and TLS handshake), then ``seconds`` for each
    read, and a backstop :data:`BACKSTOP_SECONDS` later for the whole answer (one that trickles in slower
    than a read time-out notices); none for the wait on the pool, which the in-flight cap keeps empty (a
    queued probe is never judged down). aiohttp's own timers: no second timer per probe around them, and
    never rounded up to the next second (aiohttp's default past 5 s), so each fires when it says."""
    return aiohttp.ClientTimeout(
        total=seconds + BACKSTOP_SECONDS, connect=None, sock_connect=seconds, sock_read=seconds, ceil_threshold=_NEVER
    )


def _timeout_phase(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ConnectionTimeoutError | httpx.ConnectTimeout):
        return "connection"
    if isinstance(exc, aiohttp.SocketTimeoutError | httpx.ReadTimeout):
        return "answer"
    return "complete answer"


async def probe_http(client: ProbeClient, service: Service, headers: Mapping[str, str] | None = None) -> ProbeOutcome:
    """Request ``service.url`` and judge status, body, latency; the certificate's expiry on HTTPS.
    ``headers``: the service's headers, secrets resolved (:func:`resolve_probe_headers`); None sends the
    plain ones only (a secret is never loaded here, inside the event loop)."""
    if service.url is None:
        raise ValueError(f"service {service.name!r} has no url: probe it with probe_tcp")
    checked_at = datetime.now(UTC)
    started = time.perf_counter()
    expect = service.expect
    if headers is None:
        headers = {name: value for name, value in service.headers.items() if isinstance(value, str)}
    try:
        # aiohttp's own time-outs (_timeout) end a hung connect, TLS handshake or read cleanly, and the
        # whole answer (body included) at the backstop.
        response = await client.send(service.method, str(service.url), headers, service.timeout)
        try:
            body, cut = b"", False
            if expect.body_contains is not None:
                body, cut = await _read_body(response)
        finally:
            response.release()
    except (TimeoutError, httpx.TimeoutException) as exc:
        return ProbeOutcome(
            service.name,
            checked_at,
            False,
            None,
            error=f"Timeout: no {_timeout_phase(exc)} within {format_duration(service.timeout)}",
        )
    except httpx.HTTPError as exc:
        return ProbeOutcome(service.name, checked_at, False, None, error=connection_error(exc))
    latency_ms = (time.perf_counter() - started) * 1000
    status = response.status
    tls_days = client.tls_days_left(response.url, checked_at) if client.certificates else None

    def down(error: str) -> ProbeOutcome:
        return ProbeOutcome(service.name, checked_at, False, latency_ms, status, error, tls_days)

    if status not in expect.status:
        return down(f"UnexpectedStatus: HTTP {status}, expected {', '.join(map(str, expect.status))}")
    if expect.body_contains is not None and expect.body_contains.encode() not in body:
        within = f" in its first {MAX_BODY_BYTES >> 20} MiB" if cut else ""
        return down(f"UnexpectedBody: the body does not contain {expect.body_contains!r}{within}")
    if expect.max_latency is not None and latency_ms > expect.max_latency * 1000:
        return down(f"TooSlow: answered in {latency_ms:.0f}ms, limit {format_duration(expect.max_latency)}")
    return ProbeOutcome(service.name, checked_at, True, latency_ms, status, None, tls_days)


async def probe_tcp(service: Service) -> ProbeOutcome:
    """Open (and close) a TCP connection to ``host:port``."""
    if service.tcp is None:
        raise ValueError(f"service {service.name!r} has no tcp address: probe it with probe_http")
    host, _, port = service.tcp.rpartition(":")
    checked_at = datetime.now(UTC)
    started = time.perf_counter()
    try:
        async with asyncio.timeout(service.timeout):
            _, writer = await asyncio.open_connection(host.strip("[]"), int(port))
        writer.close()
        await writer.wait_closed()
    except TimeoutError:
        return ProbeOutcome(
            service.name,
            checked_at,
            False,
            None,
            error=f"Timeout: no connection within {format_duration(service.timeout)}",
        )
    except OSError as exc:
        return ProbeOutcome(
            service.name, checked_at, False, None, error=connection_error(exc, host_port(host, int(port)))
        )
    return ProbeOutcome(service.name, checked_at, True, (time.perf_counter() - started) * 1000)


def new_client(services: Sequence[Service] = ()) -> ProbeClient:
    """One client for the run: pooled connections, redirects followed, no client-level retry."""
    return ProbeClient(MAX_CONNECTIONS)


async def probe_all(
    services: Sequence[Service],
    deadline: float | None = None,
    max_in_flight: int = MAX_IN_FLIGHT,
    headers: Mapping[str, Mapping[str, str]] | None = None,
) -> list[ProbeOutcome]:
    """Probe every service concurrently, at most ``max_in_flight`` at a time; a probe still running at
    ``deadline`` seconds is a time-out. ``headers``: each service's headers as :func:`resolve_probe_headers`
    gives them (resolved once per run, before this); None resolves them here once, in a worker thread,
    before the first probe."""
    if not services:
        return []
    if headers is None:
        # in a worker thread (a secret block's load blocks); not even started when no service has headers
        headers = await asyncio.to_thread(resolve_probe_headers, services) if any(s.headers for s in services) else {}
    resolved = headers
    deadline = run_deadline(services) if deadline is None else deadline
    run_started = datetime.now(UTC)
    in_flight = asyncio.Semaphore(max_in_flight)
    client = new_client(services)
    async with client.session:

        async def one(service: Service) -> ProbeOutcome:
            async with in_flight:
                if service.url:
                    return await probe_http(client, service, resolved.get(service.name, {}))
                return await probe_tcp(service)

        # One timer for the run's deadline (queueing included), not one per probe: ten thousand timers in the
        # event loop's heap would slow every timer the probes set. A probe still running at it is cancelled.
        tasks = [asyncio.ensure_future(one(service)) for service in services]
        try:
            _, late = await asyncio.wait(tasks, timeout=deadline)
        finally:
            for task in tasks:
                task.cancel()  # a no-op on a finished one
        if late:
            await asyncio.wait(late)  # cancelled probes unwind (their connections closed) before the session
        timed_out = f"Timeout: the run's deadline of {format_duration(deadline)} passed"
        return [
            ProbeOutcome(service.name, run_started, False, None, error=timed_out) if task.cancelled() else task.result()
            for task, service in zip(tasks, services, strict=True)
        ]


def outcome_metrics(outcome: ProbeOutcome, incident_open: bool) -> dict[str, Any]:
    """The uptime-probe item's metrics (SPEC §5)."""
    metrics: dict[str, Any] = {
        "ok": outcome.ok,
        "latency_ms": None if outcome.latency_ms is None else round(outcome.latency_ms, 3),
        "status_code": outcome.status_code,
        "error": outcome.error,
        "incident_open": incident_open,
    }
    if outcome.tls_days_left is not None:
        metrics["tls_days_left"] = round(outcome.tls_days_left, 2)
    return metrics
