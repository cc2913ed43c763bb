"""The monthly stakeholder report rendered: one self-contained HTML file, its email variant, the charts,
the PDF and a short summary for Slack (SPEC §1 stakeholder, issue 17).

Pure rendering: it is given an :class:`opsflow.monthly.MonthReport` (every figure already stored by the
routines) and returns text or bytes; nothing is recomputed except presentation (sorting, formatting,
chart geometry). The only file read is this package's own jinja2 template. matplotlib and WeasyPrint are
imported inside the functions that need them (slow to import; a Slack summary needs neither).

Conventions every output follows, so a test (or an auditor) can compare against the stored values:
availability with 3 decimals (``99.952%``); durations as h/m/s with the exact stored seconds in a
``title`` attribute (``<span class="dur" title="754.5 s">12m 35s</span>``); statuses as coloured badges
with words (OK / WARN / FAIL / ERROR), never emoji (headless Chromium here has no emoji font).

>>> format_pct(99.95234)
'99.952%'
>>> format_hms(754.5), format_hms(93784), format_hms(0)
('12m 35s', '26h 3m 4s', '0s')
"""

from __future__ import annotations

import base64
import io
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from statistics import median
from typing import Any

from markupsafe import Markup, escape

from opsflow.monthly import CapacityForecast, MonthReport, ServiceMonth
from opsflow.units import format_quantity
from reports._jinja import jinja_environment

FONT_STACK = '"DejaVu Sans", "Liberation Sans", sans-serif'
# Above this many services the availability chart shows the worst ones plus a histogram of all:
# 1,000 bars are unreadable and make a multi-megabyte SVG.
AVAILABILITY_BARS_MAX = 40
WORST_SHOWN = 30
# Above this many services the latency chart draws the median and the worst p95 instead of one line each.
LATENCY_LINES_MAX = 8

# (anchor, heading): the sections in order; the table of contents, the PDF bookmarks and the tests use these.
SECTIONS: tuple[tuple[str, str], ...] = (
    ("summary", "Executive summary"),
    ("changes", "What changed"),
    ("services", "Availability and latency"),
    ("incidents", "Incidents"),
    ("backups", "Backups"),
    ("drills", "DR drills"),
    ("capacity", "Capacity"),
    ("quality", "Data quality"),
    ("expiring", "Expiries"),
    ("appendix", "Appendix: accounting rules, coverage and sources"),
    ("notes", "Notes"),
)

# Print styles (the PDF, and a browser's print): page numbers and the table of contents' page numbers. In the
# document as <style media="print">, not passed to WeasyPrint as a stylesheet: those are user-origin and
# lose to the document's own rules.
PDF_CSS = """
@page { size: A4; margin: 16mm 14mm 18mm 14mm;
        @bottom-right { content: "Page " counter(page) " of " counter(pages);
                        font-family: "DejaVu Sans", "Liberation Sans", sans-serif; font-size: 8pt; color: #555; } }
nav.toc a::after { content: leader(".") " " target-counter(attr(href), page); }
h2, h3 { break-after: avoid; }
figure { break-inside: avoid; }
/* The long tables (services, incidents, sources) run over many pages: a fixed layout sizes columns from
   the header row instead of measuring every cell first (WeasyPrint's cost grows with the cells). */
table.long { table-layout: fixed; }
table.long { font-size: 7pt; }
table.long th.name { width: 14%; }
table.long th.slo { width: 6%; }
table.long th { white-space: normal; overflow-wrap: anywhere; }
table.long th.idx { width: 5%; }
/* A4 is narrower than a screen: eleven columns of the services table must fit without clipping. */
table { font-size: 7.5pt; }
th, td { padding: 2px 3px; }
body { font-size: 10pt; max-width: none; padding: 0; }
.chart svg { width: 100%; height: auto; }
"""


@dataclass(frozen=True)
class Charts:
    """The report's charts by name (``availability``, ``availability-histogram``, ``downtime``, ``latency``,
    ``capacity:<metric>``): SVG text for the HTML and the PDF, PNG bytes for email (clients do not render
    SVG). A chart with no data to draw is absent from both."""

    svg: dict[str, str]
    png: dict[str, bytes]


# ---------------------------------------------------------------------------------------------- formatting


def format_pct(value: float | None, decimals: int = 3) -> str:
    """A percentage with a fixed number of decimals (availability: 3), ``n/a`` when unknown."""
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.{decimals}f}%"


def format_hms(seconds: float | None) -> str:
    """A duration as hours, minutes and whole seconds (``26h 3m 4s``); the exact value goes in a title."""
    if seconds is None or not math.isfinite(seconds):
        return "n/a"
    # Half up (754.5 s -> 12m 35s), not Python's half-to-even: people expect it, and the title has the exact value.
    sign, whole = ("-" if seconds < 0 else ""), math.floor(abs(seconds) + 0.5)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours}h"] if hours else []
    parts += [f"{minutes}m"] if minutes else []
    parts += [f"{secs}s"] if secs or not parts else []
    return sign + " ".join(parts)


def exact_seconds(seconds: float) -> str:
    """The stored seconds, exactly (shortest round-tripping repr; ``754.5``, ``3600``)."""
    return repr(int(seconds)) if float(seconds).is_integer() else repr(float(seconds))


def _duration(seconds: float | None) -> Markup:
    """A duration span: h/m/s text, the exact stored seconds in ``title`` (for readers and tests)."""
    if seconds is None:
        return Markup('<span class="muted">n/a</span>')
    return Markup('<span class="dur" title="{} s">{}</span>').format(exact_seconds(seconds), format_hms(seconds))


_BADGE_WORDS = {"ok": "OK", "warn": "WARN", "fail": "FAIL", "error": "ERROR"}


def _badge(status: str | bool | None) -> Markup:
    """A coloured badge with a word: a routine status, or an SLO met (True) / missed (False) / unknown."""
    if status is True:
        status = "ok"
    elif status is False:
        status = "fail"
    key = str(status).lower() if status is not None else "none"
    word = _BADGE_WORDS.get(key, "N/A" if status is None else str(status).upper())
    css = key if key in _BADGE_WORDS else "none"
    return Markup('<span class="badge badge-{}">{}</span>').format(css, word)


def _change(service: ServiceMonth) -> Markup:
    """Month-over-month change of availability in percentage points, 3 decimals, coloured by direction."""
    now, before = service.availability_pct, service.previous_availability_pct
    if now is None or before is None:
        return Markup('<span class="muted">n/a</span>')
    delta = now - before
    css = "up" if delta > 0 else "down" if delta < 0 else "muted"
    return Markup('<span class="{}">{:+.3f} pts</span>').format(css, delta)


def _when(moment: datetime | date | None) -> str:
    """A date or UTC instant for people (``2026-10-04 13:05 UTC``), ``n/a`` when unknown."""
    if moment is None:
        return "n/a"
    if isinstance(moment, datetime):
        return moment.strftime("%Y-%m-%d %H:%M UTC")
    return moment.isoformat()


def _quantity(value: float | None, unit: str) -> str:
    return "n/a" if value is None else format_quantity(value, unit)


def _days(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} d"


# ---------------------------------------------------------------------------------------------- charts


def monthly_charts(report: MonthReport, formats: Sequence[str] = ("svg", "png")) -> Charts:
    """Every chart of ``report`` in each of ``formats`` (``svg``, ``png``): availability per service vs its
    SLO (sorted, worst first; above :data:`AVAILABILITY_BARS_MAX` services the worst :data:`WORST_SHOWN`
    plus a histogram of all), daily downtime (all services summed), latency p95 per day, and one chart per
    capacity forecast (history, trend line when a fit is known, threshold, crossing date)."""
    pyplot = _pyplot()
    drawers: list[tuple[str, Any]] = [
        ("availability", lambda: _availability_figure(pyplot, report.services)),
        ("downtime", lambda: _downtime_figure(pyplot, report.services)),
        ("latency", lambda: _latency_figure(pyplot, report.services)),
    ]
    if len(report.services) > AVAILABILITY_BARS_MAX:
        drawers.insert(1, ("availability-histogram", lambda: _histogram_figure(pyplot, report.services)))
    drawers += [(f"capacity:{f.metric}", _capacity_drawer(pyplot, f)) for f in report.capacity]
    svg: dict[str, str] = {}
    png: dict[str, bytes] = {}
    for name, draw in drawers:
        figure = draw()
        if figure is None:  # nothing stored to draw
            continue
        try:
            if "svg" in formats:
                svg[name] = _svg_text(figure)
            if "png" in formats:
                png[name] = _png_bytes(figure)
        finally:
            pyplot.close(figure)
    return Charts(svg=svg, png=png)


def _pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend with the report's look; imported here only (slow import)."""
    import matplotlib

    matplotlib.use("Agg")  # no display; must precede pyplot
    from matplotlib import pyplot

    matplotlib.rcParams.update(
        {
            "font.family": ["DejaVu Sans", "Liberation Sans", "sans-serif"],
            "font.size": 9,
            "svg.fonttype": "none",  # text stays text in the SVG: smaller, and the page's fonts draw it
            "svg.hashsalt": "opsflow-monthly",  # deterministic element ids: same input, same file
            "axes.spines.top": False,
            "axes.spines.right": False,
        }
    )
    return pyplot


def _figure(pyplot: Any, height: float, left: float = 0.08, right: float = 0.98) -> tuple[Any, Any]:
    """A 7.5-inch-wide figure with fixed margins: ``tight_layout`` re-measures every label and cost a third
    of the charts' time for 1,000 services; these charts' labels are short and known."""
    figure, axes = pyplot.subplots(figsize=(7.5, height))
    figure.subplots_adjust(left=left, right=right, top=1 - 0.35 / height, bottom=0.55 / height)
    return figure, axes


def _dates(axes: Any) -> None:
    """Concise date ticks on the x axis (no rotation, no overlap, no layout pass)."""
    import matplotlib.dates

    locator = matplotlib.dates.AutoDateLocator(maxticks=8)
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(matplotlib.dates.ConciseDateFormatter(locator))


def _svg_text(figure: Any) -> str:
    """The figure as inline SVG: the XML declaration and DOCTYPE dropped (they are invalid inside HTML)."""
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def _png_bytes(figure: Any) -> bytes:
    """The figure as a PNG for email (96 dpi keeps 1,000-service mails small)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=96, metadata={"Software": None})
    return buffer.getvalue()


def _availability_figure(pyplot: Any, services: Sequence[ServiceMonth]) -> Any:
    """Horizontal bars of availability per service, worst at the top, each SLO as a black tick."""
    known = sorted((s for s in services if s.availability_pct is not None), key=lambda s: s.availability_pct or 0)
    if not known:
        return None
    shown = known if len(services) <= AVAILABILITY_BARS_MAX else known[:WORST_SHOWN]
    # Room on the left for service names (cut to 40 characters).
    figure, axes = _figure(pyplot, 1.2 + 0.25 * len(shown), left=0.30)
    rows = range(len(shown))
    colours = ["#c62828" if s.slo_met is False else "#2e7d32" if s.slo_met else "#757575" for s in shown]
    axes.barh(list(rows), [s.availability_pct for s in shown], color=colours, height=0.6)
    slo_rows = [(i, s.slo_pct) for i, s in enumerate(shown) if s.slo_pct is not None]
    if slo_rows:
        axes.scatter([v for _, v in slo_rows], [i for i, _ in slo_rows], marker="|", s=160, color="black", zorder=3)
    axes.set_yticks(list(rows), [s.service[:40] for s in shown])
    axes.invert_yaxis()
    lowest = min([s.availability_pct or 100 for s in shown] + [v for _, v in slo_rows])
    axes.set_xlim(max(0.0, lowest - max(0.05, (100 - lowest) * 0.2)), 100)
    axes.set_xlabel("availability % (black tick: the service's SLO; red: SLO missed)")
    title = "Availability vs SLO" if len(shown) == len(known) else f"Worst {len(shown)} of {len(known)} services"
    axes.set_title(title)
    return figure


def _histogram_figure(pyplot: Any, services: Sequence[ServiceMonth]) -> Any:
    """A histogram of every service's availability (the view of 1,000 services the bar chart cannot give)."""
    values = [s.availability_pct for s in services if s.availability_pct is not None]
    if not values:
        return None
    figure, axes = _figure(pyplot, 2.6)
    axes.hist(values, bins=40, color="#1565c0")
    axes.set_xlabel("availability %")
    axes.set_ylabel("services")
    axes.set_title(f"Availability of all {len(values)} services")
    return figure


def _daily_totals(services: Iterable[ServiceMonth]) -> dict[date, list[float]]:
    """Per day: the stored downtime seconds of every service that has that day."""
    days: dict[date, list[float]] = {}
    for service in services:
        for day, _availability, downtime, _latency in service.daily:
            days.setdefault(day, []).append(downtime)
    return days


def _downtime_figure(pyplot: Any, services: Sequence[ServiceMonth]) -> Any:
    """Bars of downtime per day, all services summed, in minutes."""
    days = _daily_totals(services)
    if not days:
        return None
    ordered = sorted(days)
    figure, axes = _figure(pyplot, 2.6)
    axes.bar(ordered, [sum(days[d]) / 60 for d in ordered], color="#c62828", width=0.8)
    axes.set_ylabel("downtime, minutes")
    axes.set_title("Downtime per day (all services)")
    _dates(axes)
    return figure


def _latency_figure(pyplot: Any, services: Sequence[ServiceMonth]) -> Any:
    """Latency p95 per day: one line per service, or the median and the worst across many services."""
    series = {s.service: [(d, p95) for d, _a, _dt, p95 in s.daily if p95 is not None] for s in services}
    series = {name: points for name, points in series.items() if points}
    if not series:
        return None
    figure, axes = _figure(pyplot, 2.8, right=0.75)  # the legend goes on the right
    if len(series) <= LATENCY_LINES_MAX:
        for name, points in series.items():
            axes.plot([d for d, _ in points], [v for _, v in points], marker=".", label=name[:40])
    else:
        per_day: dict[date, list[float]] = {}
        for points in series.values():
            for day, value in points:
                per_day.setdefault(day, []).append(value)
        ordered = sorted(per_day)
        axes.plot(ordered, [median(per_day[d]) for d in ordered], label=f"median of {len(series)} services")
        axes.plot(ordered, [max(per_day[d]) for d in ordered], label="worst service", color="#c62828")
    axes.set_ylabel("p95 latency, ms")
    axes.set_title("Latency p95 per day")
    # Beside the plot, not on it: the lines fill the axes.
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _dates(axes)
    return figure


def _capacity_drawer(pyplot: Any, forecast: CapacityForecast) -> Any:
    return lambda: _capacity_figure(pyplot, forecast)


def _capacity_figure(pyplot: Any, forecast: CapacityForecast) -> Any:
    """One forecast: its stored history, the trend line (anchored at the last history day, extended to the
    crossing), the threshold and the crossing date."""
    if not forecast.daily:
        return None
    import matplotlib.ticker

    days = [d for d, _ in forecast.daily]
    figure, axes = _figure(pyplot, 2.6, left=0.1, right=0.78)  # the legend goes on the right
    axes.plot(days, [v for _, v in forecast.daily], color="#1565c0", label="history")
    if forecast.fit is not None:
        # The model carries the fit's value at the forecast's as_of but not as_of itself: the last stored
        # day is the closest stand-in (the forecast is computed on the day the history ends).
        value, slope = forecast.fit
        end = max(days[-1], forecast.crossing_date or days[-1])
        span = (end - days[-1]).days
        xs = [days[0], days[-1], days[-1] + timedelta(days=span)]
        ys = [value - slope * (days[-1] - days[0]).days, value, value + slope * span]
        axes.plot(xs, ys, linestyle="--", color="#6a1b9a", label="trend")
    if forecast.threshold is not None:
        axes.axhline(forecast.threshold, color="#c62828", linewidth=1, label="threshold")
    if forecast.crossing_date is not None:
        axes.axvline(forecast.crossing_date, color="#ef6c00", linestyle=":", label=f"crossing {forecast.crossing_date}")
    unit = forecast.unit
    axes.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: format_quantity(v, unit)))
    axes.set_title(f"{forecast.metric[:60]}")
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _dates(axes)
    return figure


# ---------------------------------------------------------------------------------------------- HTML


def render_html(report: MonthReport, charts: Charts, *, for_email: bool = False) -> str:
    """The whole report as one self-contained HTML document: inline ``<style>``, charts as inline SVG, no
    script, font or image fetched from anywhere. ``for_email``: charts as PNG ``data:`` URIs instead of SVG
    (email clients do not render SVG; ``data:`` rather than ``cid:`` so the body stands alone) and the
    stylesheet's simple rules copied into ``style=`` attributes (clients drop ``<style>``). Autoescaped:
    a service called ``<script>`` shows as text."""
    environment = _environment()
    html = environment.get_template("monthly.html.j2").render(
        r=report,
        s=report.summary,
        sections=SECTIONS,
        charts=_chart_markup(charts, for_email),
        drills_summary=_drills_summary(report),
        worst_shown=WORST_SHOWN if len(report.services) > AVAILABILITY_BARS_MAX else None,
        incidents=sorted(
            ((s.service, i) for s in report.services for i in s.incidents), key=lambda pair: pair[1].start
        ),
        for_email=for_email,
        font_stack=FONT_STACK,
        print_css=PDF_CSS,
    )
    return inline_css(html) if for_email else html


def _environment() -> Any:
    """The jinja2 environment with the formatting helpers as globals."""
    return jinja_environment(
        pct=format_pct,
        hms=format_hms,
        dur=_duration,
        badge=_badge,
        change=_change,
        when=_when,
        quantity=_quantity,
        days=_days,
    )


def _chart_markup(charts: Charts, for_email: bool) -> dict[str, Markup]:
    """Each chart as markup to drop in: the SVG itself, or an ``<img>`` with a PNG ``data:`` URI."""
    if for_email:
        return {
            name: Markup('<img class="chart-img" alt="{}" src="data:image/png;base64,{}">').format(
                name, base64.b64encode(data).decode("ascii")
            )
            for name, data in charts.png.items()
        }
    # The SVG is matplotlib's own output (labels escaped by it), not report text, so it is trusted markup.
    return {name: Markup(text) for name, text in charts.svg.items()}


def _drills_summary(report: MonthReport) -> list[dict[str, Any]]:
    """Per drill: achieved RTO/RPO against targets, for the executive summary."""
    return [
        {
            "drill": d,
            "rto_ok": _within(d.rto_seconds, d.rto_target_seconds),
            "rpo_ok": _within(d.rpo_seconds, d.rpo_target_seconds),
        }
        for d in report.drills
    ]


def _within(value: float | None, target: float | None) -> bool | None:
    return None if value is None or target is None else value <= target


_STYLE_BLOCK = re.compile(r"<style data-inline>(.*?)</style>", re.S)
_RULE = re.compile(r"([^{}]+)\{([^{}]*)\}")
_START_TAG = re.compile(r"<([a-zA-Z][a-zA-Z0-9]*)((?:\s+[^<>]*?)?)(/?)>")
_CLASS_ATTR = re.compile(r'\sclass="([^"]*)"')
_STYLE_ATTR = re.compile(r'\sstyle="([^"]*)"')


def inline_css(html: str) -> str:
    """Copy the rules of the ``<style data-inline>`` block into ``style=`` attributes, for email clients.

    Only the selectors this report's template uses are understood: ``tag``, ``.class``, ``tag.class`` and
    comma lists of them (anything else is left to the ``<style>`` block, which stays). Rules apply in
    stylesheet order; an element's own ``style=`` comes last and wins, as in a browser.

    >>> html = '<style data-inline>p { color: red } .x, b.y { margin: 0 }</style><p class="x">a</p><b>c</b>'
    >>> inline_css(html).split("</style>")[1]
    '<p class="x" style="color: red; margin: 0">a</p><b>c</b>'
    """
    block = _STYLE_BLOCK.search(html)
    if block is None:
        return html
    rules: list[tuple[str | None, str | None, str]] = []
    for selectors, body in _RULE.findall(block.group(1)):
        declarations = "; ".join(part.strip() for part in body.split(";") if part.strip())
        for selector in selectors.split(","):
            match = re.fullmatch(r"\s*([a-zA-Z][a-zA-Z0-9]*)?(?:\.([\w-]+))?\s*", selector)
            if match and (match.group(1) or match.group(2)):
                rules.append((match.group(1), match.group(2), declarations))

    def apply(tag: re.Match[str]) -> str:
        name, attributes, closing = tag.group(1).lower(), tag.group(2), tag.group(3)
        if name in {"html", "head", "style", "meta", "title"}:
            return tag.group(0)
        classes = set(_CLASS_ATTR.search(attributes).group(1).split()) if _CLASS_ATTR.search(attributes) else set()
        found = [d for t, c, d in rules if (t is None or t == name) and (c is None or c in classes)]
        if not found:
            return tag.group(0)
        own = _STYLE_ATTR.search(attributes)
        if own:
            found.append(own.group(1))
            attributes = _STYLE_ATTR.sub("", attributes)
        style = str(escape("; ".join(found)))
        return f'<{tag.group(1)}{attributes} style="{style}"{closing}>'

    head, body = html[: block.end()], html[block.end() :]
    return head + _START_TAG.sub(apply, body)


# ---------------------------------------------------------------------------------------------- PDF


def render_pdf(html: str) -> bytes:
    """The report (``render_html``'s document, not the email variant) as an A4 PDF with WeasyPrint: page
    numbers in every footer (``counter(page)`` of ``counter(pages)``), the table of contents with each
    section's page (``target-counter``), headings as PDF bookmarks, DejaVu/Liberation fonts embedded."""
    from weasyprint import HTML
    from weasyprint.urls import URLFetcher

    # Only data: URIs may be fetched: the document is self-contained, and a stray reference must not make
    # the renderer reach out to the network or read local files (it is logged and left out instead).
    fetcher = URLFetcher(allowed_protocols={"data"})
    return HTML(string=html, base_url=None, url_fetcher=fetcher).write_pdf()


# ---------------------------------------------------------------------------------------------- Slack


def summary_text(report: MonthReport) -> str:
    """A few markdown lines for Slack: the month, its revision and the headline figures."""
    s = report.summary
    revision = f" (revision {report.revision}, replaces revision {report.revision - 1})" if report.revision > 1 else ""
    drills = f"{s.drills_passed} passed, {s.drills_failed} failed" if s.drills_passed + s.drills_failed else "none ran"
    lines = [
        f"*Monthly report {report.month}*{revision}",
        f"• SLOs: {s.slos_met} met, {s.slos_missed} missed of {s.services} services; "
        f"lowest error budget left {format_pct(s.error_budget_remaining_pct, 1)}",
        f"• Incidents: {s.incidents}, total downtime {format_hms(s.downtime_seconds)}",
        f"• Backups: {s.backup_runs_ok} verified runs, {s.backup_runs_failed} failed, over {s.backup_sets} sets",
        f"• DR drills: {drills}",
        f"• Capacity: {s.capacity_within_30_days} crossing within 30 days, {s.capacity_within_90_days} within 90",
        f"• Data quality: {format_pct(s.quality_pass_rate_pct, 1)} of runs passed; "
        f"{s.expiring_next_month} item(s) expire next month",
    ]
    return "\n".join(lines) + "\n"
