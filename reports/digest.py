"""The daily and weekly ops digest rendered (SPEC §1 on-call/team, §5 ``ops-digest``, issue 18): the subject,
the markdown artifact for the Prefect UI, one Slack incoming-webhook message, and the email (HTML and its
plain-text alternative).

Pure rendering: it is given an :class:`opsflow.digest.Digest` (everything already gathered by
``tasks/digest.py``) and returns text; the only file read is this package's own jinja2 template. Every
format carries the same facts, built once as sections of rows (:func:`digest_sections`) and then written
out; only Slack lists the routines that need attention and counts the others (one message, size limits).

Names and details come from configs and services, so nothing is trusted: the HTML is autoescaped, Slack
mrkdwn gets ``&``, ``<`` and ``>`` escaped as Slack requires (``<!channel>`` cannot ping), markdown gets its
specials backslash-escaped, and every text passes :func:`opsflow.redact.redact`.

Times are shown in the digest's timezone with the zone's name; durations with their two largest units.

>>> format_duration(4320), format_duration(273600), format_duration(45), format_duration(0)
('1h 12m', '3d 4h', '45s', '0s')
>>> run_url("http://127.0.0.1:4200/", "abc")
'http://127.0.0.1:4200/runs/flow-run/abc'
>>> slack_escape("<!channel> & co")
'&lt;!channel&gt; &amp; co'
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from opsflow.digest import Digest, RoutineLine
from opsflow.redact import redact
from reports._jinja import jinja_environment
from reports.monthly import inline_css

FONT_STACK = '"DejaVu Sans", "Liberation Sans", sans-serif'

# Slack's limits for one message (Block Kit): blocks per message, header text, section text.
SLACK_MAX_BLOCKS = 50
SLACK_HEADER_MAX = 150
SLACK_SECTION_MAX = 3000

_KIND_TITLE = {"day": "Daily ops digest", "week": "Weekly ops digest", "custom": "Ops digest"}
_STATUS_WORD = {"ok": "OK", "warn": "WARN", "fail": "FAIL", "error": "ERROR"}
_SLACK_STATUS = {
    "ok": ":white_check_mark: ok",
    "warn": ":warning: warn",
    "fail": ":x: fail",
    "error": ":no_entry: error",
}


# ---------------------------------------------------------------------------------------------- formatting


def run_url(ui_url: str | None, flow_run_id: str | None) -> str | None:
    """Link to a flow run in the Prefect UI (``{ui_url}/runs/flow-run/{id}``), when both are known and the
    UI address is http(s) (a link in an email must not be ``javascript:``)."""
    if not ui_url or not flow_run_id or not ui_url.lower().startswith(("http://", "https://")):
        return None
    return f"{ui_url.rstrip('/')}/runs/flow-run/{flow_run_id}"


def format_duration(seconds: float | None) -> str:
    """A duration with its two largest units: ``1h 12m``, ``3d 4h``, ``45s``; ``n/a`` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "n/a"
    sign, whole = ("-" if seconds < 0 else ""), int(abs(seconds))
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        amount, whole = divmod(whole, size)
        if amount or parts:
            parts.append(f"{amount}{unit}")
        if len(parts) == 2:
            break
    parts = [p for p in parts if not p.startswith("0")] or ["0s"]
    return sign + " ".join(parts)


def zone(name: str) -> ZoneInfo:
    """The digest's timezone (UTC when the name is unknown: the digest still renders)."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def format_time(moment: datetime | None, timezone: str) -> str:
    """An instant in ``timezone`` with the zone shown: ``2026-12-04 09:05 CET``."""
    if moment is None:
        return "n/a"
    local = moment.astimezone(zone(timezone))
    return f"{local:%Y-%m-%d %H:%M} {local.tzname() or timezone}"


def _date(moment: datetime | None, timezone: str) -> str:
    return "n/a" if moment is None else f"{moment.astimezone(zone(timezone)):%Y-%m-%d}"


def _pct(value: float | None, decimals: int = 3) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{decimals}f}%"


def _days(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.1f} d"


def _ms(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.0f} ms"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def slack_escape(text: str) -> str:
    """Text for Slack mrkdwn: the three characters Slack reserves for its control sequences escaped."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


_MD_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`*_[]|#"} | {"<": "&lt;", ">": "&gt;", "&": "&amp;"})


def markdown_escape(text: str) -> str:
    r"""Text for a markdown table cell: specials backslash-escaped, no raw HTML, one line.

    >>> markdown_escape("*a* | <b>")
    '\\*a\\* \\| &lt;b&gt;'
    """
    return text.translate(_MD_SPECIAL)


def _clean(value: object) -> str:
    """Untrusted text as one redacted line."""
    return " ".join(redact("" if value is None else str(value)).split())


# ---------------------------------------------------------------------------------------------- content


@dataclass(frozen=True)
class Cell:
    """One value: plain text (escaped by each writer), optionally a link, optionally emphasised."""

    text: str
    url: str | None = None
    strong: bool = False


@dataclass(frozen=True)
class Row:
    cells: list[Cell]
    attention: bool = True  # Slack lists it (routines: only those needing attention)


@dataclass(frozen=True)
class Section:
    key: str
    title: str
    columns: list[str]
    rows: list[Row]
    empty: str  # what to say when there are no rows
    notes: list[str] = field(default_factory=list)  # lines before the rows


def _needs_attention(line: RoutineLine) -> bool:
    return line.ran == "fail" or line.last_status in ("warn", "fail", "error")


def _failing(digest: Digest) -> list[RoutineLine]:
    return [r for r in digest.routines if r.last_status in ("fail", "error")]


def _dead(digest: Digest) -> list[RoutineLine]:
    return [r for r in digest.routines if r.ran == "fail"]


def overall(digest: Digest) -> str:
    """The one-line verdict: failing routines, dead schedules, open incidents, or all ok."""
    parts = []
    if failing := _failing(digest):
        parts.append(f"{len(failing)} failing")
    if dead := _dead(digest):
        parts.append(_plural(len(dead), "dead schedule"))
    if digest.open_now:
        parts.append(_plural(digest.open_now, "open incident"))
    return ", ".join(parts) or "all ok"


def _title(digest: Digest) -> str:
    return f"{_KIND_TITLE.get(digest.kind, 'Ops digest')} {_clean(digest.label)}"


def _period(digest: Digest) -> str:
    return f"{format_time(digest.start, digest.timezone)} .. {format_time(digest.end, digest.timezone)}"


def digest_sections(digest: Digest) -> list[Section]:
    """The digest's parts in order, as rows of plain (unescaped, redacted) text every writer renders."""
    tz = digest.timezone
    sections: list[Section] = []

    rows = []
    for r in digest.routines:
        runs = "/".join(str(r.runs.get(s, 0)) for s in ("ok", "warn", "fail", "error"))
        latest = _STATUS_WORD.get(r.last_status or "", "no run") if r.last_status else "no run"
        if r.ran == "fail":
            schedule = Cell(f"DID NOT RUN: {_clean(r.ran_detail)}" if r.ran_detail else "DID NOT RUN", strong=True)
        elif r.fired:
            schedule = Cell("ran as scheduled")
        else:
            schedule = Cell(_clean(r.ran_detail) or ("not scheduled" if r.configured else "nothing to check"))
        rows.append(
            Row(
                [
                    Cell(_clean(r.routine), strong=True),
                    Cell(runs),
                    Cell(latest, strong=r.last_status in ("fail", "error")),
                    Cell(format_time(r.last_run_at, tz), url=run_url(digest.ui_url, r.last_flow_run_id)),
                    Cell("; ".join(_clean(f) for f in r.failing)),
                    schedule,
                ],
                attention=_needs_attention(r),
            )
        )
    sections.append(
        Section(
            "routines",
            "Routines",
            ["routine", "runs ok/warn/fail/error", "latest", "at", "failing", "schedule"],
            rows,
            "No routines.",
        )
    )

    rows = [
        Row(
            [
                Cell(_clean(i.service), strong=True),
                Cell(format_time(i.start, tz)),
                Cell("open" if i.end is None else format_time(i.end, tz), strong=i.end is None),
                Cell(format_duration(i.seconds)),
            ]
        )
        for i in digest.incidents
    ]
    sections.append(
        Section(
            "incidents",
            "Incidents",
            ["service", "start", "end", "duration"],
            rows,
            "No incidents.",
            [f"{digest.opened} opened, {digest.closed} closed, {digest.open_now} open now"],
        )
    )

    sections.append(
        Section("backups", "Backups", [], [], "", [f"{_plural(digest.backups_verified, 'backup')} verified"])
    )

    rows = [
        Row(
            [
                Cell(_clean(d.database), strong=True),
                Cell(_STATUS_WORD.get(d.status, _clean(d.status).upper()), strong=d.status in ("fail", "error")),
                Cell(f"{format_duration(d.rto_seconds)} (target {format_duration(d.rto_target_seconds)})"),
                Cell(f"{format_duration(d.rpo_seconds)} (target {format_duration(d.rpo_target_seconds)})"),
                Cell(format_time(d.at, tz), url=run_url(digest.ui_url, d.flow_run_id)),
            ]
        )
        for d in digest.drills
    ]
    sections.append(Section("drills", "DR drills", ["database", "status", "RTO", "RPO", "at"], rows, "No drills."))

    rows = [
        Row(
            [
                Cell(_clean(e.name), strong=True),
                Cell(_clean(e.source)),
                Cell(_date(e.expires_at, tz)),
                Cell(_days(e.days_left)),
                Cell(
                    _STATUS_WORD.get(e.status, _clean(e.status).upper())
                    + (f": {_clean(e.detail)}" if e.detail else ""),
                    strong=e.status in ("fail", "error"),
                ),
            ]
        )
        for e in digest.expiring
    ]
    sections.append(
        Section(
            "expiring",
            "Expiring soon",
            ["name", "source", "expires", "days left", "status"],
            rows,
            "Nothing expires soon.",
        )
    )

    rows = [
        Row(
            [
                Cell(_clean(w.metric), strong=True),
                Cell(_days(w.days_to_threshold)),
                Cell(_days(w.previous_days_to_threshold)),
                Cell(_clean(w.crossing_date) if w.crossing_date else "n/a"),
                Cell(_STATUS_WORD.get(w.status, _clean(w.status).upper()), strong=w.status in ("fail", "error")),
            ]
        )
        for w in digest.runway
    ]
    sections.append(
        Section(
            "runway",
            "Capacity runway shortened",
            ["metric", "days to threshold", "before", "crossing", "status"],
            rows,
            "No runway shortened.",
        )
    )

    rows = []
    for b in digest.budget:
        remaining = b.error_budget_remaining_pct
        overspent = remaining is not None and remaining < 0
        rows.append(
            Row(
                [
                    Cell(_clean(b.service), strong=True),
                    Cell(_pct(b.availability_pct)),
                    Cell(_pct(b.slo_pct)),
                    Cell(_pct(remaining, 1) + (" OVERSPENT" if overspent else ""), strong=overspent),
                ]
            )
        )
    sections.append(
        Section(
            "budget",
            f"SLO error budget, month to date ({_clean(digest.budget_label)})",
            ["service", "availability", "SLO", "budget remaining"],
            rows,
            "No SLOs.",
        )
    )

    if digest.kind == "week":
        rows = []
        for t in digest.trends:
            if t.availability_pct is not None and t.previous_availability_pct is not None:
                availability_change = f"{t.availability_pct - t.previous_availability_pct:+.3f} pts"
            else:
                availability_change = "n/a"
            if t.latency_p95_ms is not None and t.previous_latency_p95_ms is not None:
                latency_change = f"{t.latency_p95_ms - t.previous_latency_p95_ms:+.0f} ms"
            else:
                latency_change = "n/a"
            rows.append(
                Row(
                    [
                        Cell(_clean(t.service), strong=True),
                        Cell(_pct(t.availability_pct)),
                        Cell(_pct(t.previous_availability_pct)),
                        Cell(availability_change),
                        Cell(_ms(t.latency_p95_ms)),
                        Cell(_ms(t.previous_latency_p95_ms)),
                        Cell(latency_change),
                    ]
                )
            )
        sections.append(
            Section(
                "trends",
                "Week over week",
                [
                    "service",
                    "availability",
                    "last week",
                    "change",
                    "latency p95",
                    "last week",
                    "change",
                ],
                rows,
                "No services measured.",
            )
        )
    return sections


# ---------------------------------------------------------------------------------------------- subject, markdown


def digest_subject(digest: Digest) -> str:
    """``[opsflow] Daily ops digest 2026-12-04: 2 failing, 1 dead schedule`` (or ``… all ok``)."""
    return f"[opsflow] {_title(digest)}: {overall(digest)}"


def _md_cell(cell: Cell) -> str:
    text = markdown_escape(cell.text)
    if cell.url:
        text = f"[{text}]({cell.url.replace(' ', '%20').replace(')', '%29')})"
    return f"**{text}**" if cell.strong and cell.text else text


def digest_markdown(digest: Digest) -> str:
    """The Prefect artifact: heading with the period in the config timezone, the verdict, then each part."""
    lines = [
        f"# {markdown_escape(_title(digest))}: {overall(digest)}",
        "",
        f"Period {_period(digest)} ({markdown_escape(digest.timezone)}) · generated "
        f"{format_time(digest.generated_at, digest.timezone)}",
    ]
    if digest.status_page:
        lines += ["", f"Status page: `{_clean(digest.status_page).replace('`', '')}`"]
    for section in digest_sections(digest):
        lines += ["", f"## {markdown_escape(section.title)}", ""]
        lines += [markdown_escape(note) for note in section.notes]
        if section.notes and (section.rows or section.empty):
            lines.append("")
        if section.rows:
            lines.append("| " + " | ".join(section.columns) + " |")
            lines.append("|" + "---|" * len(section.columns))
            lines += ["| " + " | ".join(_md_cell(c) for c in row.cells) + " |" for row in section.rows]
        elif section.empty:
            lines.append(section.empty)
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- Slack


def _slack_link(url: str, text: str) -> str:
    safe_url = url.replace("|", "%7C").replace("<", "%3C").replace(">", "%3E").replace(" ", "%20")
    return f"<{slack_escape(safe_url)}|{slack_escape(text).replace('|', '¦')}>"


def _slack_cell(cell: Cell) -> str:
    text = _slack_link(cell.url, cell.text) if cell.url else slack_escape(cell.text)
    return f"*{text}*" if cell.strong and cell.text and not cell.url else text


def _slack_row(section: Section, row: Row) -> str:
    first, *rest = row.cells
    described = [
        f"{slack_escape(label)} {_slack_cell(cell)}"
        for label, cell in zip(section.columns[1:], rest, strict=False)
        if cell.text
    ]
    return " · ".join([_slack_cell(first), *described])


def _fit(head: str, lines: list[str], limit: int = SLACK_SECTION_MAX) -> str:
    """``head`` and as many ``lines`` as fit in ``limit`` characters, then ``… and N more``."""
    cap = limit // 2
    lines = [line if len(line) <= cap else line[: cap - 1] + "…" for line in lines]
    whole = "\n".join([head, *lines])
    if len(whole) <= limit:
        return whole
    reserve = len(f"\n… and {len(lines)} more")
    kept: list[str] = []
    size = len(head)
    for line in lines:
        if size + 1 + len(line) + reserve > limit:
            break
        kept.append(line)
        size += 1 + len(line)
    return "\n".join([head[: limit - reserve], *kept]) + f"\n… and {len(lines) - len(kept)} more"


def digest_slack(digest: Digest, channel: str | None = None) -> dict[str, Any]:
    """One Slack incoming-webhook message: ``text`` (the one-line fallback) and ``blocks`` (a header, the
    period, a section per part; only the routines needing attention are listed, the rest counted). Within
    Slack's limits: header ≤ 150 characters, section text ≤ 3000, at most 50 blocks."""
    title = _title(digest)
    verdict = overall(digest)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": title[:SLACK_HEADER_MAX]}},
    ]
    context = [f"*{slack_escape(verdict)}*", f"period {slack_escape(_period(digest))}"]
    if digest.ui_url and digest.ui_url.lower().startswith(("http://", "https://")):
        context.append(_slack_link(digest.ui_url.rstrip("/") + "/runs", "Prefect UI runs"))
    if digest.status_page:
        context.append(f"status page `{slack_escape(_clean(digest.status_page).replace('`', ''))}`")
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(context)[:3000]}]})
    for section in digest_sections(digest):
        head = f"*{slack_escape(section.title)}*"
        if section.notes:
            head += "\n" + "\n".join(slack_escape(n) for n in section.notes)
        shown = [row for row in section.rows if row.attention]
        lines = [_slack_row(section, row) for row in shown]
        ok_count = len(section.rows) - len(shown)
        if not section.rows and section.empty:
            lines = [slack_escape(section.empty)]
        elif ok_count:
            if not shown:
                lines = [f"all {ok_count} ok"]
            else:
                lines.append(f"{ok_count} other {'routine' if ok_count == 1 else 'routines'} ok")
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _fit(head, lines)}})
    blocks = blocks[:SLACK_MAX_BLOCKS]
    payload: dict[str, Any] = {
        "text": slack_escape(f"{title}: {verdict}")[:SLACK_SECTION_MAX],
        "blocks": blocks,
    }
    if channel:
        payload["channel"] = channel
    return payload


# ---------------------------------------------------------------------------------------------- email


def _text_row(section: Section, row: Row) -> str:
    first, *rest = row.cells
    described = [
        f"{label}: {cell.text}" + (f" <{cell.url}>" if cell.url else "")
        for label, cell in zip(section.columns[1:], rest, strict=False)
        if cell.text
    ]
    return f"- {first.text}" + (" — " + ", ".join(described) if described else "")


def digest_text(digest: Digest) -> str:
    """The plain-text alternative of the email: the same facts as the HTML, one line per row."""
    lines = [
        _title(digest),
        f"Overall: {overall(digest)}",
        f"Period {_period(digest)} ({digest.timezone}), generated {format_time(digest.generated_at, digest.timezone)}",
    ]
    if digest.status_page:
        lines.append(f"Status page: {_clean(digest.status_page)}")
    for section in digest_sections(digest):
        lines += ["", section.title, "-" * len(section.title), *section.notes]
        if section.rows:
            lines += [_text_row(section, row) for row in section.rows]
        elif section.empty:
            lines.append(section.empty)
    return "\n".join(lines) + "\n"


def digest_html(digest: Digest) -> str:
    """The email's HTML: one self-contained document (styles inline, no external resource, no script),
    every value autoescaped."""
    html = (
        jinja_environment()
        .get_template("digest.html.j2")
        .render(
            title=_title(digest),
            verdict=overall(digest),
            failing=bool(_failing(digest) or _dead(digest) or digest.open_now),
            period=_period(digest),
            timezone=digest.timezone,
            generated=format_time(digest.generated_at, digest.timezone),
            status_page=_clean(digest.status_page) if digest.status_page else None,
            sections=digest_sections(digest),
            font_stack=FONT_STACK,
        )
    )
    return inline_css(html)


def digest_email(digest: Digest) -> tuple[str, str]:
    """``(html, text)``: the email's HTML document and its plain-text alternative, carrying the same facts
    (the weekly one with the week-over-week trends)."""
    return digest_html(digest), digest_text(digest)
