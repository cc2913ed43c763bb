"""Uptime probes: HTTP(S) with expectations and TLS expiry, and TCP connects — all services at once.

One async httpx client per run probes every service concurrently, each with
its own time-out, under an overall deadline shorter than the shortest
interval, so a run finishes before the next one starts even when targets hang.
A service that refuses, times out or answers wrongly is *down* (``ok=False``
with an error class and message) — a measurement, not an exception::

    outcomes = asyncio.run(probe_all(config.services, deadline=50))
    outcomes[0].ok, outcomes[0].latency_ms, outcomes[0].error
    # (False, None, 'ConnectError: connection refused (127.0.0.1:5432)')
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import ssl
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

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


def _tls_days_left(response: httpx.Response, now: datetime) -> float | None:
    stream = response.extensions.get("network_stream")
    ssl_object = stream.get_extra_info("ssl_object") if stream is not None else None
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return None
    from cryptography import x509

    expires = x509.load_der_x509_certificate(der).not_valid_after_utc
    return (expires - now).total_seconds() / 86400


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


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port or {"https": 443, "http": 80}.get(url.scheme)


async def _send_following_redirects(
    client: httpx.AsyncClient, request: httpx.Request, headers: dict[str, str]
) -> httpx.Response:
    """Send ``request`` (streamed) and follow its redirects; the configured ``headers`` (API keys, tokens)
    go only to the configured URL's origin (scheme, host, port), never to another one (SPEC §7).

    A redirect's own body is never read."""
    response = await client.send(request, stream=True, follow_redirects=False)
    origin = _origin(request.url)
    hops = 0
    while response.next_request is not None:
        following = response.next_request
        await response.aclose()
        hops += 1
        if hops > client.max_redirects:
            raise httpx.TooManyRedirects("Exceeded maximum allowed redirects.", request=following)
        if headers and _origin(following.url) != origin:
            for name in headers:
                following.headers.pop(name, None)
        response = await client.send(following, stream=True, follow_redirects=False)
    return response


#: Content-Encodings a probe decompresses itself, with a cap (zlib's ``wbits``); others are read as they are.
_ZLIB_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


async def _read_body(response: httpx.Response) -> tuple[bytes, bool]:
    """At most :data:`MAX_BODY_BYTES` of the body, both on the wire and decompressed (a gzip bomb reads
    as its first MiB, not as the 50 MB it inflates to); and whether the body went on past that."""
    encodings = [e.strip().lower() for e in response.headers.get("content-encoding", "").split(",")]
    encodings = [e for e in encodings if e and e != "identity"]
    wbits = _ZLIB_WBITS.get(encodings[0]) if len(encodings) == 1 else None
    decoder = zlib.decompressobj(wbits) if wbits is not None else None
    body = bytearray()
    wire = 0
    try:
        async for raw in response.aiter_raw():
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
        raise httpx.DecodingError(f"cannot decode the {encodings[0]} body: {exc}", request=response.request) from None
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


async def probe_http(
    client: httpx.AsyncClient, service: Service, headers: Mapping[str, str] | None = None
) -> ProbeOutcome:
    """Request ``service.url`` and judge status, body, latency; read the certificate's expiry on HTTPS.
    ``headers``: the service's headers, secrets resolved (:func:`resolve_probe_headers`); None sends the
    plain ones only (a secret is never loaded here, inside the event loop)."""
    if service.url is None:
        raise ValueError(f"service {service.name!r} has no url: probe it with probe_tcp")
    checked_at = datetime.now(UTC)
    started = time.perf_counter()
    expect = service.expect
    try:
        # httpx's own time-outs end a hung connect, TLS handshake or read cleanly; the outer one is a backstop
        # (cancelling a TLS handshake from outside leaks its transport).
        async with asyncio.timeout(service.timeout + BACKSTOP_SECONDS):
            if headers is None:
                headers = {name: value for name, value in service.headers.items() if isinstance(value, str)}
            headers = dict(headers)
            request = client.build_request(service.method, str(service.url), headers=headers, timeout=service.timeout)
            response = await _send_following_redirects(client, request, headers)
            try:
                tls_days = _tls_days_left(response, checked_at)
                body, cut = b"", False
                if expect.body_contains is not None:
                    body, cut = await _read_body(response)
            finally:
                await response.aclose()
    except (TimeoutError, httpx.TimeoutException) as exc:
        phase = {httpx.ConnectTimeout: "connection", httpx.ReadTimeout: "answer"}.get(type(exc), "complete answer")
        return ProbeOutcome(
            service.name,
            checked_at,
            False,
            None,
            error=f"Timeout: no {phase} within {format_duration(service.timeout)}",
        )
    except httpx.HTTPError as exc:
        return ProbeOutcome(service.name, checked_at, False, None, error=connection_error(exc))
    latency_ms = (time.perf_counter() - started) * 1000
    status = response.status_code

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


def new_client(services: Sequence[Service]) -> httpx.AsyncClient:
    """One client for the run: pooled connections, redirects followed, no transport-level retry."""
    limits = httpx.Limits(max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_CONNECTIONS)
    return httpx.AsyncClient(
        limits=limits,
        follow_redirects=True,
        timeout=max((s.timeout for s in services), default=5.0),
        transport=httpx.AsyncHTTPTransport(retries=0, limits=limits),
    )


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
        headers = await asyncio.to_thread(resolve_probe_headers, services)
    resolved = headers
    deadline = run_deadline(services) if deadline is None else deadline
    run_ends = asyncio.get_running_loop().time() + deadline  # one deadline for the run, queueing included
    in_flight = asyncio.Semaphore(max_in_flight)
    async with new_client(services) as client:

        async def one(service: Service) -> ProbeOutcome:
            started = datetime.now(UTC)
            try:
                async with asyncio.timeout_at(run_ends):
                    async with in_flight:
                        if service.url:
                            return await probe_http(client, service, resolved.get(service.name, {}))
                        return await probe_tcp(service)
            except TimeoutError:
                return ProbeOutcome(
                    service.name,
                    started,
                    False,
                    None,
                    error=f"Timeout: the run's deadline of {format_duration(deadline)} passed",
                )

        return list(await asyncio.gather(*(one(service) for service in services)))


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
