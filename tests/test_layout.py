"""SPEC §2: imports flow one way, so each layer can be read, tested and replaced on its own.

``flows/`` use ``tasks/``, ``reports/`` and ``opsflow/``; ``tasks/`` and ``reports/``
use ``opsflow/``; ``deployments/`` and the CLI use ``flows/``. The foundation
imports no routine, a task never imports a flow, and ``reports/`` only renders.
Imports inside functions count too (the CLI imports lazily to start fast).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("opsflow", "tasks", "flows", "reports", "deployments")

# What each layer may import of the others (its own layer always).
ALLOWED: dict[str, set[str]] = {
    "opsflow": set(),
    "opsflow/cli.py": {"flows", "deployments"},
    "tasks": {"opsflow"},
    "reports": {"opsflow"},
    "flows": {"tasks", "reports", "opsflow"},
    "deployments": {"flows", "opsflow"},
}


def imported_layers(path: Path) -> dict[str, int]:
    """The other layers ``path`` imports, each with the first line that does."""
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules = [node.module]
        else:
            continue
        for module in modules:
            top = module.split(".")[0]
            if top in LAYERS:
                found.setdefault(top, node.lineno)
    return found


def modules() -> list[Path]:
    return sorted(path for layer in LAYERS for path in (ROOT / layer).rglob("*.py"))


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_flow_one_way(path: Path) -> None:
    relative = path.relative_to(ROOT).as_posix()
    layer = relative.split("/")[0]
    allowed = ALLOWED.get(relative, ALLOWED[layer]) | {layer}
    wrong = {other: line for other, line in imported_layers(path).items() if other not in allowed}
    assert not wrong, f"{relative} imports {', '.join(f'{k}/ (line {v})' for k, v in wrong.items())}"


def test_the_rule_sees_a_wrong_import(tmp_path: Path) -> None:
    module = tmp_path / "cli.py"
    module.write_text("def main():\n    from tasks.sla import rebuild_rollups\n", encoding="utf-8")
    assert imported_layers(module) == {"tasks": 2}
