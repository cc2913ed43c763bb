"""What ``opsflow demo`` runs besides Prefect: child processes it can always stop, a sample HTTP
service that fails now and then, and an SMTP sink.

Every process the demo starts (and everything those start: flow runs, drill databases, the
embedded PostgreSQL) carries ``OPSFLOW_DEMO=<demo dir>`` in its environment, so the demo, or
the next one after a ``kill -9``, finds and stops exactly them (:func:`stop_marked`) and never
anything else. Children run in their own session (a Ctrl-C in the terminal reaches only the demo,
which stops them in order) and, on Linux, get SIGTERM when the demo dies.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any

import psutil

#: Environment variable marking every process of one demo: its value is the demo directory.
MARKER = "OPSFLOW_DEMO"

# Exec'd in front of each child on Linux: die with the demo (PR_SET_PDEATHSIG), then become the child.
_DIE_WITH_PARENT = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit(1)\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Nothing listens on ``port`` (connections of a server gone a moment ago, in TIME_WAIT, do not count:
    servers bind with SO_REUSEADDR)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def first_free_port(start: int, tries: int = 100, avoid: Sequence[int] = ()) -> int:
    """``start``, or the next port after it that nothing listens on."""
    for port in range(start, start + tries):
        if port not in avoid and port_is_free(port):
            return port
    raise OSError(f"no free port in {start}..{start + tries - 1}")


# -- child processes ----------------------------------------------------------------------------


@dataclass
class Child:
    """A process the demo started, in a session (and process group) of its own."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    _log: IO[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.rstrip().splitlines()[-lines:])

    def stop(self, timeout: float = 20.0, first: int = signal.SIGTERM) -> None:
        """Signal it, wait up to ``timeout`` s, then kill what is left of its process group."""
        if self.running():
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(first)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout)
        for sig, pause in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 0.0)):
            try:
                os.killpg(self.pid, sig)  # its own children (same group) too
            except (ProcessLookupError, PermissionError):
                break
            time.sleep(pause)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)
        self._log.close()


def spawn(name: str, argv: Sequence[str], env: Mapping[str, str], log_path: Path, cwd: Path | None = None) -> Child:
    """Start ``argv`` in a new session, output to ``log_path``. Call from the main thread (on Linux the
    child is told when the thread that started it ends)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = log_path.open("ab")
    command = list(argv)
    if sys.platform.startswith("linux"):
        command = [sys.executable, "-c", _DIE_WITH_PARENT, str(os.getpid()), *command]
    process = subprocess.Popen(
        command,
        env=dict(env),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return Child(name=name, process=process, log_path=log_path, _log=log)


def marked_processes(demo_dir: Path) -> list[psutil.Process]:
    """Every process (but this one) whose environment marks it as part of the demo in ``demo_dir``."""
    value = str(demo_dir)
    found = []
    for proc in psutil.process_iter():
        if proc.pid == os.getpid():
            continue
        try:
            if proc.environ().get(MARKER) == value:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
            continue
    return found


def _is_postmaster(proc: psutil.Process) -> bool:
    try:
        parent = proc.parent()
        return proc.name() == "postgres" and (parent is None or parent.name() != "postgres")
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def stop_marked(demo_dir: Path, grace: float = 10.0) -> int:
    """Stop every process marked for ``demo_dir``: first the outermost ones (a PostgreSQL with a fast
    shutdown, others with SIGTERM), then whatever is left, then SIGKILL. Returns how many there were."""
    procs = marked_processes(demo_dir)
    if not procs:
        return 0
    pids = {proc.pid for proc in procs}

    def signal_all(chosen: list[psutil.Process]) -> None:
        for proc in chosen:
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                proc.send_signal(signal.SIGINT if _is_postmaster(proc) else signal.SIGTERM)

    def outermost(proc: psutil.Process) -> bool:
        try:
            return proc.ppid() not in pids
        except psutil.NoSuchProcess:
            return False

    signal_all([proc for proc in procs if outermost(proc)])
    _, alive = psutil.wait_procs(procs, timeout=grace)
    if alive:
        signal_all(alive)
        _, alive = psutil.wait_procs(alive, timeout=5)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            proc.kill()
    psutil.wait_procs(alive, timeout=5)
    return len(procs)


def wait_for_port(port: int, child: Child | None, timeout: float, host: str = "127.0.0.1") -> None:
    """Until something accepts connections on ``port``; :class:`RuntimeError` when ``child`` exits first."""
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket() as sock:
            sock.settimeout(1)
            if sock.connect_ex((host, port)) == 0:
                return
        if child is not None and not child.running():
            raise RuntimeError(f"{child.name} exited ({child.process.returncode}):\n{child.log_tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing listens on {host}:{port} after {timeout:.0f}s")
        time.sleep(0.2)


# -- the sample HTTP service ----------------------------------------------------------------------


def api_healthy(now: datetime) -> bool:
    """The sample API is down two minutes in every ten (minutes :x8 and :x9): with a failure
    threshold of 2, one incident opens and closes every ten minutes.

    >>> api_healthy(datetime(2026, 11, 3, 12, 7, 59)), api_healthy(datetime(2026, 11, 3, 12, 8, 0))
    (True, False)
    """
    return now.minute % 10 not in (8, 9)


class SampleService:
    """The demo's "production" web shop on loopback: ``/`` (always up), ``/health`` (down two minutes in
    ten) and ``/webhook`` (keeps each POSTed alert as a line of ``webhook_log``)."""

    def __init__(self, port: int, webhook_log: Path, clock: Callable[[], datetime] | None = None) -> None:
        self.port = port
        self.webhook_log = webhook_log
        self.clock = clock or (lambda: datetime.now(UTC))
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> SampleService:
        service = self
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _answer(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                if path == "/health":
                    if api_healthy(service.clock()):
                        self._answer(200, b'{"status": "ok"}', "application/json")
                    else:
                        self._answer(500, b'{"status": "degraded", "error": "checkout database"}', "application/json")
                elif path == "/":
                    self._answer(200, b"<html><body><h1>shop</h1><p>demo shop</p></body></html>", "text/html")
                else:
                    self._answer(404, b"not found", "text/plain")

            do_HEAD = do_GET

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if self.path.split("?")[0] != "/webhook":
                    self._answer(404, b"not found", "text/plain")
                    return
                try:
                    document: Any = json.loads(body or b"null")
                except ValueError:
                    document = body.decode("utf-8", "replace")
                line = json.dumps({"received_at": datetime.now(UTC).isoformat(), "body": document})
                with lock, service.webhook_log.open("a", encoding="utf-8") as out:
                    out.write(line + "\n")
                self._answer(200, b'{"ok": true}', "application/json")

        self.webhook_log.parent.mkdir(parents=True, exist_ok=True)
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="demo-http", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


# -- the SMTP sink ----------------------------------------------------------------------------------


class SmtpSink:
    """An SMTP server on loopback that accepts every message and keeps it as ``NNN.eml`` in ``mail_dir``."""

    def __init__(self, port: int, mail_dir: Path) -> None:
        self.port = port
        self.mail_dir = mail_dir
        self._controller: Any = None

    def start(self) -> SmtpSink:
        from aiosmtpd.controller import Controller

        mail_dir = self.mail_dir
        mail_dir.mkdir(parents=True, exist_ok=True)
        counter = iter(range(1, 1_000_000))

        class Keep:
            async def handle_DATA(self, _server: object, _session: object, envelope: Any) -> str:
                content = envelope.content if isinstance(envelope.content, bytes) else envelope.content.encode()
                (mail_dir / f"{next(counter):03d}.eml").write_bytes(content)
                return "250 OK"

        self._controller = Controller(Keep(), hostname="127.0.0.1", port=self.port)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            with contextlib.suppress(Exception):
                self._controller.stop()
            self._controller = None
