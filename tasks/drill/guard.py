"""The guard: where a libpq URL leads (:func:`endpoint`), and :func:`check_target`, which refuses a drill target
naming the same server and database as a configured ``source_url`` or the ops store."""

from __future__ import annotations

import contextlib
import getpass
import ipaddress
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache

from psycopg.conninfo import conninfo_to_dict

from opsflow.config import Config, Database, resolve_secret
from opsflow.errors import UsageError
from tasks.retry import PermanentFailure


class TargetRefused(UsageError, PermanentFailure):
    """The drill target names a database the drill must never touch (exit 2; never retried)."""


@dataclass(frozen=True)
class Endpoint:
    """Where a libpq URL leads: its servers (host or socket directory, and port) and database."""

    servers: frozenset[tuple[frozenset[str], str]]
    dbname: str
    label: str

    def same_database(self, other: Endpoint) -> bool:
        if self.dbname != other.dbname:
            return False
        return any(
            port == other_port and hosts & other_hosts
            for hosts, port in self.servers
            for other_hosts, other_port in other.servers
        )


@cache
def _addresses(host: str) -> frozenset[str]:
    """Keys under which a TCP host is known: its name and every address it resolves to."""
    keys = {f"name:{host.lower()}"}
    with contextlib.suppress(OSError, UnicodeError):
        for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP):
            address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
            keys.add("loopback" if address.is_loopback else f"ip:{address}")
    return frozenset(keys)


def _host_keys(host: str) -> frozenset[str]:
    if not host:
        return frozenset({"socket:default"})
    if host.startswith(("/", "@")):  # a Unix-socket directory (or Linux abstract namespace)
        return frozenset({f"socket:{os.path.realpath(host) if host.startswith('/') else host}"})
    return _addresses(host)


def endpoint(url: str, environ: Mapping[str, str] | None = None) -> Endpoint:
    """Parse ``url`` with libpq's rules (``conninfo_to_dict``), libpq's environment defaults filled in."""
    env = os.environ if environ is None else environ
    params = conninfo_to_dict(url)
    hosts = str(params.get("hostaddr") or params.get("host") or env.get("PGHOST") or "").split(",")
    ports = str(params.get("port") or env.get("PGPORT") or "5432").split(",")
    if len(ports) == 1:
        ports = ports * len(hosts)
    user = str(params.get("user") or env.get("PGUSER") or getpass.getuser())
    dbname = str(params.get("dbname") or env.get("PGDATABASE") or user)
    pairs = list(zip(hosts, ports, strict=False))
    servers = frozenset((_host_keys(host.strip()), (port.strip() or "5432")) for host, port in pairs)
    shown = ",".join(f"{host.strip() or 'local socket'}:{port.strip() or '5432'}" for host, port in pairs)
    return Endpoint(servers=servers, dbname=dbname, label=f"{shown}/{dbname}")


def forbidden_databases(config: Config, store_url: str | None) -> list[tuple[str, str]]:
    """Every database a drill must never target, with what it is: each ``source_url`` and the ops store."""
    found = []
    for index, database in enumerate(config.databases):
        url = resolve_secret(database.source_url)
        if url:
            found.append((f"the source database of {database.name!r} (databases.{index}.source_url)", url))
    if store_url:
        found.append(("the ops store", store_url))
    return found


def check_target(name: str, target_url: str, forbidden: Sequence[tuple[str, str]]) -> None:
    """Raise :class:`TargetRefused` when ``target_url`` names the same server and database as a forbidden one."""
    target = endpoint(target_url)
    for what, url in forbidden:
        if target.same_database(endpoint(url)):
            raise TargetRefused(
                f"dr-drill {name}: drill.target {target.label} is {what}: a drill never targets a source "
                "database or the ops store; point drill.target at a drill server (the drill creates its own "
                "scratch database there) or use 'embedded'"
            )


def resolve_target(database: Database) -> str:
    """``embedded`` or the drill server's URL (a ``{secret: NAME}`` loaded now)."""
    if database.drill.embedded:
        return "embedded"
    url = resolve_secret(database.drill.target)
    if url is None:  # drill.target defaults to "embedded"; None only from a config built around validation
        raise UsageError(f"dr-drill {database.name}: drill.target is not set")
    return url
