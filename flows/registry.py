"""Every routine's flow by its name, imported only when asked for (the CLI stays light).

The CLI reaches routines only through here: their flows, their pre-flight checks,
the result a finished run carries, and its rendering for the terminal.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from opsflow.config import Config
from opsflow.results import RoutineResult

# ROUTINE name -> "module:flow function"
ROUTINES: dict[str, str] = {
    "backup-verification": "flows.backup_verification:backup_verification",
    "uptime-probe": "flows.uptime_probe:uptime_probe",
    "sla-report": "flows.sla_report:sla_report",
    "capacity-collect": "flows.capacity_collect:capacity_collect",
    "capacity-trends": "flows.capacity_trends:capacity_trends",
    "data-quality": "flows.data_quality:data_quality",
    "expiry-check": "flows.expiry_check:expiry_check",
    "ops-digest": "flows.ops_digest:ops_digest",
    "monthly-report": "flows.monthly_report:monthly_report",
}

# Flows with a command of their own rather than `opsflow run` (`opsflow drill`): flow name -> "module:flow function"
OTHER_FLOWS: dict[str, str] = {
    "dr-drill": "flows.dr_drill:dr_drill",
}


def load_routine(name: str) -> Any:
    """The Prefect flow of routine ``name``."""
    module, attribute = {**OTHER_FLOWS, **ROUTINES}[name].split(":")
    return getattr(importlib.import_module(module), attribute)


def preflight(name: str, config: Config, params: Mapping[str, Any], now: datetime) -> None:
    """Refuse bad parameters of routine ``name`` before a flow run exists (``UsageError``: exit 2)."""
    module = importlib.import_module(ROUTINES[name].split(":")[0])
    declaration = getattr(module, "ROUTINE", None)
    if declaration is not None and declaration.preflight is not None:
        declaration.preflight(config, params, now)


def result_of(state: Any) -> RoutineResult | None:
    """The result a finished routine flow run carries, if it carries one."""
    from flows._routine import routine_result

    return routine_result(state)


def render_for_terminal(result: RoutineResult, timezone: str, rich_terminal: bool) -> str:
    """A routine's result as ``opsflow run`` prints it (a table per item)."""
    from reports.terminal import render_result

    return render_result(result, timezone, rich_terminal=rich_terminal)
