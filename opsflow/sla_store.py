"""SQL for the SLA report (SPEC §6): rollups and the per-service figures, all in PostgreSQL.

Coverage rule: a result at t covers ``[t, min(t + interval, next result))`` — when
probes come closer than their interval, a result covers until the next one, so no
second is counted twice.

Rollups, all by UTC: ``probe_hourly`` (refreshed from raw rows after every probe
run, for the hours it touches), ``probe_daily`` (24 hours) and ``probe_weekly``
(ISO weeks of 7 complete days). A refresh drops the days and weeks over its hours;
they are rebuilt by the first probe run of the next day (:func:`refresh_after_write`)
or by the report that reads them (:func:`ensure_rollups`). A report reads under a
shared lock that keeps writers out (:func:`lock_for_reading`).

A report's :class:`ReadPlan` (:func:`plan_reads`) reads whole weeks, days and hours
outside maintenance from the rollups and everything else (partial hours at the
period's edges, hours touching maintenance) from raw rows with the same rule, so
the sum equals the raw-row answer.

Raw retention (``store.raw_probe_retention``, ``opsflow/retention.py``): a month whose raw
partition was dropped is listed in ``opsflow.probe_retention`` (:func:`dropped_months`). Its
rollups are never rebuilt (:func:`refresh_rollups` skips its hours: there is nothing to rebuild
them from); a report reads its partial hours pro rata from the hourly rollups
(:attr:`ReadPlan.retired`), takes its incidents from the incident records (``opsflow.incidents``)
and says so in :attr:`Figures.notes`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import psycopg

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
WEEK = timedelta(weeks=1)


@dataclass
class Figures:
    """What the SQL returns for one service."""

    up: float = 0.0
    down: float = 0.0
    histogram: dict[int, int] = field(default_factory=dict)
    incidents: list[tuple[datetime, datetime | None]] = field(default_factory=list)
    #: What the reader should know about how these figures were read (raw rows dropped by retention).
    notes: list[str] = field(default_factory=list)


#: ``(service, start, end, interval seconds)``: a stretch of one service's time read from one source.
Span = tuple[str, datetime, datetime, float]


@dataclass(frozen=True)
class Level:
    """A source of a report's figures: a rollup table (or raw rows) and the query parameters
    its spans are passed in (``{prefix}n``, ``{prefix}a``, ``{prefix}b``, ``{prefix}iv``)."""

    table: str
    column: str
    prefix: str
    unit: timedelta
    #: What else a row must satisfy to count as complete.
    complete: str = ""

    def spans_cte(self, name: str = "spans") -> str:
        p = self.prefix
        columns = f"%({p}n)s::text[], %({p}a)s::timestamptz[], %({p}b)s::timestamptz[], %({p}iv)s::float8[]"
        return f"{name} as (select * from unnest({columns}) x(service, a, b, iv))"  # noqa: S608

    def params(self, spans: Sequence[Span]) -> dict[str, list[object]]:
        p = self.prefix
        return {
            f"{p}n": [s[0] for s in spans],
            f"{p}a": [s[1] for s in spans],
            f"{p}b": [s[2] for s in spans],
            f"{p}iv": [float(s[3]) for s in spans],
        }


HOURLY = Level("probe_hourly", "hour", "h", HOUR)
DAILY = Level("probe_daily", "day", "d", DAY, complete="and r.hours = 24")
WEEKLY = Level("probe_weekly", "week", "w", WEEK)
RAW = Level("probe_results", "checked_at", "p", HOUR)  # raw pieces: only its spans' parameters are used
#: Stretches of months whose raw rows were dropped: read pro rata from the hours they touch.
RETIRED = Level("probe_hourly", "hour", "q", HOUR)

#: ``[start, end)`` of a UTC month whose raw partition was dropped by retention.
Month = tuple[datetime, datetime]


def dropped_months(conn: psycopg.Connection, start: datetime | None = None, end: datetime | None = None) -> list[Month]:
    """The months whose raw probe results were dropped (``opsflow.probe_retention``), in time order;
    only those overlapping ``[start, end)`` when given. A tiny table: one index lookup."""
    rows = conn.execute(
        """select month, month_end from opsflow.probe_retention
           where (%(end)s::timestamptz is null or month < %(end)s)
             and (%(start)s::timestamptz is null or month_end > %(start)s)
           order by month""",
        {"start": start, "end": end},
    ).fetchall()
    return [(a, b) for a, b in rows]


def outside_months(start: datetime, end: datetime, months: Sequence[Month]) -> list[tuple[datetime, datetime]]:
    """``[start, end)`` minus the (sorted, disjoint) ``months``.

    >>> aug = (datetime(2026, 8, 1, tzinfo=UTC), datetime(2026, 9, 1, tzinfo=UTC))
    >>> stretches = outside_months(datetime(2026, 7, 31, tzinfo=UTC), datetime(2026, 9, 2, tzinfo=UTC), [aug])
    >>> [(a.day, b.day) for a, b in stretches]
    [(31, 1), (1, 2)]
    """
    stretches: list[tuple[datetime, datetime]] = []
    cursor = start
    for a, b in months:
        if b <= cursor or a >= end:
            continue
        if a > cursor:
            stretches.append((cursor, a))
        cursor = max(cursor, b)
    if cursor < end:
        stretches.append((cursor, end))
    return stretches


def _overlaps(span: Span, months: Sequence[Month]) -> bool:
    return any(a < span[2] and b > span[1] for a, b in months)


def lock_rollups(conn: psycopg.Connection) -> None:
    """Hold the rollups for writing until ``conn``'s transaction ends: one writer at a time (a probe
    run's refresh, a report's build, a rebuild), and no writer while a report reads."""
    conn.execute("select pg_advisory_xact_lock(hashtext('opsflow.probe_hourly'))")


def lock_for_reading(conn: psycopg.Connection, plan: ReadPlan) -> bool:
    """Keep writers out of the rollups until ``conn``'s transaction ends (other readers may share), and
    say whether every row ``plan`` reads is there: a probe run may have dropped a day or a week
    between a report's build and its reads, and a missing row would read as no data."""
    conn.execute("select pg_advisory_xact_lock_shared(hashtext('opsflow.probe_hourly'))")
    months = dropped_months(conn)
    # A row missing in a month whose raw rows were dropped can never be built: read what there is.
    return not any(
        not _overlaps(span, months) for level, spans in plan.rollups() for span in _incomplete(conn, level, spans)
    )


def _drop(conn: psycopg.Connection, level: Level, names: Sequence[str], start: datetime, end: datetime) -> None:
    """Delete ``level``'s rows of ``names`` in ``[start, end)``."""
    conn.execute(
        f"delete from opsflow.{level.table} where service = any(%s) and {level.column} >= %s"  # noqa: S608
        f" and {level.column} < %s",
        (list(names), start, end),
    )


_REFRESH = """
with svc as (select * from unnest(%(names)s::text[], %(ivs)s::float8[]) s(service, iv)),
-- One index range scan per service (a join on service alone would walk every stored row before h1).
rows as (
    select s.service, r.t, r.ok, r.latency_ms, least(r.t + make_interval(secs => s.iv), r.nxt) as e
    from svc s cross join lateral (
        select p.checked_at as t, p.ok, p.latency_ms, lead(p.checked_at) over (order by p.checked_at) as nxt
        from opsflow.probe_results p
        where p.service = s.service and p.checked_at >= %(h0)s::timestamptz - make_interval(secs => s.iv)
          and p.checked_at < %(h1)s) r
),
cover as (
    select r.service, h as hour,
           coalesce(sum(extract(epoch from least(r.e, h + interval '1 hour') - greatest(r.t, h)))
                    filter (where r.ok), 0) as up_seconds,
           coalesce(sum(extract(epoch from least(r.e, h + interval '1 hour') - greatest(r.t, h)))
                    filter (where not r.ok), 0) as down_seconds
    from rows r
    cross join lateral generate_series(date_trunc('hour', r.t, 'UTC'), r.e - interval '1 microsecond',
                                       interval '1 hour') h
    where h >= %(h0)s and h < %(h1)s
    group by 1, 2
),
counts as (
    select service, date_trunc('hour', t, 'UTC') as hour,
           count(*) filter (where ok) as ok_count, count(*) filter (where not ok) as fail_count
    from rows where t >= %(h0)s group by 1, 2
),
hist as (
    select service, hour, array_agg(bucket order by bucket) as hist_buckets, array_agg(n order by bucket) as hist_counts
    from (select service, date_trunc('hour', t, 'UTC') as hour, opsflow.latency_bucket(latency_ms) as bucket,
                 count(*)::integer as n
          from rows where ok and latency_ms is not null and t >= %(h0)s group by 1, 2, 3) b
    group by 1, 2
)
insert into opsflow.probe_hourly
    (service, hour, interval_s, up_seconds, down_seconds, ok_count, fail_count, hist_buckets, hist_counts)
select s.service, h, s.iv, coalesce(c.up_seconds, 0), coalesce(c.down_seconds, 0),
       coalesce(n.ok_count, 0), coalesce(n.fail_count, 0),
       coalesce(x.hist_buckets, '{}'), coalesce(x.hist_counts, '{}')
from svc s
cross join generate_series(%(h0)s::timestamptz, %(h1)s::timestamptz - interval '1 hour', interval '1 hour') h
left join cover c on c.service = s.service and c.hour = h
left join counts n on n.service = s.service and n.hour = h
left join hist x on x.service = s.service and x.hour = h
"""


def floor_hour(moment: datetime) -> datetime:
    """The UTC hour ``moment`` is in (rollups are by UTC hour and day)."""
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def ceil_hour(moment: datetime) -> datetime:
    floored = floor_hour(moment)
    return floored if floored == moment else floored + HOUR


def refresh_rollups(
    conn: psycopg.Connection, services: Sequence[tuple[str, float]], start: datetime, end: datetime
) -> None:
    """Recompute the hourly rollups of ``services`` (name, interval seconds) for every UTC hour touching
    ``[start, end)`` from raw rows. Rows are stored for every hour, also hours without data."""
    if not services:
        return
    h0, h1 = floor_hour(start), ceil_hour(end)
    if h1 <= h0:
        h1 = h0 + HOUR
    # One refresher at a time (a probe run and a report may refresh the same hours at once).
    lock_rollups(conn)
    # Hours of months whose raw rows were dropped are never rebuilt: it would zero them out.
    for a, b in outside_months(h0, h1, dropped_months(conn, h0, h1)):
        _refresh_hours(conn, services, a, b)


def _refresh_hours(conn: psycopg.Connection, services: Sequence[tuple[str, float]], h0: datetime, h1: datetime) -> None:
    """:func:`refresh_rollups` of whole hours ``[h0, h1)``, under the rollup lock."""
    names = [name for name, _ in services]
    _drop(conn, HOURLY, names, h0, h1)
    conn.execute(_REFRESH, {"names": names, "ivs": [float(iv) for _, iv in services], "h0": h0, "h1": h1})
    # The days and weeks over these hours are now out of date: drop them here (cheap, once a minute);
    # the next day's first probe run or the report that reads them rebuilds them (``ensure_rollups``).
    _drop(conn, DAILY, names, floor_day(h0), ceil_day(h1))
    _drop(conn, WEEKLY, names, floor_week(h0), ceil_week(h1))


def rebuild(conn: psycopg.Connection, services: Sequence[tuple[str, float]], start: datetime, end: datetime) -> None:
    """Rebuild the hourly rollups of ``[start, end)`` from raw rows, then the days and weeks over them."""
    refresh_rollups(conn, services, start, end)
    names = [name for name, _ in services]
    refresh_daily(conn, names, floor_day(start), ceil_day(end))
    refresh_weekly(conn, names, floor_week(start), ceil_week(end))


def rebuild_all(conn: psycopg.Connection, services: Sequence[tuple[str, float]]) -> int:
    """Rebuild every hourly, daily and weekly rollup of ``services`` over all raw rows, under the rollup
    lock; return the hourly rows written (0 when there are no raw rows)."""
    row = conn.execute("select min(checked_at), max(checked_at) from opsflow.probe_results").fetchone()
    if row is None or row[0] is None:
        return 0
    lock_rollups(conn)
    # The hours of months whose raw rows were dropped stay: they are all that is left of them.
    conn.execute(
        """delete from opsflow.probe_hourly h where not exists (
               select 1 from opsflow.probe_retention m where h.hour >= m.month and h.hour < m.month_end)"""
    )
    rebuild(conn, services, row[0], row[1] + HOUR)
    count = conn.execute("select count(*) from opsflow.probe_hourly").fetchone()
    return int(count[0]) if count else 0


def floor_day(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def ceil_day(moment: datetime) -> datetime:
    floored = floor_day(moment)
    return floored if floored == moment else floored + DAY


# Sums rollup rows into the next coarser unit: days from hours, weeks from days.
_SUM_ROLLUPS = """
with src as (
    select service, date_trunc('{unit}', {source_column}, 'UTC') as {unit}, interval_s, up_seconds, down_seconds,
           hist_buckets, hist_counts
    from opsflow.{source}
    where service = any(%(names)s) and {source_column} >= %(a)s and {source_column} < %(b)s {source_filter}),
totals as (
    select service, {unit}, min(interval_s) as interval_s, count(*) as parts,
           sum(up_seconds) as up_seconds, sum(down_seconds) as down_seconds
    from src group by 1, 2 having min(interval_s) = max(interval_s) {having}),
buckets as (
    select service, {unit}, array_agg(b order by b) as hist_buckets, array_agg(c order by b) as hist_counts
    from (select src.service, src.{unit}, u.b, sum(u.c)::integer as c
          from src cross join lateral unnest(src.hist_buckets, src.hist_counts) u(b, c) group by 1, 2, 3) x
    group by 1, 2)
insert into opsflow.{target}
    (service, {unit}, interval_s, {parts_column}, up_seconds, down_seconds, hist_buckets, hist_counts)
select t.service, t.{unit}, t.interval_s, t.parts, t.up_seconds, t.down_seconds,
       coalesce(b.hist_buckets, '{{}}'), coalesce(b.hist_counts, '{{}}')
from totals t left join buckets b using (service, {unit})
"""


def refresh_daily(conn: psycopg.Connection, names: Sequence[str], d0: datetime, d1: datetime) -> None:
    """Recompute the daily rollups of ``[d0, d1)`` (UTC days) from the hourly ones, and drop the weeks
    over them (rebuilt when read); a day whose hours were built with different intervals gets no row
    (the report reads its hours)."""
    _sum_rollups(conn, DAILY, names, d0, d1)
    _drop(conn, WEEKLY, names, floor_week(d0), ceil_week(d1))


def floor_week(moment: datetime) -> datetime:
    """The start (Monday 00:00 UTC) of the UTC ISO week ``moment`` is in."""
    day = floor_day(moment)
    return day - timedelta(days=day.weekday())


def ceil_week(moment: datetime) -> datetime:
    floored = floor_week(moment)
    return floored if floored == moment else floored + WEEK


def refresh_weekly(conn: psycopg.Connection, names: Sequence[str], w0: datetime, w1: datetime) -> None:
    """Recompute the weekly rollups of ``[w0, w1)`` (UTC ISO weeks) from the daily ones; a week gets a
    row only when its 7 days are complete (24 hours each) and share one interval."""
    _sum_rollups(conn, WEEKLY, names, w0, w1)


def _sum_rollups(conn: psycopg.Connection, target: Level, names: Sequence[str], start: datetime, end: datetime) -> None:
    lock_rollups(conn)
    _drop(conn, target, names, start, end)
    # A day sums whatever hours it has (``hours`` says how many); a week only 7 complete days.
    source, source_filter, having, parts_column = (
        (HOURLY, "", "", "hours") if target is DAILY else (DAILY, "and hours = 24", "and count(*) = 7", "days")
    )
    query = _SUM_ROLLUPS.format(
        unit=target.column,
        source=source.table,
        source_column=source.column,
        source_filter=source_filter,
        having=having,
        target=target.table,
        parts_column=parts_column,
    )
    conn.execute(query, {"names": list(names), "a": start, "b": end})


def refresh_after_write(
    conn: psycopg.Connection, services: dict[str, float], checked: Sequence[tuple[str, datetime]]
) -> None:
    """Incremental fill after new results: the hours a result at t can change are those of
    ``[t - interval, t + interval)`` (it truncates the previous result's coverage and covers forward).
    Services whose results touch the same hours are refreshed together (one statement per probe run).

    Then the days and weeks that are complete before those hours (this week's earlier days, last week)
    are rebuilt if missing: once a day, by the first probe run after midnight UTC, so a monthly report
    on the 1st finds its weeks and days ready instead of summing 30 days of hours itself."""
    by_service: dict[str, list[datetime]] = {}
    for name, at in checked:
        if name in services:
            by_service.setdefault(name, []).append(at)
    touched: list[Span] = []
    settled: list[Span] = []
    for name, times in by_service.items():
        iv = timedelta(seconds=services[name])
        touched.append((name, floor_hour(min(times) - iv), ceil_hour(max(times) + iv), services[name]))
        today = floor_day(max(times))  # the day of the newest result; everything before it is complete
        settled.append((name, floor_week(today) - WEEK, today, services[name]))
    for (h0, h1), group in by_stretch(touched).items():
        refresh_rollups(conn, group, h0, h1)
    ensure_rollups(conn, plan_reads(settled))


# -- the report's reads -----------------------------------------------------------------------


@dataclass
class ReadPlan:
    """Where a report reads each stretch of time: whole UTC weeks, days and hours from the rollups,
    the partial hours at the edges from raw rows. Build one with :func:`plan_reads`."""

    weeks: list[Span] = field(default_factory=list)
    days: list[Span] = field(default_factory=list)
    hours: list[Span] = field(default_factory=list)
    pieces: list[Span] = field(default_factory=list)
    #: Stretches of months whose raw rows were dropped (:func:`retire`): each hour they touch counts
    #: with the share of it they cover.
    retired: list[Span] = field(default_factory=list)

    def rollups(self) -> list[tuple[Level, list[Span]]]:
        return [(WEEKLY, self.weeks), (DAILY, self.days), (HOURLY, self.hours)]

    def params(self) -> dict[str, object]:
        merged: dict[str, object] = {**RAW.params(self.pieces), **RETIRED.params(self.retired)}
        for level, spans in self.rollups():
            merged.update(level.params(spans))
        return merged


def _split(
    span: Span, floor: Callable[[datetime], datetime], ceil: Callable[[datetime], datetime]
) -> tuple[list[Span], list[Span]]:
    """``span`` cut into its whole units (inner) and the stretches before and after them (outer)."""
    name, a, b, iv = span
    u0, u1 = ceil(a), floor(b)
    if u1 <= u0:
        return [], [span]
    outer = ([(name, a, u0, iv)] if a < u0 else []) + ([(name, u1, b, iv)] if u1 < b else [])
    return [(name, u0, u1, iv)], outer


def plan_reads(ranges: Sequence[Span], use_rollups: bool = True) -> ReadPlan:
    """Split each range into whole UTC weeks, then whole days, then whole hours, and the raw rest.

    >>> plan = plan_reads([("api", datetime(2026, 11, 1, 0, 30, tzinfo=UTC), datetime(2026, 11, 20, tzinfo=UTC), 60)])
    >>> [(s[1].day, s[2].day) for s in plan.weeks], len(plan.days), len(plan.hours), len(plan.pieces)
    ([(2, 16)], 1, 1, 1)
    """
    plan = ReadPlan()
    if not use_rollups:
        plan.pieces = list(ranges)
        return plan
    for span in ranges:
        hours, pieces = _split(span, floor_hour, ceil_hour)
        plan.pieces += pieces
        for hour_span in hours:
            days, edge_hours = _split(hour_span, floor_day, ceil_day)
            plan.hours += edge_hours
            for day_span in days:
                weeks, edge_days = _split(day_span, floor_week, ceil_week)
                plan.days += edge_days
                plan.weeks += weeks
    return plan


def retire(plan: ReadPlan, months: Sequence[Month]) -> ReadPlan:
    """``plan`` with its raw pieces' stretches inside ``months`` (raw rows dropped) moved to ``retired``.

    >>> aug = (datetime(2026, 8, 1, tzinfo=UTC), datetime(2026, 9, 1, tzinfo=UTC))
    >>> piece = ("api", datetime(2026, 8, 31, 23, 30, tzinfo=UTC), datetime(2026, 9, 1, 0, 30, tzinfo=UTC), 60.0)
    >>> plan = retire(ReadPlan(pieces=[piece]), [aug])
    >>> [(s[1].hour, s[2].hour) for s in plan.pieces], [(s[1].hour, s[2].hour) for s in plan.retired]
    ([(0, 0)], [(23, 0)])
    """
    if not months:
        return plan
    pieces: list[Span] = []
    retired: list[Span] = list(plan.retired)
    for name, a, b, iv in plan.pieces:
        pieces += [(name, x, y, iv) for x, y in outside_months(a, b, months)]
        retired += [(name, max(a, m0), min(b, m1), iv) for m0, m1 in months if m0 < b and m1 > a]
    return ReadPlan(weeks=plan.weeks, days=plan.days, hours=plan.hours, pieces=pieces, retired=retired)


def _incomplete(conn: psycopg.Connection, level: Level, spans: Sequence[Span]) -> list[Span]:
    """The spans of ``level`` missing a row (or holding one built with another interval)."""
    if not spans:
        return []
    column = level.column
    rows = conn.execute(
        f"""with {level.spans_cte()}
            select x.service, x.a, x.b, x.iv, count(r.{column})
            from spans x left join opsflow.{level.table} r
              on r.service = x.service and r.{column} >= x.a and r.{column} < x.b and r.interval_s = x.iv
                 {level.complete}
            group by 1, 2, 3, 4""",  # noqa: S608
        level.params(spans),
    ).fetchall()
    return [(name, a, b, iv) for name, a, b, iv, have in rows if have != round((b - a) / level.unit)]


def missing_rollups(conn: psycopg.Connection, level: Level, spans: Sequence[Span]) -> list[Span]:
    """The spans of ``level`` missing a row (or holding one built with another interval)."""
    return _incomplete(conn, level, spans)


def ensure_rollups(conn: psycopg.Connection, plan: ReadPlan) -> int:
    """Build the rollup rows ``plan`` reads that are missing (a week or day invalidated by new
    results, hours never rolled up); return how many spans were rebuilt."""
    stale_weeks = _incomplete(conn, WEEKLY, plan.weeks)
    stale_days = _incomplete(conn, DAILY, [*plan.days, *stale_weeks])
    stale_hours = _incomplete(conn, HOURLY, [*plan.hours, *stale_days])
    # Services missing the same stretch are rebuilt together: one statement, not one per service.
    for (a, b), services in by_stretch(stale_hours).items():
        refresh_rollups(conn, services, a, b)
    for (a, b), services in by_stretch(stale_days).items():
        refresh_daily(conn, [name for name, _ in services], a, b)
    for (a, b), services in by_stretch(stale_weeks).items():
        refresh_weekly(conn, [name for name, _ in services], a, b)
    return len(stale_weeks) + len(stale_days) + len(stale_hours)


def by_stretch(spans: Sequence[Span]) -> dict[tuple[datetime, datetime], list[tuple[str, float]]]:
    """``(service, interval)`` of the spans, grouped by their ``(start, end)``, in time order."""
    grouped: dict[tuple[datetime, datetime], list[tuple[str, float]]] = {}
    for name, a, b, iv in sorted(spans, key=lambda span: (span[1], span[2], span[0])):
        grouped.setdefault((a, b), []).append((name, iv))
    return grouped


def read_figures(
    conn: psycopg.Connection,
    plan: ReadPlan,
    thresholds: dict[str, int],
    period_start: datetime,
    period_end: datetime,
    maintenance: Sequence[tuple[str, datetime, datetime]] = (),
    latency_conn: psycopg.Connection | None = None,
) -> dict[str, Figures]:
    """Up/down seconds, latency histogram and incidents per service, as ``plan`` says to read them.

    Stretches of months whose raw rows were dropped by retention are read from the hourly rollups and
    their incidents from the incident records; every service's :attr:`Figures.notes` then says so."""
    figures: dict[str, Figures] = {name: Figures() for name in thresholds}
    months = dropped_months(conn, period_start, period_end)
    plan = retire(plan, months)
    params: dict[str, object] = {
        **plan.params(),
        "tn": list(thresholds),
        "tt": list(thresholds.values()),
        "pstart": period_start,
        "pend": period_end,
        "mn": [m[0] for m in maintenance],
        "ma": [m[1] for m in maintenance],
        "mb": [m[2] for m in maintenance],
        "ra": [m[0] for m in months],
        "rb": [m[1] for m in months],
    }
    read_times(conn, figures, plan, params)
    if latency_conn is None:
        _read_latency(conn, figures, plan, params)
        _read_incidents(conn, figures, params)
    else:
        # The two heaviest reads at once, on two connections (two backends, two cores).
        with ThreadPoolExecutor(max_workers=1) as pool:
            latency = pool.submit(_read_latency, latency_conn, figures, plan, params)
            _read_incidents(conn, figures, params)
            latency.result()
    if months:
        note = retention_note(months)
        for figure in figures.values():
            figure.notes.append(note)
    return figures


def retention_note(months: Sequence[Month]) -> str:
    """What a report says when part of its period was read without raw rows.

    >>> retention_note([(datetime(2026, 8, 1, tzinfo=UTC), datetime(2026, 9, 1, tzinfo=UTC))])[:64]
    'raw probe results of 2026-08 were dropped by retention (store.ra'
    """
    names = ", ".join(f"{a:%Y-%m}" for a, _ in months)
    return (
        f"raw probe results of {names} were dropped by retention (store.raw_probe_retention): that time is read "
        "from the hourly rollups, so maintenance windows and period edges apply in whole hours only (a partial "
        "hour counts pro rata), and its incidents are those of the incident records"
    )


_RAW_SEGMENTS = f"""{RAW.spans_cte("pieces")},
    seg as (
        select x.service, x.a, x.b, r.t, r.ok, r.latency_ms,
               least(r.t + make_interval(secs => x.iv), r.nxt) as e
        from pieces x cross join lateral (
            select p.checked_at as t, p.ok, p.latency_ms,
                   lead(p.checked_at) over (order by p.checked_at) as nxt
            from opsflow.probe_results p
            where p.service = x.service and p.checked_at >= x.a - make_interval(secs => x.iv)
              and p.checked_at < x.b) r)"""  # noqa: S608


def up_down(conn: psycopg.Connection, names: Sequence[str], plan: ReadPlan) -> dict[str, Figures]:
    """Only the up and down seconds (burn rates)."""
    figures = {name: Figures() for name in names}
    plan = retire(plan, dropped_months(conn))
    read_times(conn, figures, plan, plan.params())
    return figures


def read_times(
    conn: psycopg.Connection, figures: dict[str, Figures], plan: ReadPlan, params: dict[str, object]
) -> None:
    """Up/down seconds: rollups for whole weeks, days and hours, raw rows for the rest."""
    for level, spans in plan.rollups():
        if not spans:
            continue
        for name, up, down in conn.execute(
            f"""with {level.spans_cte()}
                select x.service, sum(r.up_seconds), sum(r.down_seconds)
                from spans x cross join lateral (
                    select r.up_seconds, r.down_seconds from opsflow.{level.table} r
                    where r.service = x.service and r.{level.column} >= x.a and r.{level.column} < x.b) r
                group by 1""",  # noqa: S608
            params,
        ):
            figures[name].up += float(up or 0)
            figures[name].down += float(down or 0)
    if plan.pieces:
        for name, up, down in conn.execute(
            f"""with {_RAW_SEGMENTS}
                select service,
                       coalesce(sum(greatest(0, extract(epoch from least(e, b) - greatest(t, a))))
                                filter (where ok), 0),
                       coalesce(sum(greatest(0, extract(epoch from least(e, b) - greatest(t, a))))
                                filter (where not ok), 0)
                from seg group by 1""",  # noqa: S608
            params,
        ):
            figures[name].up += float(up)
            figures[name].down += float(down)
    if plan.retired:
        for name, up, down in conn.execute(
            f"""with {RETIRED.spans_cte()}
                select x.service, sum(r.up_seconds * w.share), sum(r.down_seconds * w.share)
                from {_RETIRED_HOURS.format(spans="spans")}
                group by 1""",  # noqa: S608
            params,
        ):
            figures[name].up += float(up or 0)
            figures[name].down += float(down or 0)


# The hours a retired stretch ``x`` touches (``r``), each with the share of it the stretch covers.
_RETIRED_HOURS = """{spans} x cross join lateral (
                    select r.hour, r.up_seconds, r.down_seconds, r.hist_buckets, r.hist_counts
                    from opsflow.probe_hourly r
                    where r.service = x.service and r.hour > x.a - interval '1 hour' and r.hour < x.b) r
                cross join lateral (select extract(epoch from least(r.hour + interval '1 hour', x.b)
                                                   - greatest(r.hour, x.a)) / 3600.0 as share) w"""


def _read_latency(
    conn: psycopg.Connection, figures: dict[str, Figures], plan: ReadPlan, params: dict[str, object]
) -> None:
    """Latency: the log-scale histograms of the rollups and the raw pieces' bucketed latencies, summed
    per service and bucket in one statement (the fewest rows back to Python).

    Each span reads its own rows through a lateral index scan (service, time): a join would let the
    planner hash whole rollup tables, and scan every raw partition, so a month's report would cost
    more the longer the history (``bench history-scale``)."""
    ctes: list[str] = []
    parts: list[str] = []
    for level, spans in plan.rollups():
        if spans:
            ctes.append(level.spans_cte(f"{level.column}_spans"))
            parts.append(
                f"""select x.service, u.b, u.c
                    from {level.column}_spans x cross join lateral (
                        select r.hist_buckets, r.hist_counts from opsflow.{level.table} r
                        where r.service = x.service and r.{level.column} >= x.a and r.{level.column} < x.b) r
                    cross join lateral unnest(r.hist_buckets, r.hist_counts) u(b, c)"""  # noqa: S608
            )
    if plan.pieces:
        ctes.append(RAW.spans_cte("pieces"))
        parts.append(
            """select x.service, opsflow.latency_bucket(p.latency_ms), 1
               from pieces x cross join lateral (
                   select p.latency_ms from opsflow.probe_results p
                   where p.service = x.service and p.checked_at >= x.a and p.checked_at < x.b
                     and p.ok and p.latency_ms is not null) p"""
        )
    if plan.retired:  # a retired partial hour adds its share of the hour's histogram (rounded per bucket)
        ctes.append(RETIRED.spans_cte("retired"))
        parts.append(
            f"""select x.service, u.b, round(u.c * w.share)::integer
                from {_RETIRED_HOURS.format(spans="retired")}
                cross join lateral unnest(r.hist_buckets, r.hist_counts) u(b, c)"""  # noqa: S608
        )
    if not parts:
        return
    union = "\n            union all\n".join(parts)
    for name, buckets, counts in conn.execute(
        f"""with {", ".join(ctes)},
            counted(service, b, c) as ({union}),
            summed as (select service, b, sum(c)::bigint as c from counted group by 1, 2)
            select service, array_agg(b), array_agg(c) from summed group by 1""",  # noqa: S608
        params,
    ):
        histogram = figures[name].histogram
        for bucket, count in zip(buckets, counts, strict=True):
            histogram[bucket] = histogram.get(bucket, 0) + count


def _read_incidents(conn: psycopg.Connection, figures: dict[str, Figures], params: dict[str, object]) -> None:
    # Incidents: only the failures are read (a partial index holds them); two consecutive failures
    # belong to one run unless a success outside maintenance lies between them (a gap in the data
    # does not break a run); a run of failure_threshold or more opens an incident at its first
    # failure, closed by the first success after its last one.
    # Deciding "a success lies between" without touching raw rows where possible: with no maintenance
    # window between two consecutive failures every result between them is a success, so an hour
    # lying wholly between them with a success (a small partial index on the hourly rollups) proves
    # one, and otherwise any row between them does (an index-only probe of the primary key).
    # Failures are inside the period, so every row read lies in it: saying so with the period's own
    # bounds lets PostgreSQL plan only its months' partitions, however long the history.
    for name, start, end in conn.execute(
        """with thr as (select * from unnest(%(tn)s::text[], %(tt)s::int[]) t(service, threshold)),
            maint as (select * from unnest(%(mn)s::text[], %(ma)s::timestamptz[], %(mb)s::timestamptz[])
                      m(service, a, b)),
            f as (
                select p.service, p.checked_at as t
                from thr join opsflow.probe_results p on p.service = thr.service
                where not p.ok and p.checked_at >= %(pstart)s and p.checked_at < %(pend)s
                  and not exists (select 1 from maint m
                                  where m.service = p.service and p.checked_at >= m.a and p.checked_at < m.b)),
            l as (select service, t, lag(t) over (partition by service order by t) as prev from f),
            b as (
                select service, t,
                       case
                           when prev is null then 1
                           when exists (select 1 from maint m
                                        where m.service = l.service and m.a < l.t and m.b > l.prev) then (
                               exists (select 1 from opsflow.probe_results q
                                       where q.service = l.service and q.ok and q.checked_at > l.prev
                                         and q.checked_at < l.t
                                         and q.checked_at >= %(pstart)s and q.checked_at < %(pend)s
                                         and not exists (select 1 from maint m where m.service = q.service
                                                         and q.checked_at >= m.a and q.checked_at < m.b)))::int
                           when exists (select 1 from opsflow.probe_hourly h
                                        where h.service = l.service and h.ok_count > 0
                                          and h.hour > l.prev and h.hour <= l.t - interval '1 hour') then 1
                           when exists (select 1 from opsflow.probe_results q
                                        where q.service = l.service and q.checked_at > l.prev
                                          and q.checked_at < l.t
                                          and q.checked_at >= %(pstart)s and q.checked_at < %(pend)s) then 1
                           else 0
                       end as brk
                from l),
            r as (select service, t, sum(brk) over (partition by service order by t) as run from b),
            runs as (select service, run, min(t) as start, max(t) as last, count(*) as failures
                     from r group by 1, 2)
            select runs.service, runs.start,
                   (select q.checked_at from opsflow.probe_results q
                    where q.service = runs.service and q.ok and q.checked_at > runs.last
                      and q.checked_at >= %(pstart)s and q.checked_at < %(pend)s
                      and not exists (select 1 from maint m where m.service = q.service
                                      and q.checked_at >= m.a and q.checked_at < m.b)
                    order by q.checked_at limit 1)
            from runs join thr using (service)
            where runs.failures >= thr.threshold
            order by 1, 2""",
        params,
    ):
        figures[name].incidents.append((start, end))
    if params.get("ra"):
        _add_recorded_incidents(conn, figures, params)


def _add_recorded_incidents(conn: psycopg.Connection, figures: dict[str, Figures], params: dict[str, object]) -> None:
    """Incidents opened in months whose raw rows were dropped (``ra``/``rb``), from the incident records
    (opened at the first failure of a run, closed by the next success: the same rule, applied live).
    One still open at the period's end ends there (None). A record still open when the raw rows resume
    is the incident computed from them at their start: the two are one."""
    recorded: dict[str, list[tuple[datetime, datetime | None]]] = {}
    for name, start, end in conn.execute(
        """select i.service, i.opened_at, case when i.closed_at < %(pend)s then i.closed_at end
           from unnest(%(ra)s::timestamptz[], %(rb)s::timestamptz[]) m(a, b)
           join opsflow.incidents i on i.opened_at >= m.a and i.opened_at < m.b
           where i.service = any(%(tn)s::text[]) and i.opened_at >= %(pstart)s and i.opened_at < %(pend)s
           order by 1, 2""",
        params,
    ):
        recorded.setdefault(name, []).append((start, end))
    for name, records in recorded.items():
        figures[name].incidents = merge_incidents(records, figures[name].incidents)


def merge_incidents(
    recorded: Sequence[tuple[datetime, datetime | None]], computed: Sequence[tuple[datetime, datetime | None]]
) -> list[tuple[datetime, datetime | None]]:
    """Recorded and computed incidents in time order; a computed one that starts while a recorded one
    is still open continues it (the recorded start, the computed end).

    >>> t = [datetime(2026, 9, 1, h, tzinfo=UTC) for h in range(4)]
    >>> merge_incidents([(t[0], None)], [(t[1], t[2])]) == [(t[0], t[2])]
    True
    """
    merged: list[tuple[datetime, datetime | None]] = []
    for start, end in sorted([*recorded, *computed], key=lambda incident: incident[0]):
        if merged and merged[-1][0] <= start and (merged[-1][1] is None or start < merged[-1][1]):
            merged[-1] = (merged[-1][0], end)
            continue
        merged.append((start, end))
    return merged


# -- stored reports ---------------------------------------------------------------------------


def save_report_revision(
    conn: psycopg.Connection,
    label: str,
    kind: str,
    start: datetime,
    end: datetime,
    as_of: datetime,
    flow_run_id: str | None,
    result_json: str,
) -> int:
    """Append the report as the next revision of its period (earlier revisions are kept)."""
    conn.execute("select pg_advisory_xact_lock(hashtext('opsflow.sla_reports'), hashtext(%s))", (label,))
    row = conn.execute(
        "select coalesce(max(revision), 0) + 1 from opsflow.sla_reports where period_label = %s", (label,)
    ).fetchone()
    revision = int(row[0]) if row else 1
    conn.execute(
        """insert into opsflow.sla_reports
               (period_label, period_kind, revision, period_start, period_end, as_of, flow_run_id, result)
           values (%s, %s, %s, %s, %s, %s, %s, %s::jsonb)""",
        (label, kind, revision, start, end, as_of, flow_run_id, result_json),
    )
    return revision


def report_revisions(conn: psycopg.Connection, label: str) -> list[tuple[int, datetime, str]]:
    """``(revision, as_of, result json)`` of every stored report of ``label``, oldest first."""
    return [
        (int(rev), as_of, result if isinstance(result, str) else __import__("json").dumps(result))
        for rev, as_of, result in conn.execute(
            "select revision, as_of, result from opsflow.sla_reports where period_label = %s order by revision",
            (label,),
        )
    ]
