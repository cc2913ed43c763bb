"""The human output of ``opsflow run ROUTINE`` (``reports/terminal.py``): pure rendering, no servers."""

from __future__ import annotations

import ast
import doctest
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

import reports.terminal
from opsflow.results import Check, Item, Period, RoutineResult
from reports.terminal import render_incomplete, render_result

ANSI = re.compile(r"\x1b\[[0-9;]*m")
BERLIN = "Europe/Berlin"
AS_OF = datetime(2026, 11, 22, 6, 0, 0, 123456, tzinfo=UTC)  # 07:00:00 CET


@pytest.fixture(autouse=True)
def _colours_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    """rich honours NO_COLOR (emphasis stays, colours go); the tests must not depend on the shell they run in."""
    monkeypatch.delenv("NO_COLOR", raising=False)


def plain(result: RoutineResult, timezone: str = BERLIN) -> str:
    return render_result(result, timezone, rich_terminal=False)


def rich(result: RoutineResult, timezone: str = BERLIN, width: int = 200) -> str:
    return render_result(result, timezone, rich_terminal=True, width=width)


def visible(text: str) -> str:
    return ANSI.sub("", text)


def line_with(text: str, needle: str) -> str:
    lines = [line for line in text.splitlines() if needle in line]
    assert len(lines) == 1, f"{needle!r} on {len(lines)} lines of:\n{text}"
    return lines[0]


def backups() -> RoutineResult:
    return RoutineResult(
        routine="backup-verification",
        as_of=AS_OF,
        flow_run_id="0193c0de-run",
        items=[
            Item(
                name="orders-db",
                checks=[
                    Check(check="present", status="ok", detail="12 backups under s3main:postgres/orders/"),
                    Check(check="fresh", status="ok", detail="newest backup is 2h old, limit 26h"),
                ],
                metrics={
                    "newest_key": "postgres/orders/2026-11-22.dump",
                    "newest_taken_at": "2026-11-22T04:00:00.654321+00:00",
                    "newest_bytes": 1_500_000_000,
                    "age_seconds": 7200,
                    "count": 12,
                },
            ),
            Item(
                name="billing-db",
                checks=[
                    Check(check="present", status="ok", detail="9 backups under s3main:postgres/billing/"),
                    Check(
                        check="fresh",
                        status="fail",
                        detail="newest backup is 31h old, limit 26h",
                        observed=111600,
                        expected=93600,
                    ),
                ],
                metrics={
                    "newest_key": "postgres/billing/2026-11-20.dump",
                    "newest_taken_at": "2026-11-20T23:00:00+00:00",
                    "newest_bytes": 250_000_000,
                    "age_seconds": 111600,
                    "count": 9,
                },
            ),
        ],
    )


def probes() -> RoutineResult:
    return RoutineResult(
        routine="uptime-probe",
        as_of=AS_OF,
        items=[
            Item(
                name="api",
                checks=[Check(check="probe", status="ok", detail="HTTP 200 in 123ms", observed=123.4)],
                metrics={"ok": True, "latency_ms": 123.4, "status_code": 200, "error": None, "incident_open": False},
            ),
            Item(
                name="shop",
                checks=[
                    Check(check="probe", status="fail", detail="ConnectError: connection refused"),
                    Check(
                        check="incident",
                        status="fail",
                        detail="incident open since 2026-11-22T05:57:00.250000+00:00 after 3 consecutive failures",
                    ),
                ],
                metrics={
                    "ok": False,
                    "latency_ms": None,
                    "status_code": None,
                    "error": "ConnectError: connection refused",
                    "incident_open": True,
                },
            ),
        ],
    )


def sla() -> RoutineResult:
    return RoutineResult(
        routine="sla-report",
        as_of=datetime(2026, 11, 5, 6, tzinfo=UTC),
        period=Period(
            label="2026-10",
            start=datetime(2026, 9, 30, 22, tzinfo=UTC),  # Berlin midnight, CEST
            end=datetime(2026, 10, 31, 23, tzinfo=UTC),  # Berlin midnight, CET
        ),
        outputs={"csv": "reports/out/sla-month-2026-10.csv"},
        items=[
            Item(
                name="api",
                checks=[
                    Check(check="availability", status="ok", detail="99.950% available, SLO 99.9%"),
                    Check(check="coverage", status="warn", detail="85.00% of the period measured, minimum 90%"),
                ],
                metrics={
                    "availability_pct": 99.95,
                    "slo_availability_pct": 99.9,
                    "error_budget_remaining_pct": 50.0,
                    "coverage_pct": 85.0,
                    "latency_p95_ms": 234.5,
                    "incidents": [{"start": "2026-10-03T10:00:00Z", "end": "2026-10-03T10:05:00Z", "seconds": 300}],
                    "mttr_seconds": 300,
                },
            )
        ],
    )


# -- headline and times ---------------------------------------------------------------------------


def test_headline_names_status_time_counts_and_flow_run() -> None:
    first = plain(backups()).splitlines()[0]
    assert first == (
        "backup-verification: FAIL · as of 2026-11-22 07:00:00 CET · 2 items: 1 ok, 0 warn, 1 fail, 0 error"
        " · flow run 0193c0de-run"
    )


def test_times_are_in_the_given_timezone_to_the_second() -> None:
    berlin, utc = plain(backups()), plain(backups(), "UTC")
    assert "as of 2026-11-22 07:00:00 CET" in berlin
    assert "written 2026-11-22 05:00:00 CET" in line_with(berlin, "orders-db")
    assert "as of 2026-11-22 06:00:00 UTC" in utc
    assert "written 2026-11-22 04:00:00 UTC" in line_with(utc, "orders-db")
    for text in (berlin, utc):
        assert not re.search(r"\d{2}:\d{2}:\d{2}\.\d", text), text  # no microseconds
        assert "+00:00" not in text
        assert "T04:00" not in text


def test_instants_inside_check_details_are_shown_in_the_timezone() -> None:
    text = plain(probes())
    assert "incident: incident open since 2026-11-22 06:57:00 CET after 3 consecutive failures" in text
    assert ".250000" not in text


# -- backup-verification ----------------------------------------------------------------------------


def test_backup_rows_show_age_size_and_count_and_only_failing_checks() -> None:
    text = plain(backups())
    assert "\x1b" not in text
    assert "newest 2h old" in line_with(text, "orders-db")
    assert "1.5GB" in line_with(text, "orders-db")
    assert "12 backups" in line_with(text, "orders-db")
    billing = line_with(text, "billing-db")
    assert billing.startswith("fail")
    assert "newest 31h old" in billing and "250MB" in billing and "9 backups" in billing
    assert "fresh: newest backup is 31h old, limit 26h" in text
    # ok checks are not listed
    assert "present" not in text
    assert "12 backups under" not in text
    assert "limit 26h" not in line_with(text, "orders-db")


def test_a_failing_check_is_listed_under_its_own_item() -> None:
    backup_sets = backups()
    backup_sets.items.reverse()  # billing-db (failing) first, then orders-db
    lines = plain(backup_sets).splitlines()
    billing = next(i for i, line in enumerate(lines) if "billing-db" in line)
    orders = next(i for i, line in enumerate(lines) if "orders-db" in line)
    finding = next(i for i, line in enumerate(lines) if "fresh:" in line)
    assert billing < finding < orders
    assert " ".join(lines[finding].split()) == "fail fresh: newest backup is 31h old, limit 26h"


def test_plain_columns_are_aligned() -> None:
    lines = plain(backups()).splitlines()
    header = line_with("\n".join(lines), "status")
    column = header.index("details")
    for name in ("orders-db", "billing-db"):
        row = line_with("\n".join(lines), name)
        assert row.index("newest") == column
    assert line_with("\n".join(lines), "fresh:").index("fail") == column


def test_a_backup_set_without_backups() -> None:
    result = RoutineResult(
        routine="backup-verification",
        as_of=AS_OF,
        items=[
            Item(
                name="ledger-db",
                checks=[Check(check="present", status="fail", detail="no backup under local:/")],
                metrics={"count": 0},
            )
        ],
    )
    text = plain(result)
    assert "no backups" in line_with(text, "ledger-db")
    assert "present: no backup under local:/" in text


# -- uptime-probe --------------------------------------------------------------------------------------


def test_probe_rows_show_status_and_latency_or_the_error() -> None:
    text = plain(probes())
    assert "\x1b" not in text
    assert "HTTP 200 in 123ms" in line_with(text, "api ")
    shop = line_with(text, "shop")
    assert shop.startswith("fail")
    assert "ConnectError: connection refused" in shop
    assert "incident open" in shop
    assert "probe: ConnectError: connection refused" in text
    assert "probe: HTTP 200" not in text  # the ok check is not listed


# -- sla-report --------------------------------------------------------------------------------------------


def test_sla_report_shows_period_bounds_outputs_and_figures() -> None:
    text = plain(sla())
    assert "\x1b" not in text
    assert "period 2026-10: 2026-10-01 00:00:00 → 2026-11-01 00:00:00 Europe/Berlin" in text
    assert "csv: reports/out/sla-month-2026-10.csv" in text
    api = line_with(text, "availability")
    assert "availability 99.950% (SLO 99.9%)" in api
    assert "coverage 85.0%" in api
    assert "budget left 50.0%" in api
    assert "p95 234ms" in api
    assert "1 incident, MTTR 5m" in api


def test_period_bounds_follow_the_timezone() -> None:
    assert "period 2026-10: 2026-09-30 22:00:00 → 2026-10-31 23:00:00 UTC" in plain(sla(), "UTC")


def test_a_warn_check_is_listed() -> None:
    text = plain(sla())
    finding = line_with(text, "coverage:")
    assert finding.split()[0] == "warn"
    assert "coverage: 85.00% of the period measured, minimum 90%" in finding
    assert "99.950% available, SLO" not in text  # the ok availability check is not


# -- dr-drill and other routines --------------------------------------------------------------------------


def test_drill_row_shows_rto_and_rpo_against_targets() -> None:
    result = RoutineResult(
        routine="dr-drill",
        as_of=AS_OF,
        items=[
            Item(
                name="orders",
                checks=[
                    Check(check="rto", status="ok", detail="restored and validated in 42s"),
                    Check(check="rpo", status="fail", detail="backup is 30h old, target 26h"),
                ],
                metrics={
                    "rto_seconds": 42.314,
                    "rpo_seconds": 108000,
                    "rto_target_seconds": 1800,
                    "rpo_target_seconds": 93600,
                    "backup_taken_at": "2026-11-21T00:00:00+00:00",
                },
            )
        ],
    )
    text = plain(result)
    row = line_with(text, "orders")
    assert "RTO 42.31s (target 30m)" in row
    assert "RPO 30h (target 26h)" in row
    assert "backup written 2026-11-21 01:00:00 CET" in row
    assert "rpo: backup is 30h old, target 26h" in text
    assert "restored and validated" not in text


def test_other_routines_show_up_to_three_scalar_metrics() -> None:
    result = RoutineResult(
        routine="capacity-trends",
        as_of=AS_OF,
        items=[
            Item(
                name="root-disk",
                checks=[Check(check="forecast", status="ok", detail="no crossing within a year")],
                metrics={
                    "history": [1, 2, 3],
                    "current": 71.234,
                    "threshold": 80,
                    "crossing_date": "2027-01-10T00:00:00+00:00",
                    "slope_per_day": 0.5,
                },
            )
        ],
    )
    row = line_with(plain(result), "root-disk")
    assert "current 71.23" in row
    assert "threshold 80" in row
    assert "crossing_date 2027-01-10 01:00:00 CET" in row
    assert "slope_per_day" not in row  # a fourth scalar
    assert "history" not in row  # not a scalar


def test_a_run_level_error_is_shown() -> None:
    result = RoutineResult(routine="uptime-probe", as_of=AS_OF, error="the ops store is unreachable; results spooled")
    text = plain(result)
    assert text.splitlines()[0].startswith("uptime-probe: ERROR · ")
    assert "error: the ops store is unreachable; results spooled" in text
    assert "no items" in text


# -- secrets ------------------------------------------------------------------------------------------------


def test_secrets_are_redacted_everywhere() -> None:
    leaky = "postgresql://ops:hunter2@db.internal/opsflow"
    result = RoutineResult(
        routine="data-quality",
        as_of=AS_OF,
        error=f"cannot reach {leaky}",
        outputs={"html": "s3://ops:hunter2@bucket/report.html"},
        items=[
            Item(
                name="events",
                checks=[Check(check="freshness:created_at", status="error", detail=f"connect to {leaky} failed")],
                metrics={"url": leaky},
            )
        ],
    )
    for text in (plain(result), visible(rich(result))):
        assert "hunter2" not in text
        assert "postgresql://ops:***@db.internal/opsflow" in text
        assert "html: s3://ops:***@bucket/report.html" in text


# -- rich -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [backups, probes, sla], ids=["backups", "probes", "sla"])
def test_rich_mode_has_colours_and_the_same_facts(make) -> None:
    result = make()
    coloured, text = rich(result), plain(result)
    assert "\x1b[" in coloured
    shown = " ".join(visible(coloured).split())
    facts = [" ".join(line.split()) for line in text.splitlines() if line.strip()]
    assert len(facts) >= 4
    for fact in facts:  # every line of the plain output, headline, rows, findings, period and outputs
        assert fact in shown, fact


def test_rich_mode_colours_statuses() -> None:
    coloured = rich(backups())
    assert re.search(r"\x1b\[31mfail", coloured)  # red
    assert re.search(r"\x1b\[32mok", coloured)  # green
    assert re.search(r"\x1b\[33mwarn", rich(sla()))  # yellow


def test_rich_mode_fits_the_width() -> None:
    width = 60
    shown = visible(rich(probes(), width=width))
    assert all(len(line) <= width for line in shown.splitlines())
    assert "ConnectError" in shown


def test_rich_mode_takes_names_and_details_literally() -> None:
    result = RoutineResult(
        routine="expiry-check",
        as_of=AS_OF,
        items=[
            Item(
                name="[bold]mail-tls[/bold] :smile:",
                checks=[Check(check="expiry", status="warn", detail="subject [/CN=mail] expires in 12 days")],
            )
        ],
    )
    shown = visible(rich(result))
    assert "[bold]mail-tls[/bold] :smile:" in shown
    assert "subject [/CN=mail] expires in 12 days" in shown


# -- the stderr line ----------------------------------------------------------------------------------------


def test_render_incomplete_is_one_redacted_line() -> None:
    assert (
        render_incomplete("sla-report", "the ops store is unreachable")
        == "opsflow: sla-report could not complete: the ops store is unreachable"
    )
    line = render_incomplete(
        "backup-verification", "OperationalError: connection to\npostgresql://a:s3cret@h/db failed"
    )
    assert "\n" not in line
    assert "s3cret" not in line
    assert line == (
        "opsflow: backup-verification could not complete: OperationalError: connection to "
        "postgresql://a:***@h/db failed"
    )


# -- the module ---------------------------------------------------------------------------------------------


def test_docstring_examples_run() -> None:
    outcome = doctest.testmod(reports.terminal)
    assert outcome.attempted > 0
    assert outcome.failed == 0


def test_rich_is_imported_lazily() -> None:
    tree = ast.parse(Path(reports.terminal.__file__).read_text(encoding="utf-8"))
    top_level = [node for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)]
    modules = {alias.name for node in top_level if isinstance(node, ast.Import) for alias in node.names}
    modules |= {node.module for node in top_level if isinstance(node, ast.ImportFrom) and node.module}
    assert not {module for module in modules if module.split(".")[0] == "rich"}
