"""A real HTTP server on loopback that records what it is sent and answers as told.

Used as the far end of webhooks (Slack, PagerDuty Events API, generic webhooks,
Prefect notification blocks): tests read ``received`` and inject faults with
``fail_next(path, status, times)``.

>>> with HttpReceiver() as receiver:                           # doctest: +SKIP
...     receiver.fail_next("/slack", 503, times=2)
...     httpx.post(receiver.url("/slack"), json={"text": "hi"})
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict, deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class ReceivedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class HttpReceiver:
    def __init__(self) -> None:
        self.received: list[ReceivedRequest] = []
        self._faults: dict[str, deque[int]] = defaultdict(deque)
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = self.path.split("?", 1)[0]
                with receiver._arrived:
                    receiver.received.append(ReceivedRequest(self.command, self.path, dict(self.headers), body))
                    faults = receiver._faults[path]
                    status = faults.popleft() if faults else 202 if path.endswith("/enqueue") else 200
                    receiver._arrived.notify_all()
                payload = b'{"status": "success"}' if status < 400 else b'{"error": "injected"}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_POST = do_GET = do_PUT = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> HttpReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def fail_next(self, path: str, status: int, times: int = 1) -> None:
        """Answer the next ``times`` requests to ``path`` with ``status``."""
        with self._lock:
            self._faults[path].extend([status] * times)

    def to(self, path: str) -> list[ReceivedRequest]:
        """Requests received on ``path`` (query string ignored)."""
        with self._lock:
            return [r for r in self.received if r.path.split("?", 1)[0] == path]

    def wait_for(self, path: str, count: int = 1, timeout: float = 30.0) -> list[ReceivedRequest]:
        """Block until ``count`` requests reached ``path``; return them (fewer on time-out)."""
        with self._arrived:
            self._arrived.wait_for(
                lambda: sum(1 for r in self.received if r.path.split("?", 1)[0] == path) >= count, timeout
            )
        return self.to(path)
