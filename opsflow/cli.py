"""The ``opsflow`` command line (SPEC §5).

Start-up stays light (argparse, pydantic, yaml): Prefect, psycopg and the
routines are imported inside the command that needs them, so
``opsflow check-config`` answers in well under a second.

Exit codes: 0 all ok (warnings allowed), 1 findings (an item is ``fail`` or
``error``), 2 bad usage, config or input, 3 the command could not complete;
130/143 stopped by SIGINT/SIGTERM (what the command started is stopped too).

    $ opsflow check-config --config ops.yaml
    $ opsflow probes import history.csv
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from opsflow.config import Config, ConfigError, default_config_path, load_config
from opsflow.errors import RoutineIncomplete, UsageError
from opsflow.results import EXIT_INCOMPLETE, EXIT_OK, EXIT_USAGE, RoutineResult

log = logging.getLogger("opsflow")


def _config_from(args: argparse.Namespace) -> Config:
    """Load the config named by ``--config``, ``$OPSFLOW_CONFIG`` or ``./opsflow.yaml``.

    With none given and no ``./opsflow.yaml``, every section keeps its default
    (an empty config is valid), so history imports work before any config exists.
    """
    path = default_config_path(args.config, os.environ)
    if args.config is None and "OPSFLOW_CONFIG" not in os.environ and not path.exists():
        return Config()
    return load_config(path)


# -- commands -----------------------------------------------------------------


def cmd_check_config(args: argparse.Namespace) -> int:
    path = default_config_path(args.config, os.environ)
    config = load_config(path)
    counts = ", ".join(
        f"{len(getattr(config, section))} {section}"
        for section in ("storages", "backups", "databases", "services", "capacity", "quality")
    )
    print(f"{path}: ok ({counts})")
    return EXIT_OK


def cmd_probes_import(args: argparse.Namespace) -> int:
    """Two streaming passes (memory flat with the file's size, SPEC §7): every row validated, then
    all of them written in one transaction, or nothing."""
    from opsflow.history_csv import check_probe_csv, probe_rows
    from opsflow.store import OpsStore

    config = _config_from(args)
    path = _existing_file(args.file)
    check_probe_csv(path)
    store = OpsStore.open(config)
    known = [service.name for service in config.services]
    count = store.import_probe_results(probe_rows(path), source=str(path), services=known)
    if count.unknown:
        log.warning("importing history of services not in the config: %s", ", ".join(count.unknown))
    if count.spans:
        # The SLA report's rollups of the hours the imported rows touch: each service's first and last
        # result are what the refresh reads. The store's SQL directly, so an import does not load Prefect.
        from opsflow import sla_store

        with store.connection() as conn:
            sla_store.refresh_after_write(
                conn,
                {service.name: service.interval for service in config.services},
                [(name, at) for name, first, last in count.spans for at in (first, last)],
            )
    print(f"{args.file}: {count.rows} probe results read, {count.inserted} new, {count.unchanged} already stored")
    return EXIT_OK


def cmd_probes_export(args: argparse.Namespace) -> int:
    """Stored probe results as CSV in the import format: to ``--output`` (written whole or not at all) or stdout."""
    import tempfile

    from opsflow.store import OpsStore

    config = _config_from(args)
    start = parse_time("--from", args.start, config)
    end = parse_time("--to", args.end, config)
    if start is not None and end is not None and start >= end:
        raise UsageError(f"--from {args.start} is not before --to {args.end}")
    target = None if args.output is None else Path(args.output)
    if target is not None and not target.parent.is_dir():
        raise UsageError(f"--output: no directory {target.parent}")
    if target is not None and target.is_dir():
        raise UsageError(f"--output: {target} is a directory")
    store = OpsStore.open(config)
    if args.service:
        # A service named but absent (a typo, or nothing in the time range) is said, not a silent empty file.
        found = store.services_with_results(args.service, start, end)
        window = (f" from {args.start}" if start else "") + (f" to {args.end}" if end else "")
        for name in dict.fromkeys(args.service):
            if name not in found:
                print(f"no stored results for service {name!r}{window}", file=sys.stderr)
    if target is None:
        try:
            store.export_probe_results(sys.stdout.buffer, args.service, start, end)
            sys.stdout.flush()
        except BrokenPipeError:
            # The reader stopped early (`| head`): not an error; keep Python from complaining at exit.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    try:
        handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
    except OSError as exc:
        raise UsageError(f"--output: cannot write in {target.parent}: {exc.strerror}") from None
    partial = Path(name)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(partial, 0o666 & ~umask)  # as a plain open() would have created it
        with os.fdopen(handle, "wb") as out:
            count = store.export_probe_results(out, args.service, start, end)
            out.flush()
            os.fsync(out.fileno())
        partial.replace(target)
    except OSError as exc:
        raise RoutineIncomplete(f"--output: could not write {target}: {exc.strerror or exc}") from None
    finally:
        partial.unlink(missing_ok=True)
    print(f"{target}: {count} probe results written")
    return EXIT_OK


def cmd_capacity_import(args: argparse.Namespace) -> int:
    """Like ``probes import``: validated in a first streaming pass, written in a second, all or nothing."""
    from opsflow.history_csv import capacity_rows, check_capacity_csv
    from opsflow.store import OpsStore

    config = _config_from(args)
    path = _existing_file(args.file)
    check_capacity_csv(path)
    count = OpsStore.open(config).import_capacity_samples(capacity_rows(path), source=str(path))
    print(
        f"{args.file}: {count.rows} samples read, {count.inserted} new, {count.updated} updated, "
        f"{count.unchanged} already stored"
    )
    return EXIT_OK


def parse_as_of(text: str | None, config: Config) -> datetime | None:
    """``--as-of``: ISO 8601; a time without offset, or a date, is read in the config's timezone."""
    return parse_time("--as-of", text, config)


def parse_time(option: str, text: str | None, config: Config) -> datetime | None:
    """An ISO 8601 time option; a time without offset, or a date, is read in the config's timezone."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"{option}: expected an ISO 8601 time like 2026-11-22T06:00:00Z, got {text!r}") from None
    from opsflow.history_csv import outside_years

    problem = outside_years(moment)
    if problem:
        raise UsageError(f"{option}: {problem}")
    return moment if moment.tzinfo else moment.replace(tzinfo=config.tzinfo)


#: Routines that take ``--period``.
PERIOD_ROUTINES = ("sla-report", "ops-digest")
#: Routines that take ``--shard K/N`` (SPEC §5).
SHARD_ROUTINES = ("uptime-probe",)


def cmd_run(args: argparse.Namespace) -> int:
    from datetime import UTC

    config = _config_from(args)  # a bad config is refused before anything runs
    as_of = parse_as_of(args.as_of, config)
    path = default_config_path(args.config, os.environ)
    config_path = str(path.resolve()) if path.exists() else None
    from flows.registry import load_routine, preflight

    params: dict[str, Any] = {}
    if args.period is not None and args.routine not in PERIOD_ROUTINES:
        raise UsageError(f"--period is only for {', '.join(PERIOD_ROUTINES)}, not {args.routine}")
    if args.routine in PERIOD_ROUTINES:
        params["period"] = args.period or "day"
    if args.shard is not None:
        if args.routine not in SHARD_ROUTINES:
            raise UsageError(f"--shard is only for {', '.join(SHARD_ROUTINES)}, not {args.routine}")
        from opsflow.shards import parse_shard

        params["shard"], params["shards"] = parse_shard(args.shard)
    preflight(args.routine, config, params, as_of or datetime.now(UTC))  # refused before anything runs
    flow = load_routine(args.routine)
    quiet_terminal()
    state = flow(as_of=as_of, config_path=config_path, return_state=True, **params)
    return report_routine(args.routine, state, as_json=args.json, timezone=config.timezone)


def cmd_report_monthly(args: argparse.Namespace) -> int:
    """``opsflow report monthly``: the ``monthly-report`` routine in this process; files only unless ``--send``."""
    from datetime import UTC

    config = _config_from(args)
    path = default_config_path(args.config, os.environ)
    config_path = str(path.resolve()) if path.exists() else None
    from flows.registry import load_routine, preflight

    params: dict[str, Any] = {"month": args.month, "send": args.send, "out_dir": args.out}
    preflight("monthly-report", config, params, datetime.now(UTC))
    flow = load_routine("monthly-report")
    quiet_terminal()
    state = flow(config_path=config_path, return_state=True, **params)
    return report_routine("monthly-report", state, as_json=args.json, timezone=config.timezone)


def cmd_sla_rebuild_rollups(args: argparse.Namespace) -> int:
    """Rebuild the SLA report's hourly, daily and weekly rollups from the raw probe results."""
    from flows.sla_report import rebuild_rollups

    config = _config_from(args)
    hours = rebuild_rollups(config)
    print(f"SLA rollups rebuilt: {hours} service-hours")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    """SPEC §3: a Prefect server, PostgreSQL, S3, HTTP and SMTP on loopback, every routine served and run once."""
    if args.config is not None:
        raise UsageError("opsflow demo takes no --config: it writes and uses its own ($OPSFLOW_HOME/demo/opsflow.yaml)")
    from deployments.demo import run_demo

    return run_demo(once=args.once)


def quiet_terminal() -> None:
    """Prefect is loaded: one line per log record on stderr, none of its per-run chatter."""
    from opsflow.logs import quiet_terminal as quiet

    quiet()


def report_routine(routine: str, state: Any, as_json: bool, timezone: str = "UTC") -> int:
    """Print a finished flow run's result (one JSON document with ``--json``) and return the exit code."""
    from flows.registry import render_for_terminal, result_of

    result = result_of(state)
    if result is None:  # the run crashed: no result of its own
        outcome = state.result(raise_on_failure=False)
        reason = str(outcome) if isinstance(outcome, BaseException) else (state.message or state.name)
        result = incomplete_result(routine, reason)
    if result.error:
        return report_incomplete(result, as_json)
    if as_json:
        print(result.to_json())
    else:
        print(render_for_terminal(result, timezone, rich_terminal=sys.stdout.isatty()))
    return result.exit_code


def incomplete_result(routine: str, reason: str) -> RoutineResult:
    """The result of a routine that could not complete: status ``error`` with the one-line reason."""
    from datetime import UTC

    from opsflow.redact import redact

    why = redact(" ".join(reason.split())) or "unknown reason"
    return RoutineResult(routine=routine, as_of=datetime.now(UTC).replace(microsecond=0), error=why)


def report_incomplete(result: RoutineResult, as_json: bool) -> int:
    """Exit 3: one line on stderr and, with ``--json``, one JSON document on stdout (SPEC §5)."""
    if as_json:
        print(result.to_json())
    print(f"opsflow: {result.routine} could not complete: {result.error}", file=sys.stderr)
    return EXIT_INCOMPLETE


DRILL_DEPLOYMENT = "dr-drill/on-demand"


def cmd_drill(args: argparse.Namespace) -> int:
    config = _config_from(args)  # a bad config is refused before anything runs
    from flows.dr_drill import DrillParameters, dr_drill, lookup_database, preflight_drill

    database = lookup_database(config, args.database)
    if args.cleanup:
        if args.backup or args.keep or args.remote:
            raise UsageError("opsflow drill: --cleanup takes no --backup, --keep or --remote")
        return drill_cleanup(config, database, as_json=args.json)
    preflight_drill(config, database, args.backup)
    if args.remote:
        return drill_remote(config, database.name, args)
    path = default_config_path(args.config, os.environ)
    config_path = str(path.resolve()) if path.exists() else None
    parameters = DrillParameters(
        database=database.name, backup_key=args.backup, keep=args.keep, config_path=config_path
    )
    from flows.registry import result_of

    quiet_terminal()
    state = dr_drill(parameters, return_state=True)
    outcome = result_of(state)
    if outcome is None or outcome.error:
        return report_routine("dr-drill", state, as_json=args.json)  # could not complete: exit 3
    return report_drill(outcome, as_json=args.json, timezone=config.timezone)


def report_drill(result: RoutineResult, as_json: bool, timezone: str = "UTC") -> int:
    """Print a drill's result (one JSON document with ``--json``); with ``--keep``, how to connect."""
    from zoneinfo import ZoneInfo

    from opsflow.units import format_duration, format_local_time

    def duration(value: Any, precision: int = 1) -> str:
        return "-" if value is None else format_duration(round(float(value), precision))

    if as_json:
        print(result.to_json())
    for item in result.items:
        metrics = item.metrics
        if not as_json:
            print(f"dr-drill {item.name}: {item.status.upper()} (flow run {result.flow_run_id})")
            if metrics.get("backup_key"):
                written = datetime.fromisoformat(metrics["backup_taken_at"].replace("Z", "+00:00"))
                print(f"  backup    {metrics['backup_key']}, written {format_local_time(written, ZoneInfo(timezone))}")
            for name in ("rto", "rpo"):
                check = item.check_named(name)
                if check is not None:
                    measured = duration(metrics.get(f"{name}_seconds"), 1 if name == "rto" else 0)
                    target = duration(metrics.get(f"{name}_target_seconds"))
                    print(f"  {name.upper()}       {measured} (target {target})  {check.status}")
            phases = [
                f"{name} {metrics[f'{name}_seconds']:.2f}s"
                for name in ("download", "target", "restore", "validate")
                if metrics.get(f"{name}_seconds") is not None
            ]
            print(f"  phases    {' · '.join(phases)}")
            for check in item.checks:
                if check.status != "ok":
                    print(f"  {check.status:5}     {check.check}: {check.detail}")
        if metrics.get("target_url"):
            hint = (
                f"{item.name}: the restored database is kept up; connect with:\n"
                f"  psql '{metrics['target_url']}'\n"
                f"remove it with:\n  opsflow drill {item.name} --cleanup"
            )
            print(hint, file=sys.stderr if as_json else sys.stdout)
    return result.exit_code


def drill_cleanup(config: Config, database: Any, as_json: bool) -> int:
    """``--cleanup``: remove kept targets and leftovers of earlier drills (never a running drill's)."""
    import json

    from flows.dr_drill import clean_up_drills

    report = clean_up_drills(config, database)
    if as_json:
        print(
            json.dumps(
                {
                    "database": database.name,
                    "removed": report.removed,
                    "skipped": report.skipped,
                    "problems": report.problems,
                }
            )
        )
    else:
        if not (report.removed or report.skipped or report.problems):
            print(f"{database.name}: nothing to clean up")
        for removed in report.removed:
            what = "the kept drill target " if removed in report.kept else ""
            print(f"{database.name}: removed {what}{removed}")
        for skipped in report.skipped:
            print(f"{database.name}: left {skipped}")
        for problem in report.problems:
            print(f"{database.name}: could not remove {problem}", file=sys.stderr)
    return EXIT_INCOMPLETE if report.problems else EXIT_OK


def drill_remote(config: Config, name: str, args: argparse.Namespace) -> int:
    """``--remote``: trigger ``dr-drill/on-demand`` on ``$PREFECT_API_URL``, follow it to its end, print its result."""
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        raise UsageError("opsflow drill --remote: PREFECT_API_URL is not set: point it at the Prefect server")
    parameters = {"drill": {"database": name, "backup_key": args.backup, "keep": args.keep}}
    try:
        flow_run = run_deployment(DRILL_DEPLOYMENT, parameters=parameters, timeout=0, as_subflow=False)
    except ObjectNotFound:
        raise UsageError(
            f"opsflow drill --remote: no deployment {DRILL_DEPLOYMENT} on the Prefect server (prefect deploy --all)"
        ) from None
    print(f"{DRILL_DEPLOYMENT}: flow run {flow_run.name} ({flow_run.id}) created; following it", file=sys.stderr)
    try:
        final = follow_flow_run(flow_run.id)
    except KeyboardInterrupt:
        print(f"stopped following; flow run {flow_run.id} goes on on the server", file=sys.stderr)
        return EXIT_INCOMPLETE
    from opsflow.store import OpsStore

    result = OpsStore.open(config).result_of_flow_run("dr-drill", str(flow_run.id))
    if result is None:
        state = final.state
        reason = f"{state.name}: {state.message}" if state is not None else "no state"
        from opsflow.redact import redact

        print(f"opsflow: dr-drill {name} could not complete on the server ({redact(reason)})", file=sys.stderr)
        return EXIT_INCOMPLETE
    return report_drill(result, as_json=args.json, timezone=config.timezone)


def follow_flow_run(flow_run_id: Any, poll_seconds: float = 1.0) -> Any:
    """Poll a flow run until it is final, telling each state change on stderr; return it."""
    import time

    from prefect.client.orchestration import get_client

    seen = None
    with get_client(sync_client=True) as client:
        while True:
            flow_run = client.read_flow_run(flow_run_id)
            state = flow_run.state
            if state is not None and state.name != seen:
                seen = state.name
                print(f"  {flow_run.name}: {state.name}", file=sys.stderr)
            if state is not None and state.is_final():
                return flow_run
            time.sleep(poll_seconds)


def cmd_incidents(args: argparse.Namespace) -> int:
    """``opsflow incidents [--service NAME] [--open] [--json]`` and ``opsflow incidents show ID [--json]``."""
    import json

    words = list(args.words)
    show_id: int | None = None
    if words and words[0] == "show":
        if len(words) != 2:
            raise UsageError("usage: opsflow incidents show ID (one incident number)")
        try:
            show_id = int(words[1])
        except ValueError:
            raise UsageError(f"opsflow incidents show: ID must be an incident number, got {words[1]!r}") from None
        if args.service or args.open:
            raise UsageError("opsflow incidents show ID takes no --service or --open")
    elif words:
        raise UsageError(f"opsflow incidents: unknown action {words[0]!r} (expected: show ID)")
    config = _config_from(args)
    from flows._incidents import incident_output, incidents_output
    from opsflow.store import OpsStore

    try:
        store = OpsStore.open(config)
        if show_id is None:
            output = incidents_output(store, args.service, args.open, args.json, config.tzinfo)
        else:
            output = incident_output(store, show_id, args.json, config.tzinfo)
    except RoutineIncomplete as exc:
        if args.json:
            print(json.dumps({"status": "error", "error": str(exc), "incidents": []}))
        print(f"opsflow: {exc}", file=sys.stderr)
        return EXIT_INCOMPLETE
    if output is None:
        raise UsageError(f"opsflow incidents show: no incident {show_id}")
    print(json.dumps(output) if isinstance(output, dict) else output)
    return EXIT_OK


def cmd_store_stop(args: argparse.Namespace) -> int:
    """Stop the embedded ops store PostgreSQL (under ``$OPSFLOW_HOME``); the next command starts it again."""
    from opsflow.embedded import home_dir, stop_embedded

    data_dir = home_dir() / "pgdata"
    if stop_embedded(data_dir):
        print(f"{data_dir}: embedded PostgreSQL stopped (its data is kept)")
    else:
        print(f"{data_dir}: no embedded PostgreSQL running")
    return EXIT_OK


def cmd_store_prune(args: argparse.Namespace) -> int:
    """``opsflow store prune [--dry-run] [--json]``: drop the raw probe partitions older than
    ``store.raw_probe_retention`` (their rollups kept). A partition kept because its rollups could not be
    completed is a warning line, not a failure."""
    import json

    from opsflow.retention import cutoff
    from opsflow.store import OpsStore

    config = _config_from(args)
    retention = config.store.raw_probe_retention
    if retention is None:
        raise UsageError("opsflow store prune: store.raw_probe_retention is not set in the config (e.g. 90d)")
    store = OpsStore.open(config)
    services = [(service.name, service.interval) for service in config.services]
    pruned = store.drop_raw_probe_partitions(cutoff(retention), services, dry_run=args.dry_run)
    if args.json:
        print(json.dumps(pruned.as_dict()))
        return EXIT_OK
    verb = "would drop" if args.dry_run else "dropped"
    names = ", ".join(pruned.dropped) if pruned.dropped else "nothing"
    print(f"raw probe partitions ended before {pruned.as_dict()['older_than']}: {verb} {names}")
    return EXIT_OK


def cmd_automations_apply(args: argparse.Namespace) -> int:
    from prefect.settings import PREFECT_API_URL

    from deployments.automations import apply_automations

    config = load_config(default_config_path(args.config, os.environ))
    if not PREFECT_API_URL.value():
        # Without it Prefect would start a throwaway server, and the automations would vanish with it.
        raise UsageError("PREFECT_API_URL is not set: point it at the Prefect server to configure")
    print(apply_automations(config).summary())
    return EXIT_OK


def cmd_deploy(args: argparse.Namespace) -> int:
    """Work pool, automations, drill limits, then every deployment of prefect.yaml in the config's timezone."""
    from prefect.settings import PREFECT_API_URL

    from deployments.bootstrap import deploy

    config = load_config(default_config_path(args.config, os.environ))
    if not PREFECT_API_URL.value():
        # Without it Prefect would start a throwaway server, and the deployments would vanish with it.
        raise UsageError("PREFECT_API_URL is not set: point it at the Prefect server to deploy to")
    for deployment in deploy(config, say=lambda line: print(line, flush=True)):
        print(deployment.line())
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    """Every deployment of prefect.yaml served by this process until stopped; schedules stay active."""
    from prefect.settings import PREFECT_API_URL

    from deployments.bootstrap import bootstrap
    from deployments.runner import serve_all

    path = default_config_path(args.config, os.environ)
    config = load_config(path)
    if not PREFECT_API_URL.value():
        raise UsageError("PREFECT_API_URL is not set: point it at the Prefect server to serve the deployments on")

    def prepare() -> None:
        for line in bootstrap(config, work_pool=False).lines:  # served deployments need no work pool
            print(line, flush=True)

    try:
        serve_all(config=path, timezone=config.timezone, prepare=prepare)
    except KeyboardInterrupt:
        # Stopping is how serving ends: a SIGTERM or Ctrl-C that comes before Prefect's runner has put in
        # its own handler (still registering the deployments) is the same clean stop, exit 0.
        print("opsflow serve: stopped", file=sys.stderr)
    return EXIT_OK


def _existing_file(name: str) -> Path:
    path = Path(name)
    if not path.is_file():
        raise UsageError(f"{name}: no such file")
    return path


# -- parser -------------------------------------------------------------------


def _add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="PATH", help="config file (default: $OPSFLOW_CONFIG, else ./opsflow.yaml)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="opsflow",
        description="An operations team's recurring routines as Prefect flows.",
    )
    # Also before the command (`opsflow --config ops.yaml check-config`); one given after it wins.
    parser.add_argument("--config", dest="global_config", metavar="PATH", help=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = commands.add_parser("check-config", help="validate the config; exit 0 or 2")
    _add_config_option(check)
    check.set_defaults(handler=cmd_check_config)

    probes = commands.add_parser("probes", help="probe history")
    probes_actions = probes.add_subparsers(dest="action", required=True, metavar="ACTION")
    probes_import = probes_actions.add_parser(
        "import",
        help="load probe history from CSV (service,checked_at,ok,latency_ms[,status_code,error]); idempotent",
    )
    probes_import.add_argument("file", metavar="FILE.csv")
    _add_config_option(probes_import)
    probes_import.set_defaults(handler=cmd_probes_import)
    probes_export = probes_actions.add_parser(
        "export", help="write stored probe results as CSV in the import format (raw data, for any tool)"
    )
    probes_export.add_argument(
        "--service", action="append", default=[], metavar="NAME", help="only this service (repeatable)"
    )
    probes_export.add_argument("--from", dest="start", metavar="TIME", help="from this instant (inclusive, ISO 8601)")
    probes_export.add_argument("--to", dest="end", metavar="TIME", help="until this instant (exclusive, ISO 8601)")
    probes_export.add_argument("--output", metavar="FILE.csv", help="write here (atomically) instead of stdout")
    _add_config_option(probes_export)
    probes_export.set_defaults(handler=cmd_probes_export)

    capacity = commands.add_parser("capacity", help="capacity metric history")
    capacity_actions = capacity.add_subparsers(dest="action", required=True, metavar="ACTION")
    capacity_import = capacity_actions.add_parser(
        "import", help="load metric history from CSV (metric,ts,value); idempotent"
    )
    capacity_import.add_argument("file", metavar="FILE.csv")
    _add_config_option(capacity_import)
    capacity_import.set_defaults(handler=cmd_capacity_import)

    report = commands.add_parser("report", help="reports for people")
    report_kinds = report.add_subparsers(dest="kind", required=True, metavar="KIND")
    monthly = report_kinds.add_parser(
        "monthly", help="render (and with --send deliver) the monthly stakeholder report, from stored results"
    )
    monthly.add_argument("--month", metavar="YYYY-MM", help="the month to report (default: last month)")
    monthly.add_argument("--out", metavar="DIR", help="where the HTML and PDF go (default: reports.monthly.out_dir)")
    monthly.add_argument("--send", action="store_true", help="also email, post and upload it as configured")
    monthly.add_argument("--json", action="store_true", help="print exactly one JSON document on stdout")
    _add_config_option(monthly)
    monthly.set_defaults(handler=cmd_report_monthly)

    from flows.registry import ROUTINES

    run_routine = commands.add_parser("run", help="run one routine now, as a Prefect flow run")
    run_routine.add_argument("routine", choices=sorted(ROUTINES), metavar="ROUTINE", help=", ".join(sorted(ROUTINES)))
    run_routine.add_argument("--as-of", metavar="TIME", help="ISO 8601 instant to treat as now (past or future)")
    run_routine.add_argument(
        "--period",
        metavar="P",
        help="sla-report only: day, week, month, YYYY-MM or FROM..TO (default: day, the last complete one)",
    )
    run_routine.add_argument(
        "--shard",
        metavar="K/N",
        help="uptime-probe only: probe shard K of N (services split by a stable hash of their name)",
    )
    run_routine.add_argument("--json", action="store_true", help="print exactly one JSON document on stdout")
    _add_config_option(run_routine)
    run_routine.set_defaults(handler=cmd_run)

    sla = commands.add_parser("sla", help="SLA report maintenance")
    sla_actions = sla.add_subparsers(dest="action", required=True, metavar="ACTION")
    sla_rebuild = sla_actions.add_parser(
        "rebuild-rollups", help="rebuild the hourly, daily and weekly rollups from raw rows"
    )
    _add_config_option(sla_rebuild)
    sla_rebuild.set_defaults(handler=cmd_sla_rebuild_rollups)

    drill = commands.add_parser("drill", help="a DR drill of one database now (or, with --remote, on the server)")
    drill.add_argument("database", metavar="DATABASE", help="a database named under databases: in the config")
    drill.add_argument("--backup", metavar="KEY", help="restore this backup instead of the newest")
    drill.add_argument(
        "--keep", action="store_true", help="leave the restored database up; remove it later with --cleanup"
    )
    drill.add_argument(
        "--remote",
        action="store_true",
        help=f"trigger the {DRILL_DEPLOYMENT} deployment on $PREFECT_API_URL and follow it to its end",
    )
    drill.add_argument(
        "--cleanup",
        action="store_true",
        help="remove kept targets and leftovers of earlier drills of DATABASE (never a running drill's), then exit",
    )
    drill.add_argument("--json", action="store_true", help="print exactly one JSON document on stdout")
    _add_config_option(drill)
    drill.set_defaults(handler=cmd_drill)

    demo = commands.add_parser(
        "demo",
        help="start a Prefect server, PostgreSQL, S3 and sample services on loopback; serve and run every routine",
    )
    demo.add_argument(
        "--once", action="store_true", help="wait for the first runs, print their states, stop everything and exit"
    )
    demo.add_argument("--config", metavar="PATH", help="refused: the demo writes its own ($OPSFLOW_HOME/demo)")
    demo.set_defaults(handler=cmd_demo)

    incidents = commands.add_parser(
        "incidents",
        help="incident records: list them, or `incidents show ID` for one incident's timeline",
        usage="opsflow incidents [--service NAME] [--open] [--json] | opsflow incidents show ID [--json]",
    )
    incidents.add_argument("words", nargs="*", metavar="show ID", help="show one incident's timeline")
    incidents.add_argument("--service", metavar="NAME", help="only this service's incidents")
    incidents.add_argument("--open", action="store_true", help="only incidents still open")
    incidents.add_argument("--json", action="store_true", help="print exactly one JSON document on stdout")
    _add_config_option(incidents)
    incidents.set_defaults(handler=cmd_incidents)

    store = commands.add_parser("store", help="the embedded ops store")
    store_actions = store.add_subparsers(dest="action", required=True, metavar="ACTION")
    store_stop = store_actions.add_parser(
        "stop", help="stop the embedded PostgreSQL of the ops store (its data is kept; the next command restarts it)"
    )
    _add_config_option(store_stop)
    store_stop.set_defaults(handler=cmd_store_stop)
    store_prune = store_actions.add_parser(
        "prune", help="drop raw probe partitions older than store.raw_probe_retention (SLA rollups are kept)"
    )
    store_prune.add_argument("--dry-run", action="store_true", help="only say which partitions would be dropped")
    store_prune.add_argument("--json", action="store_true", help="print exactly one JSON document on stdout")
    _add_config_option(store_prune)
    store_prune.set_defaults(handler=cmd_store_prune)

    automations = commands.add_parser(
        "automations", help="Prefect automations that alert on failed, crashed, late runs"
    )
    automations_actions = automations.add_subparsers(dest="action", required=True, metavar="ACTION")
    automations_apply = automations_actions.add_parser(
        "apply", help="create or update the notification blocks and automations on $PREFECT_API_URL"
    )
    _add_config_option(automations_apply)
    automations_apply.set_defaults(handler=cmd_automations_apply)

    deploy = commands.add_parser(
        "deploy",
        help="set up the Prefect server (work pool, automations, drill limits) and register every deployment "
        "of prefect.yaml, schedules in the config's timezone",
    )
    _add_config_option(deploy)
    deploy.set_defaults(handler=cmd_deploy)

    serve = commands.add_parser(
        "serve", help="serve every deployment of prefect.yaml from this process (no worker); schedules stay active"
    )
    _add_config_option(serve)
    serve.set_defaults(handler=cmd_serve)

    return parser


def run(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run the command, and return its exit code (never raises for expected failures)."""
    # Our own progress at INFO, libraries' chatter (every HTTP request) only from WARNING; all on stderr.
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for name in ("opsflow", "flows", "tasks", "deployments"):
        logging.getLogger(name).setLevel(logging.INFO)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on bad usage, 0 on --help
        return int(exc.code or 0)
    if getattr(args, "config", None) is None and args.global_config is not None:
        args.config = args.global_config
    # $OPSFLOW_HOME (default ./.opsflow) read once against the directory the command started in: the
    # same store and spool for it after any chdir, and for the runs it starts.
    from opsflow.embedded import anchor_home

    anchor_home()
    handler: Callable[[argparse.Namespace], int] = args.handler
    received: list[int] = []
    restore = _stop_on_signals(received)
    try:
        return handler(args)
    except KeyboardInterrupt:
        # SIGINT, or SIGTERM turned into it: unwinding (and atexit) stops what the command started,
        # such as Prefect's temporary API server, instead of leaving it orphaned.
        signum = received[-1] if received else signal.SIGINT
        print(f"opsflow: stopped by {signal.Signals(signum).name}", file=sys.stderr)
        return 128 + signum
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    except UsageError as exc:
        print(str(exc), file=sys.stderr)  # messages name their file (and line) themselves
        return EXIT_USAGE
    except RoutineIncomplete as exc:
        if getattr(args, "json", False):  # still one JSON document (SPEC §5)
            print(incomplete_result(getattr(args, "routine", None) or "dr-drill", str(exc)).to_json())
        print(f"opsflow: {exc}", file=sys.stderr)
        return EXIT_INCOMPLETE
    finally:
        restore()


def _stop_on_signals(received: list[int]) -> Callable[[], None]:
    """Make SIGTERM and SIGINT raise KeyboardInterrupt (noting which came); returns the undo.

    Python's default SIGTERM ends the process at once, skipping ``finally`` and atexit.
    Only in the main thread (where signal handlers live); elsewhere nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def interrupt(signum: int, frame: object) -> None:
        received.append(signum)
        raise KeyboardInterrupt

    previous = {signum: signal.signal(signum, interrupt) for signum in (signal.SIGTERM, signal.SIGINT)}

    def restore() -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    return restore


def main() -> None:
    """Console entry point."""
    sys.exit(run())
