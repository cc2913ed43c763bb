"""SQL for the SLA report (SPEC §6): hourly rollups and the per-service figures, all in PostgreSQL.

Coverage rule: a result at t covers ``[t, min(t + interval, next result))`` — when
probes come closer than their interval, a result covers until the next one, so no
second is counted twice.

The report asks for "spans" and "pieces" per service (see ``tasks/sla.py``):
whole UTC hours outside maintenance are read from ``opsflow.probe_hourly``,
everything else (partial hours at the period's edges, hours touching maintenance)
from raw rows with the same rule, so the sum equals the raw-row answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import psycopg

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


@dataclass
class Figures:
    """What the SQL returns for one service."""

    up: float = 0.0
    down: float = 0.0
    histogram: dict[int, int] = field(default_factory=dict)
    incidents: list[tuple[datetime, datetime | None]] = field(default_factory=list)


def _add_histogram(target: dict[int, int], bucket: int, count: int) -> None:
    target[bucket] = target.get(bucket, 0) + int(count)


_REFRESH = """
with svc as (select * from unnest(%(names)s::text[], %(ivs)s::float8[]) s(service, iv)),
rows as (
    select p.service, p.checked_at as t, p.ok, p.latency_ms,
           least(p.checked_at + make_interval(secs => s.iv),
                 lead(p.checked_at) over (partition by p.service order by p.checked_at)) as e
    from opsflow.probe_results p join svc s using (service)
    where p.checked_at >= %(h0)s::timestamptz - make_interval(secs => s.iv) and p.checked_at < %(h1)s
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
    conn.execute("select pg_advisory_xact_lock(hashtext('opsflow.probe_hourly'))")
    conn.execute(
        "delete from opsflow.probe_hourly where service = any(%s) and hour >= %s and hour < %s",
        ([s for s, _ in services], h0, h1),
    )
    conn.execute(
        _REFRESH,
        {"names": [s for s, _ in services], "ivs": [float(iv) for _, iv in services], "h0": h0, "h1": h1},
    )
    refresh_daily(conn, [s for s, _ in services], floor_day(h0), ceil_day(h1))


def floor_day(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def ceil_day(moment: datetime) -> datetime:
    floored = floor_day(moment)
    return floored if floored == moment else floored + DAY


def refresh_daily(conn: psycopg.Connection, names: Sequence[str], d0: datetime, d1: datetime) -> None:
    """Recompute the daily rollups of ``[d0, d1)`` (UTC days) from the hourly ones; a day whose hours
    were built with different intervals gets no row (the report reads its hours)."""
    conn.execute("select pg_advisory_xact_lock(hashtext('opsflow.probe_hourly'))")
    conn.execute(
        "delete from opsflow.probe_daily where service = any(%s) and day >= %s and day < %s", (list(names), d0, d1)
    )
    conn.execute(
        """with h as (
               select service, date_trunc('day', hour, 'UTC') as day, hour, interval_s, up_seconds, down_seconds,
                      hist_buckets, hist_counts
               from opsflow.probe_hourly where service = any(%(names)s) and hour >= %(d0)s and hour < %(d1)s),
           totals as (
               select service, day, min(interval_s) as interval_s, count(*) as hours,
                      sum(up_seconds) as up_seconds, sum(down_seconds) as down_seconds
               from h group by 1, 2 having min(interval_s) = max(interval_s)),
           buckets as (
               select service, day, array_agg(b order by b) as hist_buckets, array_agg(c order by b) as hist_counts
               from (select h.service, h.day, u.b, sum(u.c)::integer as c
                     from h cross join lateral unnest(h.hist_buckets, h.hist_counts) u(b, c) group by 1, 2, 3) x
               group by 1, 2)
           insert into opsflow.probe_daily
               (service, day, interval_s, hours, up_seconds, down_seconds, hist_buckets, hist_counts)
           select t.service, t.day, t.interval_s, t.hours, t.up_seconds, t.down_seconds,
                  coalesce(b.hist_buckets, '{}'), coalesce(b.hist_counts, '{}')
           from totals t left join buckets b using (service, day)""",
        {"names": list(names), "d0": d0, "d1": d1},
    )


def refresh_after_write(
    conn: psycopg.Connection, services: dict[str, float], checked: Sequence[tuple[str, datetime]]
) -> None:
    """Incremental fill after new results: the hours a result at t can change are those of
    ``[t - interval, t + interval)`` (it truncates the previous result's coverage and covers forward)."""
    by_service: dict[str, list[datetime]] = {}
    for name, at in checked:
        if name in services:
            by_service.setdefault(name, []).append(at)
    for name, times in by_service.items():
        iv = timedelta(seconds=services[name])
        refresh_rollups(conn, [(name, services[name])], min(times) - iv, max(times) + iv)


# -- the report's reads -----------------------------------------------------------------------


def _days_params(days: Sequence[tuple[str, datetime, datetime, float]]) -> dict[str, list[object]]:
    return {
        "dn": [s[0] for s in days],
        "da": [s[1] for s in days],
        "db": [s[2] for s in days],
        "div": [float(s[3]) for s in days],
    }


def _spans_params(spans: Sequence[tuple[str, datetime, datetime, float]]) -> dict[str, list[object]]:
    return {
        "sn": [s[0] for s in spans],
        "sa": [s[1] for s in spans],
        "sb": [s[2] for s in spans],
        "siv": [float(s[3]) for s in spans],
    }


_SPANS = (
    "spans as (select * from unnest(%(sn)s::text[], %(sa)s::timestamptz[], %(sb)s::timestamptz[],"
    " %(siv)s::float8[]) x(service, a, b, iv))"
)
_DAYS = (
    "spans as (select * from unnest(%(dn)s::text[], %(da)s::timestamptz[], %(db)s::timestamptz[],"
    " %(div)s::float8[]) x(service, a, b, iv))"
)
_PIECES = (
    "pieces as (select * from unnest(%(pn)s::text[], %(pa)s::timestamptz[], %(pb)s::timestamptz[],"
    " %(piv)s::float8[]) x(service, a, b, iv))"
)


def ensure_rollups(conn: psycopg.Connection, spans: Sequence[tuple[str, datetime, datetime, float]]) -> int:
    """Fill rollup hours the spans need that are missing or were built with another interval;
    return how many spans were refreshed."""
    if not spans:
        return 0
    rows = conn.execute(
        f"""with {_SPANS}
            select x.service, x.a, x.b, x.iv, count(h.hour) as have,
                   extract(epoch from x.b - x.a) / 3600 as want
            from spans x left join opsflow.probe_hourly h
              on h.service = x.service and h.hour >= x.a and h.hour < x.b and h.interval_s = x.iv
            group by 1, 2, 3, 4""",  # noqa: S608
        _spans_params(spans),
    ).fetchall()
    stale = [(name, a, b, iv) for name, a, b, iv, have, want in rows if have != round(float(want))]
    for name, a, b, iv in stale:
        refresh_rollups(conn, [(name, iv)], a, b)
    return len(stale)


def ensure_daily(conn: psycopg.Connection, days: Sequence[tuple[str, datetime, datetime, float]]) -> int:
    """Make sure every day of the day spans has a complete daily rollup (24 hours, same interval)."""
    if not days:
        return 0
    rows = conn.execute(
        f"""with {_SPANS}
            select x.service, x.a, x.b, x.iv, count(d.day) as have, extract(epoch from x.b - x.a) / 86400 as want
            from spans x left join opsflow.probe_daily d
              on d.service = x.service and d.day >= x.a and d.day < x.b and d.interval_s = x.iv and d.hours = 24
            group by 1, 2, 3, 4""",  # noqa: S608
        _spans_params(days),
    ).fetchall()
    stale = [(name, a, b, iv) for name, a, b, iv, have, want in rows if have != round(float(want))]
    for name, a, b, iv in stale:
        ensure_rollups(conn, [(name, a, b, iv)])
        refresh_daily(conn, [name], a, b)
    return len(stale)


def read_figures(
    conn: psycopg.Connection,
    spans: Sequence[tuple[str, datetime, datetime, float]],
    pieces: Sequence[tuple[str, datetime, datetime, float]],
    thresholds: dict[str, int],
    period_start: datetime,
    period_end: datetime,
    maintenance: Sequence[tuple[str, datetime, datetime]] = (),
    days: Sequence[tuple[str, datetime, datetime, float]] = (),
    latency_conn: psycopg.Connection | None = None,
) -> dict[str, Figures]:
    """Up/down seconds, latency histogram and incidents per service over rollup spans (whole hours)
    plus raw pieces (everything else outside maintenance)."""
    figures: dict[str, Figures] = {name: Figures() for name in thresholds}
    params: dict[str, object] = {
        **_spans_params(spans),
        **_days_params(days),
        "pn": [p[0] for p in pieces],
        "pa": [p[1] for p in pieces],
        "pb": [p[2] for p in pieces],
        "piv": [float(p[3]) for p in pieces],
        "tn": list(thresholds),
        "tt": list(thresholds.values()),
        "pstart": period_start,
        "pend": period_end,
        "mn": [m[0] for m in maintenance],
        "ma": [m[1] for m in maintenance],
        "mb": [m[2] for m in maintenance],
    }
    raw_rows = _raw_rows_cte()
    read_times(conn, figures, params, raw_rows, bool(pieces))
    if latency_conn is None:
        _read_latency(conn, figures, params, bool(pieces))
        _read_incidents(conn, figures, params)
        return figures
    # The two heaviest reads at once, on two connections (two backends, two cores).
    with ThreadPoolExecutor(max_workers=1) as pool:
        latency = pool.submit(_read_latency, latency_conn, figures, params, bool(pieces))
        _read_incidents(conn, figures, params)
        latency.result()
    return figures


def _raw_rows_cte() -> str:
    return f"""{_PIECES},
        seg as (
            select x.service, x.a, x.b, r.t, r.ok, r.latency_ms,
                   least(r.t + make_interval(secs => x.iv), r.nxt) as e
            from pieces x cross join lateral (
                select p.checked_at as t, p.ok, p.latency_ms,
                       lead(p.checked_at) over (order by p.checked_at) as nxt
                from opsflow.probe_results p
                where p.service = x.service and p.checked_at >= x.a - make_interval(secs => x.iv)
                  and p.checked_at < x.b) r)"""  # noqa: S608


def up_down(
    conn: psycopg.Connection,
    names: Sequence[str],
    spans: Sequence[tuple[str, datetime, datetime, float]],
    pieces: Sequence[tuple[str, datetime, datetime, float]],
    days: Sequence[tuple[str, datetime, datetime, float]] = (),
) -> dict[str, Figures]:
    """Only the up and down seconds (burn rates)."""
    figures = {name: Figures() for name in names}
    params: dict[str, object] = {
        **_spans_params(spans),
        **_days_params(days),
        "pn": [p[0] for p in pieces],
        "pa": [p[1] for p in pieces],
        "pb": [p[2] for p in pieces],
        "piv": [float(p[3]) for p in pieces],
    }
    read_times(conn, figures, params, _raw_rows_cte(), bool(pieces))
    return figures


def read_times(
    conn: psycopg.Connection, figures: dict[str, Figures], params: dict[str, object], raw_rows: str, has_pieces: bool
) -> None:
    """Up/down seconds: daily rollups for whole days, hourly ones for whole hours, raw rows for the rest."""
    for table, column, names in (("probe_hourly", "hour", _SPANS), ("probe_daily", "day", _DAYS)):
        for name, up, down in conn.execute(
            f"""with {names}
                select h.service, sum(h.up_seconds), sum(h.down_seconds)
                from spans x join opsflow.{table} h
                  on h.service = x.service and h.{column} >= x.a and h.{column} < x.b
                group by 1""",  # noqa: S608
            params,
        ):
            figures[name].up += float(up or 0)
            figures[name].down += float(down or 0)
    if has_pieces:
        for name, up, down in conn.execute(
            f"""with {raw_rows}
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


def _read_latency(
    conn: psycopg.Connection, figures: dict[str, Figures], params: dict[str, object], has_pieces: bool
) -> None:
    pieces = has_pieces
    # Latency: summed log-scale histograms.
    for table, column, names in (("probe_hourly", "hour", _SPANS), ("probe_daily", "day", _DAYS)):
        for name, bucket, count in conn.execute(
            f"""with {names}
                select h.service, u.b, sum(u.c)
                from spans x join opsflow.{table} h
                  on h.service = x.service and h.{column} >= x.a and h.{column} < x.b
                cross join lateral unnest(h.hist_buckets, h.hist_counts) u(b, c)
                group by 1, 2""",  # noqa: S608
            params,
        ):
            _add_histogram(figures[name].histogram, bucket, count)
    if pieces:
        for name, bucket, count in conn.execute(
            f"""with {_PIECES}
                select x.service, opsflow.latency_bucket(p.latency_ms), count(*)
                from pieces x join opsflow.probe_results p
                  on p.service = x.service and p.checked_at >= x.a and p.checked_at < x.b
                where p.ok and p.latency_ms is not null
                group by 1, 2""",  # noqa: S608
            params,
        ):
            _add_histogram(figures[name].histogram, bucket, count)


def _read_incidents(conn: psycopg.Connection, figures: dict[str, Figures], params: dict[str, object]) -> None:
    # Incidents: only the failures are read (a partial index holds them); two consecutive failures
    # belong to one run unless a success outside maintenance lies between them (an index probe,
    # usually empty: a gap in the data does not break a run); a run of failure_threshold or more
    # opens an incident at its first failure, closed by the first success after its last one.
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
                       case when prev is null or exists (
                           select 1 from opsflow.probe_results q
                           where q.service = l.service and q.ok and q.checked_at > l.prev and q.checked_at < l.t
                             and not exists (select 1 from maint m where m.service = q.service
                                             and q.checked_at >= m.a and q.checked_at < m.b))
                       then 1 else 0 end as brk
                from l),
            r as (select service, t, sum(brk) over (partition by service order by t) as run from b),
            runs as (select service, run, min(t) as start, max(t) as last, count(*) as failures
                     from r group by 1, 2)
            select runs.service, runs.start,
                   (select q.checked_at from opsflow.probe_results q
                    where q.service = runs.service and q.ok and q.checked_at > runs.last
                      and q.checked_at < %(pend)s
                      and not exists (select 1 from maint m where m.service = q.service
                                      and q.checked_at >= m.a and q.checked_at < m.b)
                    order by q.checked_at limit 1)
            from runs join thr using (service)
            where runs.failures >= thr.threshold
            order by 1, 2""",
        params,
    ):
        figures[name].incidents.append((start, end))


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
