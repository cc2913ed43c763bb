"""The ``opsflow`` command line (SPEC §5).

Start-up stays light (argparse, pydantic, yaml): Prefect, psycopg and the
routines are imported inside the command that needs them, so
``opsflow check-config`` answers in well under a second.

Exit codes: 0 all ok (warnings allowed), 1 findings (an item is ``fail`` or
``error``), 2 bad usage, config or input, 3 the command could not complete.

    $ opsflow check-config --config ops.yaml
    $ opsflow probes import history.csv
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from opsflow.config import Config, ConfigError, default_config_path, load_config
from opsflow.errors import RoutineIncomplete, UsageError
from opsflow.results import EXIT_INCOMPLETE, EXIT_OK, EXIT_USAGE

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
    from opsflow.history_csv import read_probe_csv
    from opsflow.store import OpsStore

    config = _config_from(args)
    rows = read_probe_csv(_existing_file(args.file))
    known = {service.name for service in config.services}
    unknown = sorted({row.service for row in rows} - known)
    if known and unknown:
        log.warning("importing history of services not in the config: %s", ", ".join(unknown))
    count = OpsStore.open(config).write_probe_results(rows)
    print(f"{args.file}: {count.rows} probe results read, {count.inserted} new, {count.unchanged} already stored")
    return EXIT_OK


def cmd_capacity_import(args: argparse.Namespace) -> int:
    from opsflow.history_csv import read_capacity_csv
    from opsflow.store import OpsStore

    config = _config_from(args)
    rows = read_capacity_csv(_existing_file(args.file))
    count = OpsStore.open(config).write_capacity_samples(rows)
    print(
        f"{args.file}: {count.rows} samples read, {count.inserted} new, {count.updated} updated, "
        f"{count.unchanged} already stored"
    )
    return EXIT_OK


def parse_as_of(text: str | None, config: Config) -> datetime | None:
    """``--as-of``: ISO 8601; a time without offset, or a date, is read in the config's timezone."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--as-of: expected an ISO 8601 time like 2026-11-22T06:00:00Z, got {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=config.tzinfo)


def cmd_run(args: argparse.Namespace) -> int:
    config = _config_from(args)  # a bad config is refused before anything runs
    as_of = parse_as_of(args.as_of, config)
    path = default_config_path(args.config, os.environ)
    config_path = str(path.resolve()) if path.exists() else None
    from flows.registry import load_routine

    state = load_routine(args.routine)(as_of=as_of, config_path=config_path, return_state=True)
    return report_routine(args.routine, state, as_json=args.json)


def report_routine(routine: str, state: Any, as_json: bool) -> int:
    """Print a finished flow run's result (one JSON document with ``--json``) and return the exit code."""
    from opsflow.results import RoutineResult

    outcome = state.result(raise_on_failure=False)
    if not isinstance(outcome, RoutineResult):
        from opsflow.redact import redact

        reason = str(outcome) if isinstance(outcome, BaseException) else (state.message or state.name)
        print(f"opsflow: {routine} could not complete: {redact(reason)}", file=sys.stderr)
        return EXIT_INCOMPLETE
    if as_json:
        print(outcome.to_json())
    else:
        print(f"{routine}: {outcome.status.upper()} as of {outcome.as_of.isoformat()} (flow run {outcome.flow_run_id})")
        for item in outcome.items:
            problems = [c for c in item.checks if c.status != "ok"]
            print(f"  {item.status:5}  {item.name}")
            for check in problems:
                print(f"         {check.status:5}  {check.check}: {check.detail}")
    return outcome.exit_code


def cmd_automations_apply(args: argparse.Namespace) -> int:
    from prefect.settings import PREFECT_API_URL

    from deployments.automations import apply_automations

    config = load_config(default_config_path(args.config, os.environ))
    if not PREFECT_API_URL.value():
        # Without it Prefect would start a throwaway server, and the automations would vanish with it.
        raise UsageError("PREFECT_API_URL is not set: point it at the Prefect server to configure")
    print(apply_automations(config).summary())
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

    capacity = commands.add_parser("capacity", help="capacity metric history")
    capacity_actions = capacity.add_subparsers(dest="action", required=True, metavar="ACTION")
    capacity_import = capacity_actions.add_parser(
        "import", help="load metric history from CSV (metric,ts,value); idempotent"
    )
    capacity_import.add_argument("file", metavar="FILE.csv")
    _add_config_option(capacity_import)
    capacity_import.set_defaults(handler=cmd_capacity_import)

    from flows.registry import ROUTINES

    run_routine = commands.add_parser("run", help="run one routine now, as a Prefect flow run")
    run_routine.add_argument("routine", choices=sorted(ROUTINES), metavar="ROUTINE", help=", ".join(sorted(ROUTINES)))
    run_routine.add_argument("--as-of", metavar="TIME", help="ISO 8601 instant to treat as now (past or future)")
    run_routine.add_argument("--json", action="store_true", help="print exactly one JSON document on stdout")
    _add_config_option(run_routine)
    run_routine.set_defaults(handler=cmd_run)

    automations = commands.add_parser(
        "automations", help="Prefect automations that alert on failed, crashed, late runs"
    )
    automations_actions = automations.add_subparsers(dest="action", required=True, metavar="ACTION")
    automations_apply = automations_actions.add_parser(
        "apply", help="create or update the notification blocks and automations on $PREFECT_API_URL"
    )
    _add_config_option(automations_apply)
    automations_apply.set_defaults(handler=cmd_automations_apply)

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
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    except UsageError as exc:
        print(str(exc), file=sys.stderr)  # messages name their file (and line) themselves
        return EXIT_USAGE
    except RoutineIncomplete as exc:
        print(f"opsflow: {exc}", file=sys.stderr)
        return EXIT_INCOMPLETE


def main() -> None:
    """Console entry point."""
    sys.exit(run())
