"""The probe client (aiohttp, tasks/probes.py) at its edges, against real loopback servers: what opsflow
re-implements on top of aiohttp — redirects and their headers, the 1 MiB body limit on the wire and
decompressed, time-outs and their messages, one attempt, certificate expiry from the connection."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import threading
import time
import tracemalloc
import urllib.parse
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from opsflow.config import Service
from tasks.probes import MAX_BODY_BYTES, ProbeOutcome, probe_all
from tests.http_targets import HttpTarget, silent_port
from tests.tls_certs import TestPki, server_context

NEEDLE = b"NEEDLE-ok"
#: 4 MiB of random bytes: incompressible, so its gzip is over 1 MiB on the wire too.
RANDOM = os.urandom(4 << 20)


def _deflate_bomb(megabytes: int = 50) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    return b"".join(compressor.compress(zeros) for _ in range(megabytes)) + compressor.flush()


class _Edges(BaseHTTPRequestHandler):
    """Answers at the limits: big bodies, bombs, slow and trickling answers, redirect loops."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        path = self.path.partition("?")[0]
        self.server.requests.append((path, dict(self.headers)))  # type: ignore[attr-defined]
        encoding = None
        if path == "/wire-over-1mib":  # 3 MiB, the needle after the first 2 MiB
            body = bytes(2 << 20) + NEEDLE + bytes(1 << 20)
        elif path == "/wire-under-1mib":
            body = bytes(MAX_BODY_BYTES - 100) + NEEDLE
        elif path == "/gzip-over-1mib-on-the-wire":  # compressed, still > 1 MiB: cut on the wire
            encoding, body = "gzip", _gzip(RANDOM + NEEDLE)
        elif path == "/deflate-bomb":
            encoding, body = "deflate", _deflate_bomb()
        elif path == "/raw-deflate":  # "deflate" sent without its zlib wrapper
            compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
            encoding, body = "deflate", compressor.compress(NEEDLE) + compressor.flush()
        elif path == "/slow-answer":
            time.sleep(2)
            body = NEEDLE
        elif path == "/trickle":  # headers at once, then a byte every 0.2 s: never a read time-out
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            with contextlib.suppress(OSError):
                for _ in range(100):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.2)
            return
        elif path == "/loop":
            self.send_response(302)
            self.send_header("Location", "/loop")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        elif path == "/queued":
            time.sleep(0.3)
            body = NEEDLE
        else:
            body = NEEDLE
        self.send_response(200)
        if encoding:
            self.send_header("Content-Encoding", encoding)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(OSError):  # a probe stops reading at 1 MiB
            self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def _gzip(data: bytes) -> bytes:
    compressor = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


@contextlib.contextmanager
def edges() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Edges)
    server.daemon_threads = True
    server.requests = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def service(name: str, **fields: object) -> Service:
    return Service(name=name, **({"timeout": 2.0, "interval": 60.0} | fields))


def verdicts(services: list[Service], **kwargs: Any) -> dict[str, ProbeOutcome]:
    return {o.service: o for o in asyncio.run(probe_all(services, **kwargs))}


def test_a_body_is_read_to_1_mib_on_the_wire_and_decompressed() -> None:
    needle = {"body_contains": NEEDLE.decode()}
    with edges() as base:
        services = [
            service("over", url=f"{base}/wire-over-1mib", expect=needle),
            service("under", url=f"{base}/wire-under-1mib", expect=needle),
            service("gzip-wire", url=f"{base}/gzip-over-1mib-on-the-wire", expect=needle),
            service("deflate-bomb", url=f"{base}/deflate-bomb", expect=needle, timeout=5.0),
            service("raw-deflate", url=f"{base}/raw-deflate", expect=needle),
        ]
        tracemalloc.start()
        try:
            results = verdicts(services)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    cut = f"UnexpectedBody: the body does not contain {NEEDLE.decode()!r} in its first 1 MiB"
    assert results["under"].ok, results["under"].error
    assert results["raw-deflate"].ok, results["raw-deflate"].error
    for name in ("over", "gzip-wire", "deflate-bomb"):
        assert (results[name].ok, results[name].status_code, results[name].error) == (False, 200, cut), name
    # 3 MiB + a 4 MiB gzip + a 50 MB deflate bomb, all read to their first MiB only
    assert peak < 16 << 20, f"peak {peak / 2**20:.1f} MiB"


def test_time_outs_end_each_phase_with_its_own_message() -> None:
    with edges() as base, silent_port() as hung:
        started = time.perf_counter()
        results = verdicts(
            [
                service("no-answer", url=f"{base}/slow-answer", timeout=0.5),
                service("trickle", url=f"{base}/trickle", timeout=0.5, expect={"body_contains": "done"}),
                service("no-handshake", url=f"https://127.0.0.1:{hung}/", timeout=0.5),
            ]
        )
        elapsed = time.perf_counter() - started
    assert results["no-answer"].error == "Timeout: no answer within 500ms"
    assert results["no-handshake"].error == "Timeout: no connection within 500ms"
    # each byte comes within the read time-out; the backstop (1 s later) ends the whole answer
    assert results["trickle"].error == "Timeout: no complete answer within 500ms"
    assert all(not o.ok and o.latency_ms is None for o in results.values())
    assert elapsed < 2.5


def test_a_queued_probe_is_not_judged_by_the_time_it_waited() -> None:
    """Ten probes of 0.3 s, one at a time, each with a 0.5 s time-out: the last one starts after 2.7 s."""
    with edges() as base:
        results = verdicts(
            [service(f"q{n}", url=f"{base}/queued?{n}", timeout=0.5) for n in range(10)], max_in_flight=1
        )
    assert all(o.ok for o in results.values()), [o.error for o in results.values() if not o.ok]
    assert max(o.latency_ms or 0 for o in results.values()) < 500


def test_redirects_are_capped_and_a_loop_is_a_down_probe() -> None:
    with edges() as base:
        results = verdicts([service("loop", url=f"{base}/loop")])
    assert results["loop"].error == "TooManyRedirects: Exceeded maximum allowed redirects."


def test_credentials_and_headers_stay_on_the_configured_origin() -> None:
    """The URL's own credentials and the configured headers go to its origin, same-origin redirects included;
    another origin (here: another port) gets neither, nor aiohttp's stand-ins for the configured headers."""
    headers = {"X-Api-Key": "k-123", "Accept": "application/json", "User-Agent": "probe-7"}
    with HttpTarget() as origin, HttpTarget() as other:
        cross = "/redirect-to?" + urllib.parse.quote(other.url("/health"), safe="")
        with_credentials = origin.url(cross).replace("http://", "http://ops:s3cr%21t@")
        same = origin.url("/redirect").replace("http://", "http://ops:s3cr%21t@")
        results = verdicts(
            [
                service("cross", url=with_credentials, headers=headers, expect={"body_contains": '"ok"'}),
                service("same", url=same, headers=headers, expect={"body_contains": '"ok"'}),
            ]
        )
        assert results["cross"].ok and results["same"].ok
        basic = "Basic " + base64.b64encode(b"ops:s3cr!t").decode()
        at_origin = [{k.lower(): v for k, v in h.items()} for _, h in origin.requests]
        assert len(at_origin) == 3  # /redirect-to, /redirect, /health
        assert all(h["authorization"] == basic and h["x-api-key"] == "k-123" for h in at_origin)
        assert all(h["accept"] == "application/json" and h["user-agent"] == "probe-7" for h in at_origin)
        at_other = [{k.lower() for k in h} for _, h in other.requests]
        assert at_other and all(not {"authorization", "x-api-key", "accept", "user-agent"} & h for h in at_other)


def test_one_attempt_per_probe_and_the_socket_error_vocabulary() -> None:
    """A server that accepts and closes at once: one connection (no client-level retry; Prefect's task
    retries are the one policy), and the error names what happened and where."""
    accepted: list[int] = []
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            accepted.append(1)
            conn.recv(65536)
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        port = listener.getsockname()[1]
        results = verdicts([service("closes", url=f"http://127.0.0.1:{port}/health")])
    finally:
        stop.set()
        thread.join()
        listener.close()
    assert accepted == [1]
    assert results["closes"].error == "RemoteProtocolError: Server disconnected without sending a response."


NOW = datetime.now(UTC).replace(microsecond=0)


def test_certificate_expiry_is_read_from_the_connection_once_per_origin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pki = TestPki.create(not_after=NOW + timedelta(days=400))
    soon = pki.chain_files(tmp_path, pki.leaf("localhost", NOW + timedelta(days=20, hours=12)), "soon")
    later = pki.chain_files(tmp_path, pki.leaf("localhost", NOW + timedelta(days=90)), "later")
    trust = tmp_path / "root.pem"
    trust.write_bytes(pki.root.pem)
    monkeypatch.setenv("SSL_CERT_FILE", str(trust))  # verification as today: the run trusts this CA only

    from tasks import probes

    parsed: list[bytes] = []
    original = probes._not_after

    def counting(der: bytes) -> datetime | None:
        parsed.append(der)
        return original(der)

    monkeypatch.setattr(probes, "_not_after", counting)
    with HttpTarget(tls=server_context(soon)) as first, HttpTarget(tls=server_context(later)) as second:
        services = [service(f"a{n}", url=first.url(f"/health?{n}")) for n in range(6)]
        services += [service("b", url=second.url()), service("plain", url=first.url().replace("https", "http"))]
        results = verdicts(services, max_in_flight=2)
    for n in range(6):
        days = results[f"a{n}"].tls_days_left
        assert results[f"a{n}"].ok and days is not None and 20.4 < days < 20.6
    assert results["b"].tls_days_left is not None and 89.9 < results["b"].tls_days_left < 90.1
    assert len(parsed) == 2  # once per origin, however many probes and connections
    assert results["plain"].tls_days_left is None and not results["plain"].ok


def test_an_untrusted_certificate_is_a_down_probe_saying_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pki = TestPki.create(not_after=NOW + timedelta(days=400))
    files = pki.chain_files(tmp_path, pki.leaf("localhost", NOW + timedelta(days=30)))
    other = TestPki.create(not_after=NOW + timedelta(days=400))
    trust = tmp_path / "other-root.pem"
    trust.write_bytes(other.root.pem)
    monkeypatch.setenv("SSL_CERT_FILE", str(trust))
    with HttpTarget(tls=server_context(files)) as target:
        results = verdicts([service("untrusted", url=target.url())])
    error = results["untrusted"].error or ""
    assert error.startswith("ConnectError: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"), error
    assert results["untrusted"].tls_days_left is None
