"""Delivering a rendered report: files written atomically, an email with the PDF attached, a Slack message
with the summary and a link, an upload of the HTML and the PDF to a configured storage.

Each channel is one task under the one retry policy (``deliver[email]``, ``deliver[slack]``,
``deliver[storage]``); one failing does not stop the others — the flow collects each outcome as a check.
Nothing here renders: the flow hands in the HTML, the email's HTML and the PDF.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from opsflow.config import Config, FilesystemStorage, S3Storage
from opsflow.files import write_atomically
from opsflow.redact import redact
from tasks.notify import compose_email, post_json, send_message
from tasks.retry import IO_RETRIES, PermanentFailure


@dataclass(frozen=True)
class RenderedReport:
    """A report ready to deliver: its files' names and contents, and what a chat message says."""

    name: str  # "monthly-report-2026-10-r1": the files' stem
    title: str  # "Monthly report 2026-10 (revision 1)"
    html: str
    email_html: str
    pdf: bytes
    summary: str  # a few lines for Slack and the artifact


def write_files(report: RenderedReport, out_dir: Path) -> dict[str, str]:
    """``NAME.html`` and ``NAME.pdf`` under ``out_dir``, each written whole or not at all."""
    html = write_atomically(out_dir / f"{report.name}.html", report.html)
    pdf = write_atomically(out_dir / f"{report.name}.pdf", report.pdf)
    return {"html": str(html), "pdf": str(pdf)}


def email_message(report: RenderedReport, sender: str, to: list[str]) -> EmailMessage:
    """The email: the summary as text, the report as HTML (PNG charts inline), the PDF attached."""
    return compose_email(
        sender,
        to,
        report.title,
        report.summary + "\n\nThe full report is attached as a PDF.\n",
        html=report.email_html,
        attachments=[(report.pdf, "application/pdf", f"{report.name}.pdf")],
    )


def send_report_email(config: Config, report: RenderedReport) -> str:
    """Email the report to ``reports.monthly.to`` through ``notifications.email``'s SMTP server."""
    monthly = config.reports.monthly
    email = config.notifications.email
    if monthly is None or not monthly.to:
        raise PermanentFailure("email: reports.monthly.to is empty")
    if email is None:
        raise PermanentFailure("email: not configured (notifications.email)")
    send_message(email, email_message(report, email.sender, list(monthly.to)))
    return f"sent to {', '.join(monthly.to)}"


def post_report_to_slack(config: Config, report: RenderedReport, link: str | None) -> str:
    """The summary (and where to read the report) to ``notifications.slack``."""
    from opsflow.config import resolve_secret

    slack = config.notifications.slack
    if slack is None:
        raise PermanentFailure("slack: not configured (notifications.slack)")
    text = f"*{report.title}*\n{report.summary}" + (f"\n<{link}|Read the report>" if link else "")
    payload: dict[str, object] = {"text": text}
    if slack.channel:
        payload["channel"] = slack.channel
    post_json("slack", resolve_secret(slack.webhook_url) or "", payload)
    return "posted"


def upload_report(config: Config, report: RenderedReport, prefix: str = "reports/monthly/") -> dict[str, str]:
    """HTML and PDF to ``reports.monthly.storage`` (S3 object or file); returns where each went."""
    monthly = config.reports.monthly
    if monthly is None or monthly.storage is None:
        raise PermanentFailure("storage: reports.monthly.storage is not set")
    settings = config.storages[monthly.storage]
    files = {"html": (report.html.encode(), "text/html; charset=utf-8"), "pdf": (report.pdf, "application/pdf")}
    return {
        kind: _put(settings, f"{prefix}{report.name}.{kind}", data, kind_type)
        for kind, (data, kind_type) in files.items()
    }


def _put(settings: S3Storage | FilesystemStorage, key: str, data: bytes, content_type: str) -> str:
    if isinstance(settings, FilesystemStorage):
        return str(write_atomically(Path(settings.path) / key, data))
    from tasks.storage import S3BackupStorage, s3_failure

    storage = S3BackupStorage(settings)
    full_key = f"{settings.prefix}{key}"
    try:
        storage.client.put_object(Bucket=settings.bucket, Key=full_key, Body=data, ContentType=content_type)
    except Exception as exc:  # botocore's errors, classified for the retry policy
        raise s3_failure(exc, f"upload {full_key}") from None
    return f"s3://{settings.bucket}/{full_key}"


def describe(outcome: str | Mapping[str, str]) -> str:
    """A delivery's outcome as one line for its check's detail."""
    if isinstance(outcome, str):
        return redact(outcome)
    return ", ".join(f"{kind}: {where}" for kind, where in outcome.items())


# -- tasks ------------------------------------------------------------------------------------------


@task(**IO_RETRIES, cache_policy=NO_CACHE, task_run_name="files[{report.name}]")
def write_files_task(report: RenderedReport, out_dir: str) -> dict[str, str]:
    return write_files(report, Path(out_dir))


@task(**IO_RETRIES, cache_policy=NO_CACHE, task_run_name="deliver[email]")
def email_task(config: Config, report: RenderedReport) -> str:
    return send_report_email(config, report)


@task(**IO_RETRIES, cache_policy=NO_CACHE, task_run_name="deliver[slack]")
def slack_task(config: Config, report: RenderedReport, link: str | None) -> str:
    return post_report_to_slack(config, report, link)


@task(**IO_RETRIES, cache_policy=NO_CACHE, task_run_name="deliver[storage]")
def upload_task(config: Config, report: RenderedReport) -> dict[str, str]:
    return upload_report(config, report)
