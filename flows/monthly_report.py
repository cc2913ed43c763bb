"""Monthly report — on the 1st: one statement of last month for stakeholders, by email, Slack and storage.

From stored results only (``gather[MONTH]``: the month's SLA report, backup verifications, drills,
capacity forecasts, data-quality runs, expiries — nothing recomputed that could disagree with the
routines), the report is rendered (``render[MONTH]``: HTML in one self-contained file, an email variant
with PNG charts and inline CSS, and a PDF with page numbers and a table of contents), written under
``reports.monthly.out_dir`` (``files[MONTH]``), and delivered: email with the PDF attached to
``reports.monthly.to``, a Slack message with the summary (``reports.monthly.slack``), an upload of the HTML
and PDF to ``reports.monthly.storage`` — each a task with retries, one failing not stopping the others
(that delivery's check is ``error``). A re-run for the same month is a new revision, marked as such in the
report and in its files' names; nothing is overwritten. The artifact ``monthly-report`` carries the summary.

Schedule: 08:00 on the 1st (``prefect.yaml``), after the monthly SLA report. Needs: the ops store; SMTP,
Slack and the storage as configured.

    opsflow report monthly [--month 2026-10] [--out DIR] [--send]
"""

# No ``from __future__ import annotations`` in a flow module: Prefect builds the flow's parameter
# model from the signature where it runs the flow (a worker, a served deployment).

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any

from prefect import flow
from prefect.states import State
from pydantic import Field

from flows._routine import AsOf, ConfigPath, Routine, RoutineRun, Work, reason, run_routine
from opsflow.config import Config
from opsflow.errors import UsageError
from opsflow.files import output_dir
from opsflow.results import Check, Item, Period, RoutineResult
from reports.monthly import monthly_charts, render_html, render_pdf, summary_text
from tasks.monthly import gather_task, month_bounds, previous_month
from tasks.report_delivery import RenderedReport, describe, email_task, slack_task, upload_task, write_files_task
from tasks.retry import with_retries
from tasks.routine import settle

ROUTINE_NAME = "monthly-report"

MonthParam = Annotated[
    str | None, Field(description="The month to report, YYYY-MM; empty means last month (the config's timezone).")
]
OutDir = Annotated[str | None, Field(description="Where the HTML and PDF go; empty means reports.monthly.out_dir.")]
Send = Annotated[bool, Field(description="Deliver by email, Slack and storage as configured (false: files only).")]


def chosen_month(run: RoutineRun) -> str:
    """``month`` as given, else the month before ``now`` in the config's timezone."""
    return run.params.get("month") or previous_month(run.now.astimezone(run.config.tzinfo).strftime("%Y-%m"))


def next_revision(run: RoutineRun, month: str) -> int:
    """1 for the month's first report; each re-run is the next revision (never a silent overwrite)."""
    prior = with_retries(lambda: run.store.results(ROUTINE_NAME, scope=month, limit=1000), "read earlier revisions")
    return len([result for result in prior if result.as_of < run.now]) + 1


def render(data: Any) -> RenderedReport:
    """HTML, email HTML and PDF of the gathered month (pure rendering; no I/O)."""
    charts = monthly_charts(data)
    html = render_html(data, charts)
    title = f"Monthly report {data.month}" + (f" (revision {data.revision})" if data.revision > 1 else "")
    return RenderedReport(
        name=f"monthly-report-{data.month}-r{data.revision}",
        title=title,
        html=html,
        email_html=render_html(data, charts, for_email=True),
        pdf=render_pdf(html),
        summary=summary_text(data),
    )


def deliveries(run: RoutineRun, report: RenderedReport, link: str | None) -> list[Check]:
    """Each configured channel as a task, all at once; each outcome a check (``error`` when it failed)."""
    monthly = run.config.reports.monthly
    if not run.params.get("send", True) or monthly is None:
        return []
    futures = {}
    if monthly.to:
        futures["email"] = email_task.submit(run.config, report)
    if monthly.slack:
        futures["slack"] = slack_task.submit(run.config, report, link)
    if monthly.storage:
        futures["storage"] = upload_task.submit(run.config, report)
    checks = []
    for channel, future in futures.items():
        outcome, error = settle(future)
        if error is not None:
            checks.append(Check(check=channel, status="error", detail=f"not delivered: {reason(error)}"))
        else:
            checks.append(Check(check=channel, status="ok", detail=describe(outcome)))
    return checks


def report_month(run: RoutineRun) -> Work:
    """gather → render → files → deliveries: one item, the month, with a check per step."""
    month = chosen_month(run)
    start, end = month_bounds(month, run.config.tzinfo)
    data = gather_task(run.store, run.config, month, run.now, next_revision(run, month))
    report = render(data)
    monthly = run.config.reports.monthly
    out = output_dir(run.params.get("out_dir") or (monthly.out_dir if monthly else None))
    files = write_files_task(report, str(out))
    # What the stored results lack (no drill this month...) is said in the report and here, not alerted:
    # the routines that should have run alert on their own.
    noted = f"; {len(data.notes)} notes on missing data" if data.notes else ""
    checks = [Check(check="report", status="ok", detail=f"revision {data.revision}: {files['html']}{noted}")]
    checks += deliveries(run, report, files["html"])
    metrics = {"revision": data.revision, "digest": data.digest, "summary": report.summary, "notes": data.notes}
    item = Item(name=month, checks=checks, metrics={**metrics, **files})
    period = Period(label=month, start=start, end=end)
    return Work(items=[item], scope=month, period=period, outputs=files)


def report_markdown(result: RoutineResult) -> str:
    """The artifact ``monthly-report``: the summary and where the files are."""
    lines = [f"# Monthly report: {result.status.upper()}", ""]
    for item in result.items:
        lines += [str(item.metrics.get("summary", "")), ""]
        lines += [f"- {kind}: `{item.metrics[kind]}`" for kind in ("html", "pdf") if item.metrics.get(kind)]
        lines += [f"- {check.check}: {check.status} — {check.detail}" for check in item.checks]
    return "\n".join(lines) + "\n"


def check_month(config: Config, params: Mapping[str, Any], now: datetime) -> None:
    """Refuse a ``--month`` that is not a month (exit 2) before a flow run exists."""
    month = params.get("month")
    if month:
        try:
            month_bounds(month, config.tzinfo)
        except ValueError:
            raise UsageError(f"--month: expected YYYY-MM, got {month!r}") from None


ROUTINE = Routine(
    name=ROUTINE_NAME,
    description="Last month in one report for stakeholders: SLA, incidents, backups, drills, capacity, quality.",
    work=report_month,
    report=report_markdown,
    preflight=check_month,
)


@flow(name=ROUTINE_NAME, description=ROUTINE.description)
def monthly_report(
    month: MonthParam = None,
    send: Send = True,
    as_of: AsOf = None,
    config_path: ConfigPath = None,
    out_dir: OutDir = None,
) -> State[Any]:
    return run_routine(ROUTINE, as_of, config_path, {"month": month, "send": send, "out_dir": out_dir})
