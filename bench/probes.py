"""Probe throughput: 1,000 distinct URLs on a loopback server, opsflow's probe run vs a bare httpx loop.

Baseline: ``asyncio.gather`` of ``client.get(url)`` on one ``httpx.AsyncClient``
with the same pool limits and in-flight cap — the floor for httpx. opsflow additionally judges
each answer (status, body, latency), reads TLS data when there is any, and
builds its results. Both run against the same uvicorn server in the same run.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import httpx

from bench.common import BenchResult
from opsflow.config import Service
from tasks.probes import MAX_CONNECTIONS, MAX_IN_FLIGHT, probe_all

APP = textwrap.dedent("""
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"status": "ok"}'})
""")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_until_up(url: str) -> None:
    for _ in range(100):
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("the benchmark server did not start")


async def _bare_loop(urls: list[str]) -> None:
    limits = httpx.Limits(max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_CONNECTIONS)
    in_flight = asyncio.Semaphore(MAX_IN_FLIGHT)  # the same cap as opsflow: a competent bare loop has one too
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def get(url: str) -> httpx.Response:
            async with in_flight:
                return await client.get(url)

        responses = await asyncio.gather(*(get(url) for url in urls))
    assert all(r.status_code == 200 for r in responses)


def _best_rate(action: object, count: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        asyncio.run(action())  # type: ignore[operator]
        best = min(best, time.perf_counter() - started)
    return count / best


def run(quick: bool) -> BenchResult:
    count = 300 if quick else 1000
    repeats = 3 if quick else 5
    port = _free_port()
    with TemporaryDirectory() as tmp:
        (Path(tmp) / "bench_app.py").write_text(APP)
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "bench_app:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
                "--app-dir",
                tmp,
            ],
        )
        try:
            base = f"http://127.0.0.1:{port}"
            _wait_until_up(base)
            urls = [f"{base}/service/{n}/health" for n in range(count)]
            services = [
                Service(
                    name=f"svc-{n}", url=url, timeout=30, interval=60, expect={"status": [200], "body_contains": '"ok"'}
                )
                for n, url in enumerate(urls)
            ]

            async def opsflow_run() -> None:
                outcomes = await probe_all(services, deadline=60)
                assert all(o.ok for o in outcomes), [o.error for o in outcomes if not o.ok][:3]

            asyncio.run(_bare_loop(urls[:50]))  # warm-up
            figure = _best_rate(opsflow_run, count, repeats)
            baseline = _best_rate(lambda: _bare_loop(urls), count, repeats)
        finally:
            server.terminate()
            server.wait(timeout=10)
    ceiling = "wrk not installed: the server's own ceiling was not measured"
    if shutil.which("wrk"):
        ceiling = "wrk is installed; run `wrk -c 100 -d 5s` against the same app for the server's ceiling"
    return BenchResult(
        name="probes",
        figure=figure,
        unit="probes/s",
        baseline=baseline,
        baseline_name="bare asyncio + httpx loop",
        ratio=figure / baseline,
        target="ratio >= 0.80",
        met=figure / baseline >= 0.80,
        notes=f"{count} distinct URLs on one loopback uvicorn server, best of {repeats}; {ceiling}"
        + ("; --quick: 300 URLs" if quick else ""),
    )
