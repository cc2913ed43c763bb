"""``checksum``: local backup verification hashes a file nearly as fast as sha256 over bytes in memory.

Figure: GB/s of what backup verification does for a file on local disk —
``FilesystemBackupStorage(root).open(key)`` streamed through
``tasks.storage.hash_stream(stream, hashlib.sha256())`` — over a 1 GiB file
(256 MiB with ``--quick``) of random bytes, page cache warm (the target is
hashing speed, not the disk). It runs in a child process, so the child's peak
RSS is opsflow's alone; a file a quarter that size is hashed too, to show the
memory stays flat (1 MiB chunks, never the whole file).

Baseline: ``hashlib.sha256(data)`` over the same number of bytes already in
memory, the ceiling for this machine's sha256. Best of 3 for each side;
target: figure / baseline >= 0.80. GB are powers of 1000.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import BenchResult, best_seconds, peak_rss_mb

FULL_BYTES = 1 << 30
QUICK_BYTES = 256 << 20
REPEATS = 3
MIN_RATIO = 0.80
WRITE_CHUNK = 16 << 20
REPO = Path(__file__).resolve().parent.parent


def _write_random(path: Path, size: int) -> None:
    """``size`` random bytes, written in chunks (never the whole file in memory)."""
    with path.open("wb") as handle:
        left = size
        while left:
            chunk = os.urandom(min(WRITE_CHUNK, left))
            handle.write(chunk)
            left -= len(chunk)


def _warm(path: Path) -> None:
    """Read the file once so every timed pass reads from the page cache."""
    with path.open("rb", buffering=0) as handle:
        buffer = bytearray(WRITE_CHUNK)
        while handle.readinto(buffer):
            pass


def _size_text(size: int) -> str:
    return f"{size >> 30} GiB" if size >= 1 << 30 and size % (1 << 30) == 0 else f"{size >> 20} MiB"


def _opsflow_in_child(root: Path, key: str, repeats: int) -> dict[str, Any]:
    """Run :func:`_child` in a fresh interpreter: its timings, digest and its own peak RSS."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.checksum", str(root), key, str(repeats)],
        check=True,
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _child(root: str, key: str, repeats: int) -> None:
    """opsflow's side, alone in this process: best of ``repeats`` full verifications of ``key``."""
    from tasks.storage import FilesystemBackupStorage, hash_stream

    storage = FilesystemBackupStorage(Path(root))
    rss_before = peak_rss_mb()
    timings, digest, count = [], "", 0
    for _ in range(repeats):
        started = time.perf_counter()
        with storage.open(key) as stream:
            hasher = hashlib.sha256()
            count = hash_stream(stream, hasher)
        timings.append(time.perf_counter() - started)
        digest = hasher.hexdigest()
    print(
        json.dumps(
            {
                "seconds": min(timings),
                "bytes": count,
                "sha256": digest,
                "rss_after_import_mb": rss_before,
                "peak_rss_mb": peak_rss_mb(),
            }
        )
    )


def run(quick: bool) -> BenchResult:
    size = QUICK_BYTES if quick else FULL_BYTES
    small = size // 4
    with tempfile.TemporaryDirectory(prefix="opsflow-bench-checksum-") as tmp:
        root = Path(tmp)
        (root / "db").mkdir()
        big_key, small_key = "db/big.dump", "db/small.dump"
        _write_random(root / big_key, size)
        _write_random(root / small_key, small)
        _warm(root / big_key)
        _warm(root / small_key)

        opsflow = _opsflow_in_child(root, big_key, REPEATS)
        opsflow_small = _opsflow_in_child(root, small_key, 1)
        assert opsflow["bytes"] == size and opsflow_small["bytes"] == small

        # Only now, in this process, the whole file in memory for the baseline.
        data = (root / big_key).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    fastest = best_seconds(lambda: hashlib.sha256(data).hexdigest(), REPEATS)
    if digest != opsflow["sha256"]:
        raise RuntimeError("opsflow's checksum differs from hashlib's over the same bytes")

    figure = size / opsflow["seconds"] / 1e9
    baseline = size / fastest / 1e9
    ratio = figure / baseline
    notes = (
        f"{_size_text(size)} file, peak RSS {opsflow['peak_rss_mb']:.0f} MB "
        f"({_size_text(small)} file: {opsflow_small['peak_rss_mb']:.0f} MB; "
        f"interpreter + imports: {opsflow['rss_after_import_mb']:.0f} MB); "
        f"page cache warm, best of {REPEATS}"
    )
    if quick:
        notes += f"; --quick: {_size_text(size)} instead of {_size_text(FULL_BYTES)}"
    return BenchResult(
        name="checksum",
        figure=figure,
        unit="GB/s",
        baseline=baseline,
        baseline_name="hashlib.sha256 in memory",
        ratio=ratio,
        target=f"ratio >= {MIN_RATIO:.2f}",
        met=ratio >= MIN_RATIO,
        notes=notes,
    )


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2], int(sys.argv[3]))
