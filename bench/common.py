"""What every benchmark returns, and small helpers to time things honestly on a shared machine."""

from __future__ import annotations

import resource
import socket
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class BenchResult:
    """One benchmark: opsflow's figure beside a baseline measured in the same run (SPEC §8)."""

    name: str
    figure: float
    unit: str
    baseline: float
    baseline_name: str
    ratio: float
    target: str
    met: bool
    notes: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def wall_times(action: Callable[[], object], repeats: int) -> list[float]:
    """Wall time of each of ``repeats`` calls of ``action``."""
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        timings.append(time.perf_counter() - started)
    return timings


def median_seconds(action: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``repeats`` calls: robust to one slow outlier on a noisy machine."""
    return statistics.median(wall_times(action, repeats))


def best_seconds(action: Callable[[], object], repeats: int) -> float:
    """Fastest wall time of ``repeats`` calls: a baseline at the machine's best (the strict comparison)."""
    return min(wall_times(action, repeats))


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def free_port() -> int:
    """A TCP port free on loopback now (for a benchmark's own server)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_up(url: str) -> None:
    """Until ``url`` answers at all (10 s at most): the benchmark's server has started."""
    import httpx

    for _ in range(100):
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("the benchmark server did not start")
