"""Every routine's flow by its name, imported only when asked for (the CLI stays light).

>>> load_routine("backup-verification")    # doctest: +SKIP
<prefect.flows.Flow object ...>
"""

from __future__ import annotations

import importlib
from typing import Any

# ROUTINE name -> "module:flow function"
ROUTINES: dict[str, str] = {
    "backup-verification": "flows.backup_verification:backup_verification",
    "uptime-probe": "flows.uptime_probe:uptime_probe",
    "sla-report": "flows.sla_report:sla_report",
}

# Flows with a command of their own rather than `opsflow run` (`opsflow drill`): flow name -> "module:flow function"
OTHER_FLOWS: dict[str, str] = {
    "dr-drill": "flows.dr_drill:dr_drill",
}


def load_routine(name: str) -> Any:
    module, attribute = {**OTHER_FLOWS, **ROUTINES}[name].split(":")
    return getattr(importlib.import_module(module), attribute)
