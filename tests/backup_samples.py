"""Real pg_dump archives for backup tests, made once per session from a sample database."""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
from datetime import datetime
from pathlib import Path

import psycopg

from opsflow.embedded import client_bin, url_with_database

CUSTOMERS = 500
ORDERS = 5000


def make_sample_database(server_url: str, name: str, orders: int) -> str:
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')
        conn.execute(f'create database "{name}"')
    url = url_with_database(server_url, name)
    with psycopg.connect(url) as conn:
        conn.execute("create table customers (customer_id int primary key, name text not null)")
        conn.execute(
            "create table orders (order_id int primary key, customer_id int references customers, amount numeric,"
            " note text)"
        )
        conn.execute(f"insert into customers select g, 'customer ' || g from generate_series(1, {CUSTOMERS}) g")
        conn.execute(
            f"insert into orders select g, g % {CUSTOMERS} + 1, g * 1.25, md5(g::text) || md5((g * 7)::text)"
            f" from generate_series(1, {orders}) g"
        )
    return url


def pg_dump(url: str, archive_format: str = "c") -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "dump"
        subprocess.run([str(client_bin("pg_dump")), f"-F{archive_format}", "-f", str(target), url], check=True)
        return target.read_bytes()


def sha256_line(data: bytes, name: str) -> str:
    """What ``sha256sum NAME`` prints."""
    return f"{hashlib.sha256(data).hexdigest()}  {name}\n"


def write_backup(directory: Path, name: str, data: bytes, written_at: datetime, sidecar: bytes | None = None) -> Path:
    """A backup file with its mtime set to ``written_at`` and, unless None, a sidecar of ``sidecar``'s hash."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_bytes(data)
    os.utime(path, (written_at.timestamp(), written_at.timestamp()))
    if sidecar is not None:
        (directory / f"{name}.sha256").write_text(sha256_line(sidecar, name))
    return path


def overwrite_middle(data: bytes, length: int = 4096) -> bytes:
    """``data`` with ``length`` bytes overwritten at 60% of it (the damage --list does not see)."""
    at = int(len(data) * 0.6)
    return data[:at] + bytes((b ^ 0x5A) for b in data[at : at + length]) + data[at + length :]


def make_program_running_database(server_url: str, name: str, marker: Path) -> str:
    """A small database whose restore runs ``touch marker`` on the server host (SPEC §7): a plpgsql function
    doing ``COPY ... TO PROGRAM``, called by a materialized view that pg_restore refreshes. In the source
    itself the function does nothing, so dumping it runs nothing."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')
        conn.execute(f'create database "{name}"')
    url = url_with_database(server_url, name)
    program = f"touch {marker}"
    with psycopg.connect(url) as conn:
        conn.execute("create table customers (customer_id int primary key, name text not null)")
        conn.execute("insert into customers select g, 'customer ' || g from generate_series(1, 10) g")
        conn.execute(
            "create function run_program() returns int language plpgsql as $$\n"
            f"begin\n  if current_database() = '{name}' then return 1; end if;\n"
            f"  execute 'copy (select 1) to program ''{program}''';\n  return 1;\nend $$"
        )
        conn.execute("create materialized view pwned as select run_program() as done")
    return url
