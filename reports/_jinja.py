"""The one jinja2 setup of every HTML report (monthly, digest, status page): templates from
``reports/templates``, autoescaping on (names and details come from configs and probed services),
undefined names an error, block whitespace trimmed. jinja2 is imported on first use."""

from __future__ import annotations

from pathlib import Path
from typing import Any

TEMPLATES = Path(__file__).parent / "templates"


def jinja_environment(**globals: Any) -> Any:
    """A jinja2 ``Environment`` over :data:`TEMPLATES` with ``globals`` (formatting helpers) set."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    environment = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.globals.update(globals)
    return environment
