"""Shards of the uptime probe: which services shard ``K`` of ``N`` probes (SPEC §5, ``--shard K/N``).

A service belongs to shard ``sha256(name as UTF-8) mod N + 1``: the same in every process, on every
machine and Python version (never ``hash()``, which is salted per process), and about even. The
``N`` shard runs of one minute together probe every service exactly once.

>>> shard_of("api", 4), shard_of("api", 4) == shard_of("api", 4), shard_of("api", 1)
(2, True, 1)
>>> parse_shard("2/4"), shard_label(2, 4), shard_key(2, 4)
((2, 4), 'shard 2/4', 'shard-2-of-4')
>>> names = [f"svc-{n}" for n in range(1000)]
>>> sizes = [len(in_shard(names, k, 4, key=str)) for k in (1, 2, 3, 4)]
>>> sum(sizes), min(sizes) > 220
(1000, True)
>>> parse_shard("3/2")
Traceback (most recent call last):
opsflow.errors.UsageError: --shard 3/2: expected K/N with 1 <= K <= N (e.g. 2/4)
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from typing import TypeVar

from opsflow.errors import UsageError

T = TypeVar("T")


def shard_of(name: str, shards: int) -> int:
    """The shard (1..``shards``) that probes the service ``name``."""
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % shards + 1


def in_shard(items: Iterable[T], shard: int, shards: int, key: Callable[[T], str]) -> list[T]:
    """The ``items`` (in their order) whose ``key`` (a service's name) falls in shard ``shard`` of ``shards``."""
    if shards == 1:
        return list(items)
    return [item for item in items if shard_of(key(item), shards) == shard]


def check_shard(shard: object, shards: object, option: str = "--shard") -> tuple[int, int]:
    """``(shard, shards)`` when ``1 <= shard <= shards``; else ``UsageError`` (exit 2)."""
    valid = (
        isinstance(shard, int)
        and isinstance(shards, int)
        and not isinstance(shard, bool)
        and not isinstance(shards, bool)
        and 1 <= shard <= shards
    )
    if not valid:
        raise UsageError(f"{option} {shard}/{shards}: expected K/N with 1 <= K <= N (e.g. 2/4)")
    return shard, shards  # type: ignore[return-value]


def parse_shard(text: str) -> tuple[int, int]:
    """``K/N`` as given to ``--shard``: ``(K, N)`` with ``1 <= K <= N``; anything else is ``UsageError``."""
    first, slash, second = text.strip().partition("/")
    if not slash or not first.strip().isdigit() or not second.strip().isdigit():
        raise UsageError(f"--shard {text}: expected K/N with 1 <= K <= N (e.g. 2/4)")
    return check_shard(int(first), int(second))


def shard_label(shard: int, shards: int) -> str:
    """The stored result's scope of a shard run (``shard 2/4``); empty when unsharded (1/1)."""
    return "" if shards == 1 else f"shard {shard}/{shards}"


def shard_key(shard: int, shards: int) -> str:
    """A shard as a name part (artifact key, spool file): ``shard-2-of-4``; empty when unsharded."""
    return "" if shards == 1 else f"shard-{shard}-of-{shards}"
