"""Runtime checks are real checks, not ``assert`` (which ``python -O`` strips): the drill's safety guards
refuse any database but its own scratch databases, and no module of the project asserts at run time."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from opsflow.errors import PermanentFailure
from tasks.drill import targets
from tasks.drill.names import DB_PREFIX
from tasks.drill.targets import TargetPlan

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("opsflow", "tasks", "flows", "reports", "deployments")
NOT_SCRATCH = ["postgres", "orders", "template1", "opsflow", "Opsflow_drill_orders_20261122060000", ""]


@pytest.fixture
def no_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    """The guards refuse before connecting: reaching a drill server is a test failure."""

    def connect(url: str) -> None:
        pytest.fail(f"connected to {url} for a database the drill must never touch")

    monkeypatch.setattr(targets, "_connect_server", connect)


@pytest.mark.usefixtures("no_connection")
@pytest.mark.parametrize("name", NOT_SCRATCH)
def test_create_refuses_a_database_that_is_not_a_drill_scratch_database(name: str) -> None:
    with pytest.raises(PermanentFailure, match=r"refusing to create database .*not a drill scratch database"):
        targets._create_database("postgresql://drill.invalid/postgres", name, comment=None)


@pytest.mark.usefixtures("no_connection")
@pytest.mark.parametrize("name", NOT_SCRATCH)
def test_drop_refuses_a_database_that_is_not_a_drill_scratch_database(name: str) -> None:
    with pytest.raises(PermanentFailure, match=r"refusing to drop database .*not a drill scratch database"):
        targets._drop_database("postgresql://drill.invalid/postgres", name)


@pytest.mark.usefixtures("no_connection")
def test_teardown_of_a_half_made_target_refuses_a_plan_naming_another_database(tmp_path: Path) -> None:
    plan = TargetPlan(
        database="orders",
        kind="server",
        scratch="orders",
        workdir=tmp_path,
        keep=False,
        server_url="postgresql://drill.invalid/postgres",
    )
    with pytest.raises(PermanentFailure, match="refusing to drop database 'orders'"):
        targets.teardown_partial(plan)


def test_a_server_plan_without_a_drill_server_is_an_error(tmp_path: Path) -> None:
    plan = TargetPlan(database="orders", kind="server", scratch=f"{DB_PREFIX}orders_1", workdir=tmp_path, keep=False)
    with pytest.raises(ValueError, match="has no drill server"):
        targets.teardown_partial(plan)


def test_the_guards_hold_with_assertions_disabled() -> None:
    """Under ``python -O`` (no ``assert``), the drill still refuses to create or drop a foreign database."""
    script = textwrap.dedent(
        """
        import sys
        from opsflow.errors import PermanentFailure
        from tasks.drill import targets

        assert False, "assertions are on"  # stripped by -O
        def connect(url):
            raise SystemExit("connected to the drill server")
        targets._connect_server = connect
        for call in (
            lambda: targets._create_database("postgresql://drill.invalid/postgres", "orders", comment=None),
            lambda: targets._drop_database("postgresql://drill.invalid/postgres", "postgres"),
        ):
            try:
                call()
            except PermanentFailure as exc:
                print("refused:", exc)
            else:
                raise SystemExit("not refused")
        """
    )
    done = subprocess.run(
        [sys.executable, "-O", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("refused:") == 2, done.stdout
    assert "refusing to create database 'orders'" in done.stdout
    assert "refusing to drop database 'postgres'" in done.stdout


def runtime_asserts(path: Path) -> list[int]:
    """The lines of ``assert`` statements in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Assert)]


def test_no_module_asserts_at_run_time() -> None:
    """``assert`` is for tests: a check the code relies on raises an error of ``opsflow.errors`` (or a
    ``ValueError``/``RuntimeError`` for a programming error), which ``python -O`` keeps."""
    found = {
        str(path.relative_to(ROOT)): lines
        for layer in LAYERS
        for path in sorted((ROOT / layer).rglob("*.py"))
        if (lines := runtime_asserts(path))
    }
    assert not found, f"assert statements outside tests: {found}"


def test_the_rule_sees_an_assert(tmp_path: Path) -> None:
    module = tmp_path / "module.py"
    module.write_text("def f(x):\n    assert x is not None\n    return x\n", encoding="utf-8")
    assert runtime_asserts(module) == [2]
