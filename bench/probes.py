"""Probe throughput: distinct URLs on a loopback server, opsflow's probe run vs a bare aiohttp loop.

Baseline: ``asyncio.gather`` of ``async with session.get(url) as r: await r.read()`` on one
``aiohttp.ClientSession`` with the same connector limit and in-flight cap — the fast client's floor
(httpx's own pool is ~20x slower under concurrency, so it would hide a gap). opsflow additionally
judges each answer (status, body, latency), follows redirects itself, reads TLS data when there is
any, and builds its results. Both run against the same loopback aiohttp web server (another process)
in the same run.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import aiohttp

from bench.common import BenchResult, free_port, wait_until_up
from opsflow.config import Service
from tasks.probes import MAX_CONNECTIONS, MAX_IN_FLIGHT, probe_all

# The loopback server both sides probe: aiohttp's web server (C HTTP parser), one process, every path 200.
# A faster server than uvicorn over h11 leaves the clients' own cost visible (the stricter comparison).
SERVER = textwrap.dedent("""
    import sys
    from aiohttp import web

    BODY = b'{"status": "ok"}'

    async def health(request):
        return web.Response(body=BODY, content_type="application/json")

    app = web.Application()
    app.router.add_get("/{tail:.*}", health)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None, handle_signals=True)
""")


async def _bare_loop(urls: list[str]) -> None:
    in_flight = asyncio.Semaphore(MAX_IN_FLIGHT)  # the same cap as opsflow: a competent bare loop has one too
    connector = aiohttp.TCPConnector(limit=MAX_CONNECTIONS)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def get(url: str) -> int:
            async with in_flight, session.get(url) as r:
                await r.read()
                return r.status

        statuses = await asyncio.gather(*(get(url) for url in urls))
    assert all(status == 200 for status in statuses)


def _median_rates(actions: list[object], count: int, repeats: int) -> list[float]:
    """Each action's rate in its median run of ``repeats``, the actions interleaved round by round and
    their order swapped every other round: a noisy neighbour on the shared machine slows both sides alike,
    and one lucky (or unlucky) run moves neither figure (a best-of would keep the lucky one)."""
    times: list[list[float]] = [[] for _ in actions]
    for round_ in range(repeats):
        order = list(enumerate(actions))
        for n, action in order if round_ % 2 == 0 else reversed(order):
            started = time.perf_counter()
            asyncio.run(action())  # type: ignore[operator]
            times[n].append(time.perf_counter() - started)
    return [count / statistics.median(seconds) for seconds in times]


def run(quick: bool) -> BenchResult:
    count = 2000 if quick else 5000  # runs long enough that connection set-up and the loop's start are noise
    repeats = 7 if quick else 9  # on a shared machine: many runs, interleaved, for a stable median
    port = free_port()
    with TemporaryDirectory() as tmp:
        (Path(tmp) / "bench_server.py").write_text(SERVER)
        server = subprocess.Popen([sys.executable, str(Path(tmp) / "bench_server.py"), str(port)])
        try:
            base = f"http://127.0.0.1:{port}"
            wait_until_up(base)
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

            asyncio.run(_bare_loop(urls[:200]))  # warm-up, both sides (first calls, the server's own)
            asyncio.run(probe_all(services[:200], deadline=60))
            figure, baseline = _median_rates([opsflow_run, lambda: _bare_loop(urls)], count, repeats)
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
        baseline_name="bare asyncio + aiohttp loop",
        ratio=figure / baseline,
        target="ratio >= 0.80",
        met=figure / baseline >= 0.80,
        notes=f"{count} distinct URLs on one loopback aiohttp web server (another process), {MAX_IN_FLIGHT} in flight,"
        f" median of {repeats} interleaved runs each; {ceiling}"
        + ("; --quick: 2,000 URLs (full: 5,000)" if quick else ""),
    )
