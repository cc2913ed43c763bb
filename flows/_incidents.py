"""What ``opsflow incidents`` shows: incident records read from the ops store, as JSON or terminal text.

Not a routine: the command line's way to the readers (``opsflow.incident_store``) and the renderers
(``reports.incidents``), as the layers go (the CLI uses ``flows/``).
"""

from __future__ import annotations

from datetime import tzinfo
from typing import Any

from opsflow.incident_store import incident_timeline, list_incidents
from opsflow.store import OpsStore
from reports.incidents import render_incidents, render_timeline


def incidents_output(
    store: OpsStore, service: str | None, open_only: bool, as_json: bool, zone: tzinfo
) -> str | dict[str, Any]:
    """The list: SPEC §5's JSON document, or the terminal table."""
    records = list_incidents(store, service=service, open_only=open_only)
    if as_json:
        return {"incidents": [r.to_json() for r in records]}
    return render_incidents(records, zone)


def incident_output(store: OpsStore, id: int, as_json: bool, zone: tzinfo) -> str | dict[str, Any] | None:
    """One incident with its timeline (None when there is no incident ``id``)."""
    found = incident_timeline(store, id)
    if found is None:
        return None
    record, events = found
    if as_json:
        return {**record.to_json(), "timeline": [e.to_json() for e in events]}
    return render_timeline(record, events, zone)
