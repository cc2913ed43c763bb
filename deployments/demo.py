"""``opsflow demo [--once]``: every routine, served and run once, on loopback servers of its own (SPEC §3).

What it starts, all under ``$OPSFLOW_HOME/demo`` (``./.opsflow/demo`` by default):

- a Prefect server with its UI on http://127.0.0.1:4200, or the next free port (``prefect/``: its
  home; its database ``prefect`` on the embedded PostgreSQL);
- an embedded PostgreSQL (``pgdata/``): the Prefect server's database, the ops store, and the sample
  "production" databases ``shop`` (customers, products, orders, order lines) and ``crm``;
- moto's S3 server on a free port, bucket ``prod-backups``: three real ``pg_dump`` backups of
  ``shop``, fresh, with S3 SHA-256 checksums and server-side encryption (set ``shop-db``);
- ``backups/crm/``: backups of ``crm`` whose newest is three days old (set ``crm-db``: the red run);
- a sample HTTP service (``shop-api`` at ``/health`` is down two minutes in every ten, ``shop-web``
  at ``/`` is always up; alerts POSTed to ``/webhook`` land in ``webhook.jsonl``) and an SMTP sink
  (mail kept in ``mail/``), with two months of probe and capacity history in the store;
- ``opsflow.yaml`` for all of it, the automations of ``opsflow automations apply``, and the
  all-in-one runner (``python -m deployments.runner``) serving every deployment of ``prefect.yaml``
  (every process logs to ``logs/``).

Then it runs every scheduled deployment once (the daily and weekly ops digests included: they land in
``mail/``; ``dr-drill/monthly`` excepted, whose drill is the next one), and ``dr-drill/on-demand`` for
``shop``, prints where to look (the status page ``status/index.html`` among it), and serves the schedules
until Ctrl-C; ``--once`` waits for those runs instead, prints each one's final state and stops (exit 0
unless a run crashed). Whatever way it ends, everything it started is stopped: each process carries
``OPSFLOW_DEMO=<demo dir>`` in its environment, and the
next demo also stops what a killed one left behind before it wipes and recreates the directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import psutil

from deployments.demo_data import (
    CRM_PREFIX,
    SHOP,
    DemoEndpoints,
    Dump,
    capacity_history,
    create_crm,
    create_shop,
    create_warehouse,
    database_size,
    demo_config,
    probe_history,
    row_counts,
    shop_backups,
    stale_backups,
    upload_backups,
    write_certificates,
    write_config,
)
from deployments.demo_services import (
    MARKER,
    Child,
    SampleService,
    SmtpSink,
    first_free_port,
    free_port,
    spawn,
    stop_marked,
    wait_for_port,
)
from deployments.runner import PREFECT_YAML, PROJECT, DeploymentSpec, read_deployments
from opsflow.embedded import EmbeddedPostgres, asyncpg_url, home_dir
from opsflow.errors import RoutineIncomplete, UsageError

UI_PORT = 4200
DRILL_DEPLOYMENT = "dr-drill/on-demand"
SCHEDULED_DRILL = "dr-drill/monthly"  # not run at the start: the demo's one database is drilled on demand
RED_RUN = "backup-verification"  # the run the demo points at: its crm-db set is stale
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "opsflow-demo",
    "AWS_SECRET_ACCESS_KEY": "opsflow-demo",
    "AWS_DEFAULT_REGION": "us-east-1",
}
SERVER_START_TIMEOUT = 150.0
REGISTER_TIMEOUT = 120.0
RUNS_TIMEOUT = 300.0


class _Stop(BaseException):
    """SIGTERM: stop like Ctrl-C does."""


@dataclass
class TriggeredRun:
    """A run the demo started: ``flow/deployment`` and its flow run."""

    deployment: str
    flow_run_id: Any
    state: str | None = None
    state_type: str | None = None
    message: str = ""

    @property
    def final(self) -> bool:
        return self.state_type in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}

    def line(self) -> str:
        message = " ".join(self.message.split())
        if len(message) > 150:
            message = message[:147] + "..."
        return f"  {self.deployment:<32} {self.state or 'unknown':<10} {message}".rstrip()


@dataclass
class Demo:
    """One demo: what it started, so that it can stop exactly that."""

    demo_dir: Path
    once: bool
    console: Any
    started: float = field(default_factory=time.monotonic)
    ui_port: int = 0
    s3_port: int = 0
    http_port: int = 0
    smtp_port: int = 0
    children: list[Child] = field(default_factory=list)
    prefect_server: Child | None = None
    s3: Child | None = None
    service: SampleService | None = None
    smtp: SmtpSink | None = None
    postgres: EmbeddedPostgres | None = None
    data_thread: threading.Thread | None = None
    data_error: BaseException | None = None
    data_summary: str = ""
    stopping: threading.Event = field(default_factory=threading.Event)
    port_claim: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    # -- where things are ------------------------------------------------------------------------

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.ui_port}"

    @property
    def api_url(self) -> str:
        return f"{self.ui_url}/api"

    @property
    def config_path(self) -> Path:
        return self.demo_dir / "opsflow.yaml"

    @property
    def prefect_home(self) -> Path:
        return self.demo_dir / "prefect"

    @property
    def logs(self) -> Path:
        return self.demo_dir / "logs"

    @property
    def state_file(self) -> Path:
        return self.demo_dir / "demo.json"

    def say(self, text: str) -> None:
        """A progress line on stderr, with the time since the start."""
        self.console.print(f"[dim]{time.monotonic() - self.started:6.1f}s[/dim]  {text}", soft_wrap=True)

    def status(self, text: str) -> Any:
        """A spinner on stderr while waiting, when both stdout and stderr are a terminal (rich routes what is
        printed meanwhile through its console: stdout redirected to a file must stay there)."""
        if sys.stdout.isatty() and self.console.is_terminal:
            return self.console.status(text)
        return _NoStatus()

    # -- the whole demo ----------------------------------------------------------------------------

    def run(self) -> int:
        self.refuse_when_running()
        self.clear_leftovers()
        self.port_claim.enter_context(claim_ui_ports(self.say))
        self.choose_ports()
        self.prepare_environment()
        # Ctrl-C (or SIGINT) stops the demo even when started with SIGINT ignored (``demo &`` in a script);
        # the children then start with the default handling of SIGINT too.
        previous = {
            signal.SIGTERM: signal.signal(signal.SIGTERM, _raise_stop),
            signal.SIGINT: signal.signal(signal.SIGINT, signal.default_int_handler),
        }
        interrupted = False
        try:
            try:
                return self.start_and_watch()
            except (KeyboardInterrupt, _Stop):
                interrupted = True
                return 0 if not self.once else 130
        finally:
            self.shutdown(interrupted)
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def start_and_watch(self) -> int:
        self.write_state()
        try:
            with self.status("starting the Prefect server, PostgreSQL, S3, HTTP and SMTP...") as status:
                self.start_servers()
                self.wait_for_prefect()
                self.port_claim.close()  # the UI port is the server's now
                runner = self.start_runner()
                self.join_data()
                status.update("applying automations...")
                self.apply_automations()
                status.update("waiting for the runner to register every deployment...")
                deployments = self.wait_for_deployments(runner)
                status.update("starting one run of each routine...")
                runs = self.trigger_runs(deployments)
        except (RoutineIncomplete, UsageError):
            raise
        except Exception as exc:  # one line, no traceback: the logs say more
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise RoutineIncomplete(f"the demo could not start: {reason} (logs in {self.logs})") from exc
        self.print_where_to_look(runs)
        if self.once:
            return self.wait_for_runs(runs)
        self.serve(runs)
        return 0

    # -- before anything starts --------------------------------------------------------------------

    def refuse_when_running(self) -> None:
        """A demo of this directory still running is not replaced (its owner stops it)."""
        try:
            state = json.loads(self.state_file.read_text(encoding="utf-8"))
            owner = psutil.Process(int(state["pid"]))
            alive = abs(owner.create_time() - float(state["create_time"])) < 1.0 and owner.pid != os.getpid()
        except (OSError, ValueError, KeyError, TypeError, psutil.Error):
            return
        if alive:
            raise UsageError(
                f"opsflow demo: a demo of {self.demo_dir} is already running (pid {owner.pid}, UI at "
                f"{state.get('ui_url')}): stop it first (Ctrl-C in its terminal, or kill {owner.pid})"
            )

    def clear_leftovers(self) -> None:
        """Stop what an earlier demo of this directory left running, then start from an empty directory."""
        stopped = stop_marked(self.demo_dir)
        if stopped:
            self.say(f"stopped {stopped} processes left running by an earlier demo")
        if self.demo_dir.exists():
            shutil.rmtree(self.demo_dir)
        self.demo_dir.mkdir(parents=True)
        self.logs.mkdir()
        self.say(f"demo directory {self.demo_dir}")

    def choose_ports(self) -> None:
        self.ui_port = first_free_port(UI_PORT)
        taken = {self.ui_port}
        for name in ("s3_port", "http_port", "smtp_port"):
            port = free_port()
            while port in taken:
                port = free_port()
            taken.add(port)
            setattr(self, name, port)

    def prefect_settings(self) -> dict[str, str]:
        return {
            "PREFECT_API_URL": self.api_url,
            "PREFECT_UI_URL": self.ui_url,
            "PREFECT_UI_API_URL": self.api_url,
            "PREFECT_HOME": str(self.prefect_home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }

    def prepare_environment(self) -> None:
        """This process talks to the demo's server only (Prefect is imported after this), and marks what it
        starts (the embedded PostgreSQL) as the demo's."""
        for name in [name for name in os.environ if name.startswith("PREFECT_")]:
            del os.environ[name]
        os.environ.update(self.prefect_settings())
        os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
        os.environ[MARKER] = str(self.demo_dir)

    def child_environment(self, **extra: str) -> dict[str, str]:
        """The environment of the demo's processes: the caller's, without its Prefect, AWS and opsflow
        settings (no Prefect Cloud, no real AWS profile, no other store), with the demo's."""
        env = {
            name: value for name, value in os.environ.items() if not name.startswith(("PREFECT_", "AWS_", "OPSFLOW_"))
        }
        missing = self.demo_dir / "aws-none"  # no ~/.aws/config: its endpoints and retries are not the demo's
        return (
            env
            | self.prefect_settings()
            | CREDENTIALS
            | {
                "AWS_CONFIG_FILE": str(missing),
                "AWS_SHARED_CREDENTIALS_FILE": str(missing),
                "OPSFLOW_HOME": str(self.demo_dir),
                "OPSFLOW_CONFIG": str(self.config_path),
                MARKER: str(self.demo_dir),
                "PYTHONUNBUFFERED": "1",
                **extra,
            }
        )

    def write_state(self) -> None:
        me = psutil.Process()
        state = {"pid": me.pid, "create_time": me.create_time(), "ui_url": self.ui_url}
        self.state_file.write_text(json.dumps(state), encoding="utf-8")

    # -- starting ----------------------------------------------------------------------------------

    def start_servers(self) -> None:
        """S3 as a process, HTTP and SMTP in threads, PostgreSQL, then the Prefect server on it as a process
        and the data in a thread of their own, at once (the server's first start takes longest).

        The Prefect server keeps its database on the embedded PostgreSQL, not SQLite: a dozen first runs
        writing at once made SQLite answer "database is locked" and stall each API call for a minute.
        """
        s3_argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.s3_port)]
        self.s3 = spawn("S3 endpoint", s3_argv, self.child_environment(), self.logs / "s3.log")
        self.children.append(self.s3)
        self.service = SampleService(self.http_port, self.demo_dir / "webhook.jsonl").start()
        self.smtp = SmtpSink(self.smtp_port, self.demo_dir / "mail").start()
        self.say(
            f"sample HTTP service {self.service.url} (/health is down minutes :x8-:x9), "
            f"SMTP sink 127.0.0.1:{self.smtp_port}"
        )
        self.postgres = EmbeddedPostgres.start(self.demo_dir / "pgdata", keep_running=False)
        self.start_prefect_server(self.postgres.ensure_database("prefect"))
        self.data_thread = threading.Thread(target=self._data_in_thread, name="demo-data", daemon=True)
        self.data_thread.start()

    def start_prefect_server(self, database_url: str) -> None:
        """``prefect server start`` on the UI port, its database ``database_url`` (libpq)."""
        self.prefect_home.mkdir()
        server_env = self.child_environment(
            PREFECT_SERVER_DATABASE_CONNECTION_URL=asyncpg_url(database_url),
            PREFECT_SERVER_LOGGING_LEVEL="WARNING",
            PREFECT_LOGGING_LEVEL="WARNING",
        )
        argv = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(self.ui_port)]
        self.prefect_server = spawn("Prefect server", argv, server_env, self.logs / "prefect-server.log")
        self.children.append(self.prefect_server)

    def _data_in_thread(self) -> None:
        try:
            self.make_data()
        except BaseException as exc:  # handed to the main thread by join_data
            self.data_error = exc

    def make_data(self) -> None:
        """The store and sample databases on the embedded PostgreSQL, backups, the config, and history."""
        now = datetime.now(UTC)
        if self.postgres is None or self.stopping.is_set():
            return
        server_url = self.postgres.url()
        store_url = self.postgres.ensure_database("opsflow")
        shop_url = create_shop(server_url)
        shop_dumps = shop_backups(shop_url, self.demo_dir / "dumps", now)
        crm_dumps = stale_backups(create_crm(server_url), self.demo_dir / "backups" / CRM_PREFIX.strip("/"), now)
        counts = row_counts(shop_url)
        self.say(
            f"embedded PostgreSQL: ops store, database {SHOP} ({len(counts)} tables, "
            f"{sum(counts.values()):,} rows), {len(shop_dumps) + len(crm_dumps)} pg_dump backups"
        )
        endpoints = DemoEndpoints(
            demo_dir=self.demo_dir,
            store_url=store_url,
            shop_url=shop_url,
            s3_url=f"http://127.0.0.1:{self.s3_port}",
            http_url=self.service.url if self.service else "",
            smtp_port=self.smtp_port,
            shop_size=database_size(shop_url),
            warehouse_url=create_warehouse(server_url),
        )
        write_certificates(self.demo_dir)
        write_config(self.config_path, demo_config(endpoints))
        if self.stopping.is_set():
            return
        self.seed_probe_history(now)
        self.seed_capacity_history(now, endpoints.shop_size)
        if self.s3 is not None:
            wait_for_port(self.s3_port, self.s3, timeout=60)
        if self.stopping.is_set():
            return
        upload_backups(endpoints.s3_url, CREDENTIALS, shop_dumps)
        self.data_summary = _describe_backups(shop_dumps, crm_dumps, now)
        self.say(f"S3 endpoint {endpoints.s3_url}: {len(shop_dumps)} backups of {SHOP} uploaded")

    def seed_probe_history(self, now: datetime) -> None:
        """Two months of minute-by-minute probe results, so the SLA reports have a period to report on."""
        from flows.sla_report import refresh_rollups_for_rows
        from opsflow.config import load_config
        from opsflow.store import OpsStore

        config = load_config(self.config_path)  # also proves the written config valid
        store = OpsStore.open(config)
        rows = list(probe_history([service.name for service in config.services], now, days=62))
        store.write_probe_results(rows)
        refresh_rollups_for_rows(store, config, [(row.service, row.checked_at) for row in rows])
        self.say(f"ops store: {len(rows):,} probe results of the last 62 days")

    def seed_capacity_history(self, now: datetime, shop_size: int) -> None:
        """Two months of hourly capacity samples, so the first forecast has a trend to fit."""
        from opsflow.config import load_config
        from opsflow.store import OpsStore

        store = OpsStore.open(load_config(self.config_path))
        rows = list(capacity_history(shop_size, now))
        store.write_capacity_samples(rows)
        self.say(f"ops store: {len(rows):,} capacity samples of the last 60 days")

    def join_data(self) -> None:
        if self.data_thread is None:
            raise RuntimeError("the demo's data was never started")
        self.data_thread.join()
        if self.data_error is not None:
            raise self.data_error

    def wait_for_prefect(self) -> None:
        import httpx

        server = self.prefect_server
        if server is None:
            raise RuntimeError("the Prefect server was never started")
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            if not server.running():
                raise RoutineIncomplete(
                    f"the Prefect server exited ({server.process.returncode}); its log ends:\n{server.log_tail()}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.api_url}/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RoutineIncomplete(f"the Prefect server did not answer within {SERVER_START_TIMEOUT:.0f}s")
            time.sleep(0.3)
        taken = f" (port {UI_PORT} is taken)" if self.ui_port != UI_PORT else ""
        self.say(f"Prefect server and UI {self.ui_url}{taken}")

    def start_runner(self) -> Child:
        """``python -m deployments.runner`` for the demo's config, polling for runs every 2 s."""
        argv = [sys.executable, "-m", "deployments.runner", "--config", str(self.config_path)]
        env = self.child_environment(PREFECT_RUNNER_POLL_FREQUENCY="2")
        runner = spawn("runner", argv, env, self.logs / "runner.log", cwd=PROJECT)
        self.children.append(runner)
        return runner

    def apply_automations(self) -> None:
        from deployments.automations import apply_automations
        from opsflow.config import load_config

        applied = apply_automations(load_config(self.config_path))
        names = ", ".join(applied.automations) or "none"
        self.say(f"automations applied: {names}")

    def wait_for_deployments(self, runner: Child) -> list[tuple[DeploymentSpec, str, Any]]:
        """Every deployment of ``prefect.yaml``, once the runner has registered it:
        ``(spec, "flow/deployment", deployment)``."""
        from prefect.client.orchestration import get_client

        specs = read_deployments(PREFECT_YAML)
        deadline = time.monotonic() + REGISTER_TIMEOUT
        with get_client(sync_client=True) as client:
            while True:
                if not runner.running():
                    raise RoutineIncomplete(
                        f"the runner exited ({runner.process.returncode}); its log ends:\n{runner.log_tail()}"
                    )
                found = _match_deployments(specs, client.read_deployments(), client.read_flows())
                if len(found) == len(specs):
                    break
                if time.monotonic() > deadline:
                    registered = {id(spec) for spec, _, _ in found}
                    missing = [spec.name for spec in specs if id(spec) not in registered]
                    raise RoutineIncomplete(f"the runner did not register {', '.join(missing)} in time")
                time.sleep(0.5)
        self.say(f"runner: {len(found)} deployments registered, with their schedules")
        return found

    def trigger_runs(self, deployments: list[tuple[DeploymentSpec, str, Any]]) -> list[TriggeredRun]:
        """One run of every deployment that has a schedule (the monthly drill's is the on-demand drill of
        ``shop``, the demo's one database: it is not run twice), and a drill of ``shop`` on demand. Where the
        schedule is about to start a run anyway (the runner starts runs up to 10 s early), that run is the
        one: a second one now would only be cancelled by the deployment's concurrency limit."""
        from prefect.client.orchestration import get_client
        from prefect.deployments import run_deployment

        runs = []
        with get_client(sync_client=True) as client:
            for spec, name, deployment in deployments:
                if name == SCHEDULED_DRILL:
                    continue  # it would drill shop too, waiting for the on-demand drill's slot
                if spec.schedules:
                    due = _run_due(client, deployment.id, within_seconds=20)
                    if due is not None:
                        runs.append(TriggeredRun(name, due.id))
                        continue
                    parameters: dict[str, Any] = {}
                elif name == DRILL_DEPLOYMENT:
                    parameters = {"drill": {"database": SHOP}}
                else:
                    continue
                flow_run = run_deployment(deployment.id, parameters=parameters, timeout=0, as_subflow=False)
                runs.append(TriggeredRun(name, flow_run.id))
        self.say(f"started {len(runs)} runs: " + ", ".join(run.deployment for run in runs))
        return runs

    # -- after the start ----------------------------------------------------------------------------

    def print_where_to_look(self, runs: list[TriggeredRun]) -> None:
        red = next((run for run in runs if run.deployment.startswith(f"{RED_RUN}/")), None)
        took = time.monotonic() - self.started
        lines = [
            "",
            f"opsflow demo is up ({took:.0f}s). The Prefect UI: {self.ui_url}",
            f"  deployments, schedules   {self.ui_url}/deployments",
        ]
        if red is not None:
            lines.append(
                f"  the red run              {self.ui_url}/runs/flow-run/{red.flow_run_id}  ({red.deployment})"
            )
        lines += [
            f"  artifacts (reports)      {self.ui_url}/artifacts",
            f"  all runs                 {self.ui_url}/runs",
            f"  automations              {self.ui_url}/automations",
        ]
        if self.data_summary:
            lines.append(f"  backups                  {self.data_summary}")
        lines += [
            f"  status at a glance       file://{self.demo_dir / 'status' / 'index.html'} (refreshed by every run)",
            f"  alerts, digests sent     {self.demo_dir / 'mail'}/*.eml (email), {self.demo_dir / 'webhook.jsonl'}",
            f"  config, logs             {self.config_path}, {self.logs}/",
            "",
            "Your own runs land in the same UI and start in seconds:",
            f"  export PREFECT_API_URL={self.api_url}",
            f"  export OPSFLOW_CONFIG={self.config_path} "
            + " ".join(f"{name}={value}" for name, value in CREDENTIALS.items() if name != "AWS_DEFAULT_REGION"),
            "  uv run opsflow run backup-verification",
            "  uv run opsflow drill shop --remote",
            "",
        ]
        print("\n".join(lines), flush=True)

    def wait_for_runs(self, runs: list[TriggeredRun]) -> int:
        """``--once``: until every run is final; each one's state in one line; 1 when one crashed."""
        deadline = time.monotonic() + RUNS_TIMEOUT
        print("Runs:", flush=True)
        with self.status(f"waiting for {len(runs)} runs...") as status:
            for run in self._finished(runs, deadline):
                print(run.line(), flush=True)
                done = sum(1 for other in runs if other.final)
                status.update(f"waiting for runs: {done} of {len(runs)} finished...")
        unfinished = [run for run in runs if not run.final]
        for run in unfinished:
            print(f"{run.line()} (not final after {RUNS_TIMEOUT:.0f}s)", flush=True)
        crashed = [run for run in runs if run.state_type == "CRASHED"]
        failed = [run for run in runs if run.state_type == "FAILED"]
        took = time.monotonic() - self.started
        print(
            f"opsflow demo --once: {len(runs) - len(unfinished)} of {len(runs)} runs final in {took:.0f}s: "
            f"{len(failed)} Failed with findings (expected: the stale crm-db backups), {len(crashed)} Crashed",
            flush=True,
        )
        return 1 if crashed or unfinished else 0

    def serve(self, runs: list[TriggeredRun]) -> None:
        """Without ``--once``: tell each first run's end, then keep the schedules served until Ctrl-C."""
        print("First runs (Ctrl-C stops the demo):", flush=True)
        pending = list(runs)
        while True:
            if pending:
                for run in self._finished(pending, deadline=time.monotonic() + 5):
                    print(run.line(), flush=True)
                    pending.remove(run)
                if not pending:
                    print("Every first run is final; serving the schedules until Ctrl-C.", flush=True)
            else:
                time.sleep(2)
            for child in self.children:
                if not child.running():
                    raise RoutineIncomplete(
                        f"the {child.name} exited ({child.process.returncode}); its log ends:\n{child.log_tail()}"
                    )

    def _finished(self, runs: list[TriggeredRun], deadline: float) -> Iterator[TriggeredRun]:
        """Each of ``runs`` as it reaches a final state, polling the API until ``deadline``."""
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

        by_id = {str(run.flow_run_id): run for run in runs}
        with get_client(sync_client=True) as client:
            while by_id and time.monotonic() < deadline:
                ids = [run.flow_run_id for run in by_id.values()]
                for flow_run in client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids))):
                    run = by_id.get(str(flow_run.id))
                    if run is None or flow_run.state is None:
                        continue
                    run.state = flow_run.state.name
                    run.state_type = flow_run.state.type.value
                    run.message = flow_run.state.message or ""
                    if run.final:
                        del by_id[str(flow_run.id)]
                        yield run
                if by_id:
                    time.sleep(1.0)

    # -- stopping --------------------------------------------------------------------------------------

    def shutdown(self, interrupted: bool) -> None:
        """Stop everything this demo started, in order; another Ctrl-C does not cut it short."""
        self.stopping.set()
        self.port_claim.close()
        quiet = _ignore_signals(lambda: self.say("still stopping..."))
        try:
            self.say("interrupted: stopping everything the demo started" if interrupted else "stopping")
            for child in reversed(self.children):  # the runner (and its flow runs) first, the server last
                # serve() stops cleanly on SIGINT (its SIGTERM handler leaves a coroutine unawaited).
                child.stop(timeout=20, first=signal.SIGINT if child.name == "runner" else signal.SIGTERM)
            for server in (self.service, self.smtp):
                if server is not None:
                    server.stop()
            if self.data_thread is not None:
                self.data_thread.join(timeout=60)
            if self.postgres is not None:
                with contextlib.suppress(Exception):
                    self.postgres.stop()
            left = stop_marked(self.demo_dir)  # drill databases, stray flow runs
            with contextlib.suppress(OSError):
                self.state_file.unlink()
            self.say("stopped" + (f" (and {left} stray processes)" if left else "") + f"; data kept in {self.demo_dir}")
        finally:
            quiet()


#: Held while a demo chooses its UI port and until its Prefect server answers on it (``claim_ui_ports``).
PORT_LOCK = Path(tempfile.gettempdir()) / "opsflow-demo-ports.lock"


@contextlib.contextmanager
def claim_ui_ports(say: Callable[[str], None], lock_path: Path = PORT_LOCK) -> Iterator[None]:
    """Choose and take a UI port under a lock of this machine's.

    Two demos started at once (two directories, two users of one machine, two test workers) both found
    4200 free; the second server then failed to bind while its demo talked to the first one's server.
    """
    import fcntl

    with lock_path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say("another demo is taking its UI port: waiting for its Prefect server to start")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class _NoStatus(contextlib.AbstractContextManager["_NoStatus"]):
    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, text: str) -> None:
        pass


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop()


def _ignore_signals(tell: Callable[[], None]) -> Callable[[], None]:
    """Until the returned function is called, SIGINT and SIGTERM only ``tell``."""

    def handler(signum: int, frame: FrameType | None) -> None:
        tell()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore


def _match_deployments(
    specs: list[DeploymentSpec], registered: list[Any], flows: list[Any]
) -> list[tuple[DeploymentSpec, str, Any]]:
    """Each spec's registered deployment (by name and flow function): ``(spec, "flow/deployment", deployment)``."""
    flow_names = {flow.id: flow.name for flow in flows}
    found = []
    for spec in specs:
        for deployment in registered:
            entrypoint = deployment.entrypoint or ""
            if deployment.name == spec.name and entrypoint.endswith(f":{spec.flow_attribute}"):
                name = f"{flow_names.get(deployment.flow_id, spec.flow_attribute)}/{spec.name}"
                found.append((spec, name, deployment))
                break
    return found


def _run_due(client: Any, deployment_id: Any, within_seconds: float) -> Any:
    """A run of the deployment that is running, pending, or scheduled to start within ``within_seconds``."""
    from datetime import timedelta

    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterExpectedStartTime,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    due = client.read_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
        flow_run_filter=FlowRunFilter(
            state=FlowRunFilterState(
                type=FlowRunFilterStateType(any_=[StateType.RUNNING, StateType.PENDING, StateType.SCHEDULED])
            ),
            expected_start_time=FlowRunFilterExpectedStartTime(
                before_=datetime.now(UTC) + timedelta(seconds=within_seconds)
            ),
        ),
        sort=FlowRunSort.EXPECTED_START_TIME_ASC,
        limit=1,
    )
    return due[0] if due else None


def _describe_backups(shop: list[Dump], crm: list[Dump], now: datetime) -> str:
    newest_crm = max(dump.taken_at for dump in crm)
    age = (now - newest_crm).total_seconds() / 3600
    return f"shop-db: {len(shop)} in S3 (fresh); crm-db: {len(crm)} on disk, the newest {age:.0f}h old (stale)"


def run_demo(once: bool) -> int:
    """``opsflow demo [--once]``; the exit code."""
    import logging

    from rich.console import Console

    logging.getLogger("opsflow.store").setLevel(logging.WARNING)  # no migration lines: the store is new each time
    console = Console(stderr=True, highlight=False)
    demo = Demo(demo_dir=home_dir().resolve() / "demo", once=once, console=console)
    return demo.run()
