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
from pathlib import Path

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
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
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
