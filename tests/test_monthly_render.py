"""The monthly stakeholder report as rendered (reports/monthly.py), from a MonthReport built by hand with
every section filled, three services (one with a hostile name), incidents and a capacity forecast with daily
history: the HTML parses, carries the exact stored figures and loads nothing from anywhere; the email
variant has PNG data URIs and inline styles instead of SVG; the PDF has the same sections and page numbers;
real renderers (Debian's chromium through Playwright, poppler's pdftoppm) draw something that is not blank.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import re
import shutil
import subprocess
import time
from datetime import UTC, date, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest

from opsflow.monthly import (
    BackupMonth,
    CapacityForecast,
    DrillMonth,
    Expiring,
    Incident,
    MonthReport,
    QualityTable,
    ServiceMonth,
    StoredSource,
    Summary,
)
from reports.monthly import SECTIONS, Charts, monthly_charts, render_html, render_pdf, summary_text

HOSTILE = "<script>alert(1)</script>"
START = datetime(2026, 10, 1, tzinfo=UTC)
END = datetime(2026, 11, 1, tzinfo=UTC)
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


def _daily(seed: int) -> list[tuple[date, float | None, float, float | None]]:
    days = range(1, 32)
    return [(date(2026, 10, d), 100 - (d % 5) * 0.01, float((d * seed) % 7 * 60), 40.0 + d + seed) for d in days]


def _service(name: str, availability: float, slo_met: bool, incidents: list[Incident], seed: int) -> ServiceMonth:
    return ServiceMonth(
        service=name,
        availability_pct=availability,
        slo_pct=99.9,
        slo_met=slo_met,
        downtime_seconds=sum(i.seconds for i in incidents),
        maintenance_seconds=1800.0,
        error_budget_remaining_pct=41.25 if slo_met else -12.5,
        latency_p95_ms=87.25 + seed,
        latency_slo_ms=300.0,
        coverage_pct=99.8761 - seed,
        incidents=incidents,
        mttr_seconds=754.5 if incidents else None,
        previous_availability_pct=availability - 0.0123 * seed,
        daily=_daily(seed),
    )


def build_report(revision: int = 2) -> MonthReport:
    """A month with every section filled, as tasks/monthly.py would gather it."""
    at = datetime(2026, 10, 4, 13, 5, tzinfo=UTC)
    shop = [
        Incident("shop-api", at, at + timedelta(seconds=754.5), 754.5),
        Incident("shop-api", at + timedelta(days=9), at + timedelta(days=9, seconds=3725), 3725.0, 17, 4, 1),
    ]
    hostile = [Incident(HOSTILE, at + timedelta(days=20), None, 93784.25)]
    services = [
        _service("shop-api", 99.95234, True, shop, 1),
        _service(HOSTILE, 87.12349, False, hostile, 2),
        _service("billing", 100.0, True, [], 3),
    ]
    history = [(date(2026, 8, 1) + timedelta(days=d), 50.0 + 0.3 * d) for d in range(92)]
    return MonthReport(
        month="2026-10",
        timezone="Europe/Berlin",
        start=START,
        end=END,
        generated_at=datetime(2026, 11, 1, 7, 30, tzinfo=UTC),
        revision=revision,
        summary=Summary(
            services=3,
            slos_met=2,
            slos_missed=1,
            incidents=3,
            downtime_seconds=98263.75,
            error_budget_remaining_pct=-12.5,
            backup_sets=2,
            backup_runs_ok=58,
            backup_runs_failed=3,
            drills_passed=1,
            drills_failed=1,
            capacity_within_30_days=1,
            capacity_within_90_days=1,
            quality_pass_rate_pct=93.548,
            expiring_next_month=2,
        ),
        changes=["shop-api availability rose 0.012 points", "crm-db backups started failing on 2026-10-04"],
        services=services,
        backups=[
            BackupMonth("shop-db", 31, 31, 0, 93, "ok", []),
            BackupMonth("crm-db", 30, 27, 3, 27, "fail", ["2026-10-04: fresh: newest backup is 31h old"]),
        ],
        drills=[
            DrillMonth("shop", at, "ok", 412.0, 3600.0, 5400.0, 86400.0, []),
            DrillMonth("crm", at, "fail", 9000.5, 3600.0, None, 86400.0, ["rowcount: orders 0 rows"]),
        ],
        capacity=[
            CapacityForecast(
                "shop-db size", "warn", "percent", 77.3, 80.0, 9.0, 6.5, 14.0, date(2026, 11, 10), history, (77.3, 0.3)
            )
        ],
        quality=[QualityTable("analytics.events", 31, 29, "fail", ["not_null: user_id 12 nulls"])],
        expiring=[
            Expiring("vpn-cert", "warn", 20, datetime(2026, 11, 21, tzinfo=UTC), "tls:vpn:443", "netops"),
            Expiring("support contract", "fail", 5, datetime(2026, 11, 6, tzinfo=UTC), None, None),
        ],
        sources=[
            StoredSource("sla-report", "month", END, "0b9f7c1e-run"),
            StoredSource("backup-verification", "daily", END - timedelta(hours=18), None),
        ],
        digest="9f" * 32,
        rules=[
            "A probe result at time t covers [t, t + interval) of its service.",
            "availability_pct = 100 * up / (up + down)",
        ],
        notes=["no data-quality run on 2026-10-12"],
    )


@pytest.fixture(scope="module")
def report() -> MonthReport:
    return build_report()


@pytest.fixture(scope="module")
def charts(report: MonthReport) -> Charts:
    return monthly_charts(report)


@pytest.fixture(scope="module")
def html(report: MonthReport, charts: Charts) -> str:
    return render_html(report, charts)


@pytest.fixture(scope="module")
def email_html(report: MonthReport, charts: Charts) -> str:
    return render_html(report, charts, for_email=True)


@pytest.fixture(scope="module")
def pdf(html: str) -> bytes:
    return render_pdf(html)


class StrictParser(HTMLParser):
    """html.parser with the checks it lacks: every non-void element closed, in order; one doctype."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.titles: list[tuple[str, str]] = []  # (class, title) of elements with a title
        self.headings: list[str] = []
        self._in_h2 = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if "title" in values:
            self.titles.append((values.get("class") or "", values["title"] or ""))
        self._in_h2 = tag == "h2"
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        pass  # <path .../> inside SVG: complete in itself

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}> at {self.getpos()}")
            return
        self.stack.pop()
        self._in_h2 = False

    def handle_data(self, data: str) -> None:
        if self._in_h2 and self.stack and self.stack[-1] == "h2":
            self.headings.append(data.strip())


def parse(document: str) -> StrictParser:
    parser = StrictParser()
    parser.feed(document)
    parser.close()
    return parser


def test_html_parses_with_sections_in_order(html: str) -> None:
    parser = parse(html)
    assert parser.errors == [] and parser.stack == []
    assert html.startswith("<!DOCTYPE html>")
    assert parser.headings == ["Contents"] + [heading for _, heading in SECTIONS]
    summary, changes = html.index('id="summary"'), html.index('id="changes"')
    assert html.index("Monthly report 2026-10") < summary < changes < html.index('id="services"')


def test_revision_is_marked() -> None:
    revised = render_html(build_report(revision=3), Charts({}, {}))
    assert "Revision 3 &mdash; replaces revision 2" in revised or "Revision 3 — replaces revision 2" in revised
    assert "replaces revision" not in render_html(build_report(revision=1), Charts({}, {}))


def test_html_has_the_stored_figures(report: MonthReport, html: str) -> None:
    for service in report.services:
        assert f"{service.availability_pct:.3f}%" in html  # 3 decimals: 99.952%, 87.123%, 100.000%
        assert f"{service.coverage_pct:.3f}%" in html
    assert "99.952%" in html and "87.123%" in html
    assert "+0.012 pts" in html  # month-over-month change of shop-api
    titles = [float(t.removesuffix(" s")) for css, t in parse(html).titles if css == "dur"]
    stored = [i.seconds for s in report.services for i in s.incidents]
    stored += [report.summary.downtime_seconds, 412.0, 3600.0, 9000.5, 5400.0]
    for seconds in stored:
        assert seconds in titles, seconds  # exact: 754.5, 93784.25, 98263.75 ...
    assert 'title="93784.25 s">26h 3m 4s<' in html
    assert "#17: 4 alerts, 1 escalated" in html  # the incident record (opsflow incidents show 17)
    assert report.digest in html and "0b9f7c1e-run" in html
    for line in report.rules + report.changes + report.notes:
        assert line.replace("<", "&lt;") in html or line in html


def test_html_loads_no_external_resource(html: str, email_html: str) -> None:
    for document in (html, email_html):
        assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", document, re.I)
        # every reference is an in-page anchor or a data: URI, quoted
        assert not re.search(r"""\b(src|href)\s*=\s*(?!"#|"data:|'#|'data:)""", document, re.I)
        assert "@import" not in document
        assert not re.search(r"url\(\s*['\"]?(?!data:|#)", document)
        assert "<script" not in document.lower() and "<link" not in document.lower()


def test_hostile_service_name_shows_as_text(html: str, email_html: str) -> None:
    for document in (html, email_html):
        assert HOSTILE not in document
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in document


def test_no_emoji_statuses_are_word_badges(html: str) -> None:
    assert not re.search("[\U0001f300-\U0001faff\u2600-\u27bf]", html)
    for word in ("OK", "WARN", "FAIL"):
        assert re.search(rf'class="badge badge-\w+">{word}<', html), word


def test_email_variant_has_png_and_inline_styles(charts: Charts, email_html: str) -> None:
    assert "<svg" not in email_html
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', email_html)
    assert len(images) == len(charts.png) >= 4
    assert all(base64.b64decode(data).startswith(b"\x89PNG") for data in images)
    assert re.search(r'<td[^>]* style="[^"]*padding', email_html)
    assert re.search(r'class="badge badge-fail" style="[^"]*background: #c62828', email_html)
    assert parse(email_html).errors == []


def test_charts_cover_services_days_and_forecasts(report: MonthReport, charts: Charts) -> None:
    expected = {"availability", "downtime", "latency", "capacity:shop-db size"}
    assert set(charts.svg) == set(charts.png) == expected
    assert all(text.startswith("<svg") for text in charts.svg.values())
    services = [_service(f"svc-{i:03d}", 99.0 + i / 100, True, [], 1) for i in range(60)]
    many = dataclasses.replace(build_report(), services=services)
    large = monthly_charts(many, formats=("svg",))
    assert "availability-histogram" in large.svg and not large.png
    assert "Worst 30 of 60 services" in large.svg["availability"]


def need(tool: str) -> None:
    """Skip only where the tool is absent and apt is too (.ci/run installs poppler-utils where apt exists)."""
    if shutil.which(tool) is None:
        if shutil.which("apt-get") is None:
            pytest.skip(f"{tool} is absent and apt is unavailable (.ci/run installs poppler-utils)")
        pytest.fail(f"{tool} is missing: .ci/run installs it with apt-get install poppler-utils")


def test_pdf_has_sections_toc_and_page_numbers(pdf: bytes, tmp_path: Path) -> None:
    need("pdftotext")
    path = tmp_path / "report.pdf"
    path.write_bytes(pdf)
    text = subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True, check=True).stdout
    pages = text.split("\f")
    pages = [page for page in pages if page.strip()]
    assert len(pages) >= 2
    for number, page in enumerate(pages, start=1):
        assert f"Page {number} of {len(pages)}" in page
    for _, heading in SECTIONS:
        assert heading in text
        # the table of contents on page 1: the heading, a leader, the page it starts on
        assert re.search(rf"{re.escape(heading)}[ .]*\d+\s*$", pages[0], re.M), heading
    assert "99.952%" in text and "<script>alert(1)</script>" in text


def test_pdf_first_page_is_not_blank(pdf: bytes, tmp_path: Path) -> None:
    need("pdftoppm")
    from PIL import Image

    (tmp_path / "report.pdf").write_bytes(pdf)
    subprocess.run(
        [
            "pdftoppm",
            "-png",
            "-r",
            "50",
            "-f",
            "1",
            "-l",
            "1",
            "-singlefile",
            str(tmp_path / "report.pdf"),
            str(tmp_path / "page"),
        ],
        check=True,
    )
    assert non_white_fraction(Image.open(tmp_path / "page.png")) > 0.01


def non_white_fraction(image: object) -> float:
    grey = image.convert("L")  # type: ignore[attr-defined]
    histogram = grey.histogram()
    return sum(histogram[:240]) / sum(histogram)


def test_chromium_renders_the_html(html: str) -> None:
    if not CHROMIUM.exists():
        if shutil.which("apt-get") is None:
            pytest.skip("Debian's chromium is absent and apt is unavailable (.ci/run installs it)")
        pytest.fail("Debian's chromium is missing: .ci/run installs it with apt-get install chromium")
    from PIL import Image
    from playwright.sync_api import sync_playwright

    requests: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 1400})
            page.on("request", lambda request: requests.append(request.url))
            page.on("dialog", lambda dialog: requests.append("dialog: " + dialog.message))
            page.set_content(html, wait_until="load")
            shot = page.screenshot(full_page=True)
            assert page.locator("svg").count() >= 4
            assert page.get_by_text(HOSTILE).count() >= 1  # the name as text, not a script
        finally:
            browser.close()
    assert [url for url in requests if not url.startswith(("data:", "about:"))] == []
    assert non_white_fraction(Image.open(io.BytesIO(shot))) > 0.02


def test_summary_text_has_headline_figures(report: MonthReport) -> None:
    text = summary_text(report)
    assert text.startswith("*Monthly report 2026-10* (revision 2, replaces revision 1)")
    assert "2 met, 1 missed of 3 services" in text and "total downtime 27h 17m 44s" in text
    assert "1 passed, 1 failed" in text and "93.5% of runs passed" in text


def test_pdf_renderer_fetches_nothing() -> None:
    """A stray reference (not produced by the template) is refused, not fetched: no network, no local file."""
    started = time.perf_counter()
    pdf = render_pdf('<p>x<img src="http://203.0.113.1/x.png"><img src="file:///etc/passwd"></p>')
    assert pdf.startswith(b"%PDF") and time.perf_counter() - started < 5  # no 10 s connect timeout
