"""Examples in docstrings run: every module of the project with a ``>>>`` example passes ``doctest``.

An example that needs a server (the ops store, S3, a Prefect API) is not a ``>>>`` example but a ``::``
literal block; nothing is skipped with ``# doctest: +SKIP``.
"""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

import opsflow.redact

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("opsflow", "tasks", "flows", "reports", "deployments")
# At least this many modules have examples (17 when this test was written): examples that go, go on purpose.
MIN_MODULES = 17


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def sources() -> list[Path]:
    return sorted(path for layer in LAYERS for path in (ROOT / layer).rglob("*.py"))


def modules_with_examples() -> list[str]:
    return [module_name(path) for path in sources() if ">>>" in path.read_text(encoding="utf-8")]


def test_modules_have_examples() -> None:
    assert len(modules_with_examples()) >= MIN_MODULES, modules_with_examples()


@pytest.mark.parametrize("name", modules_with_examples())
def test_examples_run(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # An example may register a made-up secret; it stays masked only for the example's own run.
    monkeypatch.setattr(opsflow.redact, "_secrets", opsflow.redact._secrets)
    module = importlib.import_module(name)
    outcome = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert outcome.attempted > 0, f"{name} has '>>>' outside a docstring example"
    assert outcome.failed == 0, f"{outcome.failed} of {outcome.attempted} examples of {name} failed (output above)"


def test_no_example_is_skipped() -> None:
    skipped = [str(path.relative_to(ROOT)) for path in sources() if "doctest: +SKIP" in path.read_text("utf-8")]
    assert not skipped, f"examples that do not run (make them run, or a '::' block): {skipped}"
