"""Great Expectations suites from config, computed inside PostgreSQL (SPEC §5 data-quality).

``run_expectations`` validates one configured table with GX 1.x through a SQL
data source (GX turns each expectation into SQL aggregates; the table is never
loaded into Python), in a file-backed GX context under ``gx_home`` so that Data
Docs are built, and returns one :class:`ExpectationOutcome` per configured
expectation, in config order.

Contract:

- The connection string reaches GX only as ``${OPSFLOW_GX_<NAME>}``, an
  environment variable set for the duration of the call: GX's files never hold
  a credential. The substitution also lets a Unix-socket URL through, which
  GX's own connection-string check refuses.
- A missing table raises :class:`MissingTable` (permanent); a server that
  cannot be reached raises :class:`~opsflow.errors.TransientFailure` (retried).
  A missing column is that expectation's ``error`` outcome; the others still run.
- Re-running a suite replaces its GX data source, suite, validation definition
  and checkpoint: nothing fails because they already exist.
- Great Expectations is imported on first use only (seconds), with its
  progress bars, warnings and analytics switched off.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opsflow.config import QualitySuite
from opsflow.errors import PermanentFailure, TransientFailure
from tasks.quality.history import MissingTable

__all__ = ["ExpectationOutcome", "GxRun", "MissingTable", "run_expectations", "split_table"]

SAMPLE_LIMIT = 20
# The index of an expectation in the config, carried through GX in its ``meta``:
# GX returns results in its own order.
_INDEX_KEY = "opsflow_index"
_DATASOURCE = "opsflow"
_ASSET = "table"
_BATCH = "whole-table"
_CONNECT_TIMEOUT_SECONDS = 10

# What an unexpected value is, per expectation, for a readable detail line.
_UNEXPECTED_NOUN = {
    "expect_column_values_to_not_be_null": "null",
    "expect_column_values_to_be_null": "not null",
    "expect_column_values_to_be_unique": "duplicated",
    "expect_column_values_to_be_between": "out of range",
    "expect_column_values_to_be_in_set": "not in the set",
    "expect_column_values_to_not_be_in_set": "in the forbidden set",
    "expect_column_values_to_match_regex": "not matching the pattern",
    "expect_column_values_to_not_match_regex": "matching the forbidden pattern",
}

log = logging.getLogger(__name__)
_import_lock = threading.Lock()
_gx_module: Any = None


@dataclass(frozen=True)
class ExpectationOutcome:
    """One configured expectation's result."""

    check: str  # "EXPECTATION:COLUMN", or "EXPECTATION" when it has no column (SPEC §5)
    status: str  # "ok" | "fail" | "error" (GX raised for it, e.g. a missing column: detail names it)
    detail: str  # one line: what failed
    unexpected_count: int | None
    unexpected_percent: float | None
    observed_value: Any  # JSON-safe; None where the expectation has none
    sample: list[Any]  # GX's partial_unexpected_list (at most 20 values); [] when none


@dataclass(frozen=True)
class GxRun:
    """All outcomes of one suite, and the Data Docs page of this validation when built."""

    outcomes: list[ExpectationOutcome]
    data_docs: str | None  # file:// URL of the Data Docs page of this validation


def split_table(table: str) -> tuple[str | None, str]:
    """``schema.table`` -> ``("schema", "table")``; a bare name -> ``(None, name)`` (the search path)."""
    schema, dot, name = table.partition(".")
    return (schema, name) if dot and schema and name else (None, table)


def run_expectations(suite: QualitySuite, url: str, gx_home: Path, run_name: str) -> GxRun:
    """Validate ``suite.table`` against ``suite.expectations`` with GX, inside PostgreSQL.

    ``url`` is the resolved PostgreSQL URL (libpq form, Unix sockets included);
    ``gx_home`` the directory of GX contexts (one per suite beneath it);
    ``run_name`` names the validation in GX's store and Data Docs.
    Raises :class:`MissingTable` or :class:`TransientFailure` (see module doc).
    """
    schema, table = split_table(suite.table)
    _check_table(url, schema, table, suite.table)
    if not suite.expectations:
        return GxRun(outcomes=[], data_docs=None)
    gx = _import_gx()
    variable = "OPSFLOW_GX_" + _slug(suite.name).upper().replace("-", "_")
    # GX's own warnings (schema_name is deprecated in favour of a search_path in the URL, which
    # would put the schema into the credential) are not the user's business.
    with _environment(variable, sqlalchemy_url(url)), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        context = _context(gx, gx_home / _slug(suite.name))
        datasource, batch = _batch_definition(context, variable, schema, table)
        try:
            checkpoint = _checkpoint(gx, context, suite, batch)
            from great_expectations.core.run_identifier import RunIdentifier

            result = checkpoint.run(run_id=RunIdentifier(run_name=run_name))
        finally:
            # GX keeps its engine (and pooled connections) on the data source.
            with contextlib.suppress(Exception):
                datasource.get_engine().dispose()
    ((identifier, validation),) = result.run_results.items()
    by_index = {int(r.expectation_config.meta[_INDEX_KEY]): r for r in validation.results}
    outcomes = [_outcome(suite.expectations[i].check_name, i, by_index.get(i)) for i in range(len(suite.expectations))]
    return GxRun(outcomes=outcomes, data_docs=_docs_url(context, identifier))


def sqlalchemy_url(url: str) -> str:
    """The libpq URL as SQLAlchemy's psycopg (3) dialect URL (psycopg2 is not installed)."""
    return re.sub(r"^postgres(?:ql)?://", "postgresql+psycopg://", url, count=1)


def _slug(name: str) -> str:
    """A file- and variable-safe form of a suite name, unique per name (a hash tail when changed)."""
    slug = re.sub(r"[^A-Za-z0-9_-]", "_", name)
    if slug != name:
        import hashlib

        slug += "_" + hashlib.sha256(name.encode()).hexdigest()[:8]
    return slug


def _check_table(url: str, schema: str | None, table: str, shown: str) -> None:
    """MissingTable unless the table exists; TransientFailure when the server cannot be reached.

    Parameterized ``to_regclass`` over a quoted identifier: a hostile name is
    only ever a name that does not exist.
    """
    import psycopg
    from psycopg import sql

    identifier = sql.Identifier(schema, table) if schema else sql.Identifier(table)
    try:
        with psycopg.connect(url, connect_timeout=_CONNECT_TIMEOUT_SECONDS, autocommit=True) as conn:
            found = conn.execute("select to_regclass(%s)", [identifier.as_string(conn)]).fetchone()
    except psycopg.OperationalError as exc:
        raise TransientFailure(f"cannot connect to the database of table {shown!r}: {_first_line(exc)}") from None
    except psycopg.Error as exc:
        raise PermanentFailure(f"cannot look up table {shown!r}: {_first_line(exc)}") from None
    if found is None or found[0] is None:
        raise MissingTable(f"table {shown!r} does not exist")


def _first_line(exc: BaseException) -> str:
    from opsflow.redact import redact

    text = str(exc).strip().splitlines()
    return redact(text[0] if text else type(exc).__name__)[:300]


def _import_gx() -> Any:
    """``great_expectations``, imported once, quiet: no progress bars, warnings or analytics."""
    global _gx_module
    with _import_lock:
        if _gx_module is None:
            # Before the import: GX reads it when it sets analytics up (no network here).
            os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                import great_expectations

            # Deprecations (schema_name) and notices are not the user's business.
            warnings.filterwarnings("ignore", module=r"great_expectations(\.|$)")
            logging.getLogger("great_expectations").setLevel(logging.ERROR)
            _gx_module = great_expectations
    return _gx_module


@contextlib.contextmanager
def _environment(name: str, value: str) -> Iterator[None]:
    """``name=value`` in the environment for the block only: GX substitutes ``${name}`` from it."""
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


def _context(gx: Any, root: Path) -> Any:
    """The suite's file-backed GX context (created on first use), progress bars and analytics off."""
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="file", context_root_dir=str(root))
    variables = context.variables
    bars = variables.progress_bars or {}
    enabled = bars.get("globally", True) if isinstance(bars, Mapping) else getattr(bars, "globally", True)
    if variables.analytics_enabled is not False or enabled:
        variables.analytics_enabled = False
        variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        variables.save()
    return context


def _batch_definition(context: Any, variable: str, schema: str | None, table: str) -> tuple[Any, Any]:
    """A fresh data source -> table asset -> whole-table batch definition (replacing an old one)."""
    from great_expectations.datasource.fluent.interfaces import TestConnectionError

    with contextlib.suppress(Exception):  # absent on the first run
        context.data_sources.delete(_DATASOURCE)
    try:
        datasource = context.data_sources.add_postgres(name=_DATASOURCE, connection_string="${" + variable + "}")
        asset_options: dict[str, Any] = {"schema_name": schema} if schema else {}
        asset = datasource.add_table_asset(name=_ASSET, table_name=table, **asset_options)
    except TestConnectionError as exc:
        # The table was there a moment ago: a connection problem (or a drop in between).
        raise TransientFailure(f"GX cannot reach table {table!r}: {_first_line(exc)}") from None
    return datasource, asset.add_batch_definition_whole_table(_BATCH)


def _checkpoint(gx: Any, context: Any, suite: QualitySuite, batch: Any) -> Any:
    """Suite, validation definition and checkpoint (Data Docs action), each added or replaced."""
    from great_expectations.checkpoint import UpdateDataDocsAction
    from great_expectations.expectations.registry import get_expectation_impl

    expectations = [
        get_expectation_impl(item.name)(**item.kwargs, meta={_INDEX_KEY: index})
        for index, item in enumerate(suite.expectations)
    ]
    gx_suite = context.suites.add_or_update(gx.ExpectationSuite(name=suite.name, expectations=expectations))
    definition = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=suite.name, data=batch, suite=gx_suite)
    )
    return context.checkpoints.add_or_update(
        gx.Checkpoint(
            name=suite.name,
            validation_definitions=[definition],
            actions=[UpdateDataDocsAction(name="data-docs")],
            # BASIC: counts and the 20-value sample, without SUMMARY's extra value-count queries.
            result_format="BASIC",
        )
    )


def _docs_url(context: Any, identifier: Any) -> str | None:
    try:
        sites = context.get_docs_sites_urls(resource_identifier=identifier)
    except Exception:  # Data Docs are a convenience: never the reason a check fails
        log.warning("GX Data Docs page not found", exc_info=True)
        return None
    return next((site["site_url"] for site in sites if site.get("site_url")), None)


def _outcome(check: str, index: int, result: Any) -> ExpectationOutcome:
    """One GX ExpectationValidationResult as an outcome (JSON-safe values)."""
    if result is None:  # GX dropped it: say so rather than pretend it passed
        return ExpectationOutcome(check, "error", "GX returned no result for it", None, None, None, [])
    data = result.to_json_dict()
    info = data.get("exception_info") or {}
    message = _exception_message(info)
    if message is not None:
        return ExpectationOutcome(check, "error", message, None, None, None, [])
    found: Mapping[str, Any] = data.get("result") or {}
    kwargs = data.get("expectation_config", {}).get("kwargs", {})
    name = data.get("expectation_config", {}).get("type", check.split(":")[0])
    count = found.get("unexpected_count")
    percent = found.get("unexpected_percent")
    status = "ok" if data.get("success") else "fail"
    if count is not None:
        noun = _UNEXPECTED_NOUN.get(name, "unexpected")
        total = found.get("element_count")
        of = f" of {total:,}" if isinstance(total, int) else ""
        share = f" ({percent:.3g}%)" if isinstance(percent, int | float) else ""
        detail = f"{count:,}{of} rows{share} {noun}"
        if status == "fail" and "mostly" in kwargs:
            detail += f" (allowed: {100 * (1 - float(kwargs['mostly'])):.3g}%)"
    else:
        detail = f"observed {_short(found.get('observed_value'))}{_expected(kwargs)}"
    sample = list(found.get("partial_unexpected_list") or [])[:SAMPLE_LIMIT]
    return ExpectationOutcome(
        check=check,
        status=status,
        detail=detail,
        unexpected_count=int(count) if count is not None else None,
        unexpected_percent=float(percent) if percent is not None else None,
        observed_value=found.get("observed_value"),
        sample=sample,
    )


def _exception_message(info: Mapping[str, Any]) -> str | None:
    """The first exception GX caught for an expectation (flat or per metric), as one line."""
    entries = [info] if "raised_exception" in info else [v for v in info.values() if isinstance(v, Mapping)]
    for entry in entries:
        if entry.get("raised_exception") or entry.get("exception_message"):
            text = str(entry.get("exception_message") or "GX raised an error").strip()
            missing = re.search(r'column "?([^"]+?)"? in BatchData does not exist', text)
            if missing:
                return f"column {missing.group(1)!r} does not exist"
            return _first_line(Exception(text))
    return None


def _expected(kwargs: Mapping[str, Any]) -> str:
    low, high = kwargs.get("min_value"), kwargs.get("max_value")
    if low is not None and high is not None:
        return f", expected between {_short(low)} and {_short(high)}"
    if low is not None:
        return f", expected >= {_short(low)}"
    if high is not None:
        return f", expected <= {_short(high)}"
    if "value" in kwargs:
        return f", expected {_short(kwargs['value'])}"
    return ""


def _short(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{int(value):,}" if float(value).is_integer() else f"{value:,.6g}"
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."
