"""The ops digest as rendered (reports/digest.py), from Digest objects built by hand: a day with a failing
routine, a dead schedule, an open and a closed incident, a drill, an expiring certificate, a shortened runway
and error budgets (one overspent); a week with trends. What a reader relies on: the failing ``ITEM: CHECK``
and the routine that did not run appear everywhere, run links point at the Prefect UI, hostile names stay
text (HTML escaped, Slack cannot ping), Slack's limits hold at 500 routines, times are in the config's zone.
"""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import UTC, datetime
from html.parser import HTMLParser

import pytest

from opsflow.digest import (
    BudgetLine,
    Digest,
    DrillLine,
    ExpiringLine,
    IncidentLine,
    RoutineLine,
    RunwayLine,
    TrendLine,
)
from reports.digest import (
    SLACK_HEADER_MAX,
    SLACK_MAX_BLOCKS,
    SLACK_SECTION_MAX,
    digest_email,
    digest_markdown,
    digest_slack,
    digest_subject,
    format_duration,
)

UI = "http://127.0.0.1:4200"
TZ = "Europe/Berlin"
HOSTILE = "<script>alert(1)</script>"
START = datetime(2026, 12, 3, 23, 0, tzinfo=UTC)  # 2026-12-04 00:00 CET
END = datetime(2026, 12, 4, 23, 0, tzinfo=UTC)
FAILING_RUN = "11111111-2222-3333-4444-555555555555"
DRILL_RUN = "99999999-8888-7777-6666-555555555555"


def _routine(name: str, **overrides: object) -> RoutineLine:
    values: dict[str, object] = {
        "routine": name,
        "configured": True,
        "runs": {"ok": 1, "warn": 0, "fail": 0, "error": 0},
        "last_status": "ok",
        "last_run_at": datetime(2026, 12, 4, 5, 0, tzinfo=UTC),
        "last_flow_run_id": None,
        "failing": [],
        "fired": 1,
        "ran": "ok",
        "ran_detail": "",
    }
    values.update(overrides)
    return RoutineLine(**values)  # type: ignore[arg-type]


def day_digest(**overrides: object) -> Digest:
    values: dict[str, object] = {
        "kind": "day",
        "label": "2026-12-04",
        "start": START,
        "end": END,
        "timezone": TZ,
        "generated_at": datetime(2026, 12, 5, 7, 0, tzinfo=UTC),
        "routines": [
            _routine(
                "backup-verification",
                runs={"ok": 3, "warn": 0, "fail": 1, "error": 0},
                last_status="fail",
                last_run_at=datetime(2026, 12, 4, 6, 5, tzinfo=UTC),  # 07:05 CET
                last_flow_run_id=FAILING_RUN,
                failing=["orders-db: fresh", f"{HOSTILE}: size"],
            ),
            _routine(
                "capacity-collect",
                runs={"ok": 0, "warn": 0, "fail": 0, "error": 0},
                last_status=None,
                last_run_at=None,
                fired=24,
                ran="fail",
                ran_detail="schedule fired 24 times, no run recorded",
            ),
            _routine("uptime-probe", runs={"ok": 1440, "warn": 0, "fail": 0, "error": 0}),
        ],
        "incidents": [
            IncidentLine(
                1, "api", datetime(2026, 12, 4, 1, 0, tzinfo=UTC), datetime(2026, 12, 4, 2, 12, tzinfo=UTC), 4320
            ),
            IncidentLine(2, "checkout", datetime(2026, 12, 4, 20, 0, tzinfo=UTC), None, 10800),
        ],
        "opened": 2,
        "closed": 1,
        "open_now": 1,
        "backups_verified": 17,
        "drills": [
            DrillLine("orders", datetime(2026, 12, 4, 3, 0, tzinfo=UTC), "ok", 723, 3600, 1800, 93600, DRILL_RUN)
        ],
        "expiring": [
            ExpiringLine("mail-tls", "tls", datetime(2026, 12, 10, 12, 0, tzinfo=UTC), 6.2, "fail"),
        ],
        "runway": [RunwayLine("orders-db-size", 41.5, 88.0, "2027-01-15", "warn")],
        "budget": [
            BudgetLine("api", 99.95, 99.9, 50.0),
            BudgetLine("checkout", 99.5, 99.9, -400.0),
        ],
        "budget_label": "2026-12-01..2026-12-05",
        "ui_url": UI,
        "status_page": "/srv/opsflow/status.html",
    }
    values.update(overrides)
    return Digest(**values)  # type: ignore[arg-type]


def week_digest() -> Digest:
    return day_digest(
        kind="week",
        label="2026-W49",
        trends=[
            TrendLine("api", 99.987, 99.912, 412.0, 388.0),
            TrendLine("checkout", 99.5, 99.95, 1234.0, 801.0),
        ],
    )


def slack_text(payload: dict) -> str:
    """Every mrkdwn/plain text of the message, the fallback included."""
    texts = [payload["text"]]
    for block in payload["blocks"]:
        if "text" in block:
            texts.append(block["text"]["text"])
        texts += [element["text"] for element in block.get("elements", [])]
    return "\n".join(texts)


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(html: str) -> _Collector:
    collector = _Collector()
    collector.feed(html)
    collector.close()
    return collector


# ---------------------------------------------------------------------------------------------- subject, formats


def test_subject_counts_failing_and_dead_schedules() -> None:
    subject = digest_subject(day_digest())
    assert subject.startswith("[opsflow] Daily ops digest 2026-12-04: ")
    assert "1 failing" in subject
    assert "1 dead schedule" in subject
    assert "1 open incident" in subject
    quiet = day_digest(routines=[_routine("uptime-probe")], incidents=[], open_now=0)
    assert digest_subject(quiet) == "[opsflow] Daily ops digest 2026-12-04: all ok"
    assert digest_subject(week_digest()).startswith("[opsflow] Weekly ops digest 2026-W49: ")


@pytest.mark.parametrize(
    ("seconds", "text"), [(45, "45s"), (4320, "1h 12m"), (273600, "3d 4h"), (0, "0s"), (3600, "1h"), (None, "n/a")]
)
def test_durations_read_like_people_write_them(seconds: float | None, text: str) -> None:
    assert format_duration(seconds) == text


# ---------------------------------------------------------------------------------------------- markdown


def test_markdown_has_every_part_and_the_findings() -> None:
    markdown = digest_markdown(day_digest())
    assert markdown.startswith("# Daily ops digest 2026-12-04")
    # the period in the config's zone, with the zone shown
    assert "2026-12-04 00:00 CET .. 2026-12-05 00:00 CET" in markdown
    assert "orders-db: fresh" in markdown
    dead = next(line for line in markdown.splitlines() if "capacity-collect" in line)
    assert "DID NOT RUN" in dead
    assert "schedule fired 24 times, no run recorded" in dead
    # link to the failing run, its time in CET
    assert f"[2026-12-04 07:05 CET]({UI}/runs/flow-run/{FAILING_RUN})" in markdown
    assert "1h 12m" in markdown  # closed incident
    open_row = next(line for line in markdown.splitlines() if line.startswith("| **checkout**") and "open" in line)
    assert "3h" in open_row
    assert "2 opened, 1 closed, 1 open now" in markdown
    assert "17 backups verified" in markdown
    assert "12m 3s (target 30m)" in markdown  # drill RTO vs target
    assert "mail-tls" in markdown and "2026-12-10" in markdown and "6.2 d" in markdown
    assert "41.5 d" in markdown and "88.0 d" in markdown and "2027-01-15" in markdown
    assert "-400.0% OVERSPENT" in markdown
    assert "/srv/opsflow/status.html" in markdown
    assert "Week over week" not in markdown
    # a hostile item name cannot become HTML or break the table
    assert HOSTILE not in markdown
    piped = digest_markdown(day_digest(routines=[_routine("a|b", last_status="fail", failing=["x|y: *z*"])]))
    row = next(line for line in piped.splitlines() if "a\\|b" in line)
    assert len(re.split(r"(?<!\\)\|", row)) == 8  # six cells: the pipes in names are not separators
    assert "x\\|y: \\*z\\*" in row


def test_markdown_says_so_when_a_part_is_empty() -> None:
    markdown = digest_markdown(
        day_digest(incidents=[], opened=0, closed=0, open_now=0, drills=[], expiring=[], runway=[], budget=[])
    )
    for sentence in ("No incidents.", "No drills.", "Nothing expires soon.", "No runway shortened.", "No SLOs."):
        assert sentence in markdown
    assert "Week over week" not in markdown


def test_markdown_without_ui_url_has_no_links() -> None:
    markdown = digest_markdown(day_digest(ui_url=None))
    assert "/runs/flow-run/" not in markdown
    assert "2026-12-04 07:05 CET" in markdown


def test_weekly_markdown_has_week_over_week() -> None:
    markdown = digest_markdown(week_digest())
    assert "## Week over week" in markdown
    row = next(line for line in markdown.splitlines() if line.startswith("| **api**") and "ms" in line)
    assert "99.987%" in row and "99.912%" in row and "+0.075 pts" in row
    assert "412 ms" in row and "388 ms" in row and "+24 ms" in row


# ---------------------------------------------------------------------------------------------- Slack


def test_slack_message_names_failures_and_links_runs() -> None:
    payload = digest_slack(day_digest(), channel="#ops")
    assert payload["channel"] == "#ops"
    assert payload["blocks"][0]["type"] == "header"
    assert "Daily ops digest 2026-12-04" in payload["blocks"][0]["text"]["text"]
    text = slack_text(payload)
    assert "orders-db: fresh" in text
    assert "capacity-collect" in text and "DID NOT RUN" in text
    assert f"<{UI}/runs/flow-run/{FAILING_RUN}|2026-12-04 07:05 CET>" in text
    assert f"<{UI}/runs/flow-run/{DRILL_RUN}|" in text
    assert "1 failing, 1 dead schedule" in payload["text"]
    assert "OVERSPENT" in text and "mail-tls" in text and "orders-db-size" in text
    assert "17 backups verified" in text
    # the ok routine is counted, not listed
    assert "uptime-probe" not in text and "1 other routine ok" in text
    assert all(block["type"] in {"header", "section", "context"} for block in payload["blocks"])
    json.dumps(payload)


def test_slack_escapes_what_slack_would_interpret() -> None:
    hostile = "<!channel> *bold* | a&b"
    digest = day_digest(
        routines=[_routine("data-quality", last_status="fail", failing=[f"{hostile}: {HOSTILE}"])],
        incidents=[IncidentLine(3, "<@U123>", START, None, 60)],
    )
    text = slack_text(digest_slack(digest))
    assert "<!channel>" not in text and "<@U123>" not in text and "<script>" not in text
    assert "&lt;!channel&gt;" in text and "&lt;@U123&gt;" in text and "a&amp;b" in text
    # every remaining < opens one of our own links
    assert all(chunk.startswith(f"{UI}/") for chunk in text.split("<")[1:])


@pytest.mark.parametrize("count", [500])
def test_slack_limits_hold_for_hundreds_of_lines(count: int) -> None:
    routines = [
        _routine(f"routine-{n}-" + "x" * 40, last_status="fail", failing=[f"item-{n}: check-{k}" for k in range(20)])
        for n in range(count)
    ]
    incidents = [IncidentLine(n, f"service-{n}", START, None, 3600) for n in range(count)]
    digest = day_digest(
        routines=routines,
        incidents=incidents,
        expiring=[ExpiringLine(f"cert-{n}", "tls", END, 3.0, "fail") for n in range(count)],
        budget=[BudgetLine(f"svc-{n}", 99.0, 99.9, -900.0) for n in range(count)],
        label="L" * 400,
    )
    payload = digest_slack(digest)
    blocks = payload["blocks"]
    assert len(blocks) <= SLACK_MAX_BLOCKS
    assert len(blocks[0]["text"]["text"]) <= SLACK_HEADER_MAX
    sections = [b["text"]["text"] for b in blocks if b["type"] == "section"]
    assert all(len(text) <= SLACK_SECTION_MAX for text in sections)
    assert len(payload["text"]) <= SLACK_SECTION_MAX
    routines_text = next(text for text in sections if text.startswith("*Routines*"))
    shown = routines_text.count("*routine-")
    assert 0 < shown < count
    assert routines_text.endswith(f"… and {count - shown} more")
    incidents_text = next(text for text in sections if text.startswith("*Incidents*"))
    assert re.search(r"… and \d+ more$", incidents_text)


# ---------------------------------------------------------------------------------------------- email


def test_email_html_is_self_contained_and_escaped() -> None:
    digest = day_digest(
        routines=[
            _routine(
                HOSTILE,
                last_status="fail",
                last_flow_run_id=FAILING_RUN,
                failing=[f"{HOSTILE}: *bold* | <!channel>"],
            ),
            _routine("capacity-collect", last_status=None, ran="fail", ran_detail="never ran"),
        ]
    )
    html, text = digest_email(digest)
    assert HOSTILE not in html and "<!channel>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    parsed = parse(html)
    tags = {tag for tag, _ in parsed.tags}
    assert "script" not in tags and "link" not in tags and "img" not in tags
    assert not any(name.startswith("on") for _, attrs in parsed.tags for name in attrs)
    hrefs = [attrs["href"] for tag, attrs in parsed.tags if tag == "a"]
    assert hrefs == [f"{UI}/runs/flow-run/{FAILING_RUN}", f"{UI}/runs/flow-run/{DRILL_RUN}"]
    assert not any("src" in attrs for _, attrs in parsed.tags)  # nothing loaded from anywhere
    assert "@import" not in html and "url(" not in html
    # inline styles for email clients
    assert re.search(r'<td style="[^"]+">', html)
    visible = "".join(parsed.text)
    assert f"{HOSTILE}: *bold* | <!channel>" in visible
    assert "DID NOT RUN: never ran" in visible
    # the plain-text alternative carries the same facts
    assert f"{HOSTILE}: *bold* | <!channel>" in text and "DID NOT RUN: never ran" in text
    assert f"{UI}/runs/flow-run/{FAILING_RUN}" in text


def test_daily_email_carries_every_part_in_the_configured_zone() -> None:
    html, text = digest_email(day_digest())
    visible = "".join(parse(html).text)
    for body in (visible, text):
        assert "orders-db: fresh" in body
        assert "capacity-collect" in body and "DID NOT RUN" in body
        assert "2026-12-04 07:05 CET" in body  # 06:05 UTC shown in Europe/Berlin
        assert "2026-12-04 21:00 CET" in body  # the open incident's start
        assert "open" in body and "1h 12m" in body
        assert "17 backups verified" in body
        assert "12m 3s (target 30m)" in body and "1h (target 1d 2h)" in body
        assert "mail-tls" in body and "6.2 d" in body
        assert "orders-db-size" in body and "2027-01-15" in body
        assert "-400.0% OVERSPENT" in body
        assert "/srv/opsflow/status.html" in body
        assert "Week over week" not in body and "412 ms" not in body
    assert "06:05 UTC" not in visible


def test_weekly_email_adds_the_trends() -> None:
    html, text = digest_email(week_digest())
    visible = "".join(parse(html).text)
    for body in (visible, text):
        assert "Week over week" in body
        for figure in ("99.987%", "99.912%", "+0.075 pts", "412 ms", "388 ms", "+24 ms", "-0.450 pts", "+433 ms"):
            assert figure in body
    daily_html, daily_text = digest_email(dataclasses.replace(week_digest(), kind="day"))
    assert "99.987%" not in daily_html and "99.987%" not in daily_text


def test_times_follow_the_configured_timezone() -> None:
    tokyo = day_digest(timezone="Asia/Tokyo")
    assert "2026-12-04 15:05 JST" in digest_markdown(tokyo)
    assert "2026-12-04 15:05 JST" in slack_text(digest_slack(tokyo))
    assert "2026-12-04 15:05 JST" in digest_email(tokyo)[1]
