"""The daily and weekly ops digest: gathered from the ops store and the schedules (SPEC §5 ``ops-digest``).

Everything comes from what the routines stored — runs by status, their latest results, incident
records, the backup ledger, drills, the expiry and capacity results — plus one thing no per-run
alert can see: the **dead schedule**. A routine with something to check in the config whose
schedule fired in the period (on the Prefect server when its deployments are registered there,
else in ``prefect.yaml``) but that recorded no run is the ``ran`` check's ``fail``.

The pure halves (:func:`routine_lines`, :func:`digest_items`, :func:`runway_lines` …) are tested
directly; the tasks read the store and the Prefect API under the one retry policy, and deliver the
rendered digest to Slack and email.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from opsflow.config import Config, DailyDigest
from opsflow.digest import (
    BudgetLine,
    Digest,
    DigestKind,
    DrillLine,
    ExpiringLine,
    IncidentLine,
    RoutineLine,
    RunwayLine,
    TrendLine,
)
from opsflow.results import Check, Item, RoutineResult, format_instant, worst
from opsflow.store import OpsStore
from tasks.periods import Period, day_period
from tasks.retry import IO_RETRIES

STATUSES = ("ok", "warn", "fail", "error")
#: A schedule that fired this close to the period's end may still be starting its run: not counted.
GRACE = timedelta(minutes=15)
#: The item that says a delivery of the digest did not land (checks ``email``, ``slack``).
DELIVERY_ITEM = "digest-delivery"


# -- what each routine has to check --------------------------------------------------------------


def configured_routines(config: Config) -> dict[str, bool]:
    """Whether each routine has something to check in ``config`` (SPEC §5: its section is not empty)."""
    https_services = any(str(s.url or "").startswith("https://") for s in config.services)
    return {
        "backup-verification": bool(config.backups),
        "uptime-probe": bool(config.services),
        "sla-report": bool(config.services),
        "capacity-collect": any(metric.source.type != "import" for metric in config.capacity),
        "capacity-trends": bool(config.capacity),
        "data-quality": bool(config.quality),
        "expiry-check": bool(config.expiry.certificates or config.expiry.items or https_services),
        "ops-digest": config.digests.daily is not None or config.digests.weekly is not None,
        "monthly-report": config.reports.monthly is not None,
        "dr-drill": bool(config.databases),
    }


# -- schedules: when each routine was due ---------------------------------------------------------


@dataclass(frozen=True)
class ScheduleSource:
    """A routine's schedules and since when they could fire (a deployment's creation, the store's)."""

    where: str  # "the Prefect server" or "prefect.yaml"
    schedules: tuple[Mapping[str, Any], ...]  # {cron|interval|rrule, timezone, anchor_date?}
    since: datetime | None


def fire_times(schedule: Mapping[str, Any], start: datetime, end: datetime, limit: int = 1) -> list[datetime]:
    """Up to ``limit`` instants in ``[start, end)`` at which ``schedule`` fires, as Prefect's scheduler
    computes them (its own schedule classes: cron with DST rules, intervals from their anchor)."""
    from prefect.server.schemas import schedules as server
    from prefect.utilities.asyncutils import run_coro_as_sync

    kind = server.CronSchedule if "cron" in schedule else server.IntervalSchedule
    if "rrule" in schedule:
        kind = server.RRuleSchedule  # type: ignore[assignment]
    fields = {key: value for key, value in schedule.items() if value is not None}
    built = kind.model_validate(fields)
    dates = run_coro_as_sync(built.get_dates(n=limit, start=start, end=end)) or []
    return [datetime.fromtimestamp(d.timestamp(), tz=UTC) for d in dates if d.timestamp() < end.timestamp()]


def ran_check(
    routine: str, configured: bool, runs: int, source: ScheduleSource | None, period: Period
) -> tuple[int, Check]:
    """``ran`` (SPEC §5): ``fail`` when ``routine`` has something to check, its schedule fired in the period
    (from the later of the period's start and the schedule's ``since``, up to :data:`GRACE` before the
    end) and it recorded no run in the period; ``ok`` otherwise. Returns the first fire found (0/1) too."""
    if not configured:
        return 0, Check(check="ran", status="ok", detail="nothing to check in the config")
    if source is None or not source.schedules:
        return 0, Check(check="ran", status="ok", detail="not scheduled")
    lower = max(period.start, source.since) if source.since else period.start
    upper = period.end - GRACE
    fired: list[datetime] = []
    if lower < upper:
        for schedule in source.schedules:
            fired = fire_times(schedule, lower, upper)
            if fired:
                break
    if not fired:
        return 0, Check(check="ran", status="ok", detail=f"not due in the period ({source.where})")
    if runs:
        return 1, Check(check="ran", status="ok", detail=f"{runs} run{'s' * (runs != 1)} recorded")
    detail = (
        f"scheduled ({source.where}) at {format_instant(fired[0])} and after, but no run recorded "
        f"in {period.label}: is its worker or serve process running?"
    )
    return 1, Check(check="ran", status="fail", detail=detail, observed=0, expected=">= 1 run")


@task(**IO_RETRIES, cache_policy=NO_CACHE, task_run_name="schedules[prefect server]")
def registered_schedules_task(flow_names: Sequence[str]) -> dict[str, ScheduleSource]:
    """The schedules of the deployments registered on the Prefect server, by flow name (active schedules
    of unpaused deployments; since each deployment was created)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    found: dict[str, list[tuple[Mapping[str, Any], datetime | None]]] = {}
    with get_client(sync_client=True) as client:
        flows = client.read_flows(flow_filter=FlowFilter(name=FlowFilterName(any_=list(flow_names))))
        names = {flow.id: flow.name for flow in flows}
        if not names:
            return {}
        for deployment in client.read_deployments(
            flow_filter=FlowFilter(name=FlowFilterName(any_=list(names.values())))
        ):
            name = names.get(deployment.flow_id)
            entries = found.setdefault(name, []) if name else []
            if deployment.paused:
                continue
            for scheduled in deployment.schedules:
                if scheduled.active:
                    entries.append((scheduled.schedule.model_dump(mode="json"), deployment.created))
    return {
        name: ScheduleSource(
            "the Prefect server",
            tuple(schedule for schedule, _ in entries),
            min((since for _, since in entries if since is not None), default=None),
        )
        for name, entries in found.items()
    }


def schedule_sources(
    registered: Mapping[str, ScheduleSource], in_yaml: Mapping[str, Sequence[Mapping[str, Any]]], store_since: Any
) -> dict[str, ScheduleSource]:
    """Each flow's schedules: the server's when its deployments are registered there, else prefect.yaml's
    (since the ops store was set up: nothing was due before opsflow was)."""
    sources = {name: ScheduleSource("prefect.yaml", tuple(found), store_since) for name, found in in_yaml.items()}
    sources.update(registered)
    return sources


# -- the digest's parts, pure ------------------------------------------------------------------


def failing_of(result: RoutineResult) -> list[str]:
    """``ITEM: CHECK`` of every failing (fail/error) check of ``result``."""
    return [f"{item.name}: {c.check}" for item in result.items for c in item.checks if c.status in ("fail", "error")]


def routine_lines(
    routines: Sequence[str],
    configured: Mapping[str, bool],
    counts: Mapping[str, Mapping[str, int]],
    latest: Mapping[str, RoutineResult],
    sources: Mapping[str, ScheduleSource],
    period: Period,
) -> list[RoutineLine]:
    lines = []
    for routine in routines:
        runs = {status: int(counts.get(routine, {}).get(status, 0)) for status in STATUSES}
        last = latest.get(routine)
        fired, ran = ran_check(
            routine, configured.get(routine, False), sum(runs.values()), sources.get(routine), period
        )
        lines.append(
            RoutineLine(
                routine=routine,
                configured=configured.get(routine, False),
                runs=runs,
                last_status=last.status if last else None,
                last_run_at=last.as_of if last else None,
                last_flow_run_id=last.flow_run_id if last else None,
                failing=failing_of(last) if last else [],
                fired=fired,
                ran=ran.status,  # type: ignore[arg-type]
                ran_detail=ran.detail,
            )
        )
    return lines


def drill_lines(drills: Sequence[tuple[str, RoutineResult]]) -> list[DrillLine]:
    lines = []
    for scope, result in drills:
        for item in result.items:
            m = item.metrics
            lines.append(
                DrillLine(
                    database=item.name or scope,
                    at=result.as_of,
                    status=item.status,
                    rto_seconds=m.get("rto_seconds"),
                    rpo_seconds=m.get("rpo_seconds"),
                    rto_target_seconds=m.get("rto_target_seconds"),
                    rpo_target_seconds=m.get("rpo_target_seconds"),
                    flow_run_id=result.flow_run_id,
                )
            )
    return lines


def expiring_lines(result: RoutineResult | None) -> list[ExpiringLine]:
    """What the latest expiry check found within ``warn_within`` (or could not read), soonest first."""
    if result is None:
        return []
    lines = []
    for item in result.items:
        if item.status == "ok":
            continue
        expires = item.metrics.get("expires_at")
        detail = "; ".join(c.detail for c in item.checks if c.status != "ok")
        lines.append(
            ExpiringLine(
                name=item.name,
                source=str(item.metrics.get("source") or ""),
                expires_at=datetime.fromisoformat(expires) if isinstance(expires, str) else expires,
                days_left=item.metrics.get("days_left"),
                status=item.status,
                detail=detail,
            )
        )
    far = float("inf")
    return sorted(lines, key=lambda line: (line.days_left if line.days_left is not None else far, line.name))


def runway_lines(now: RoutineResult | None, before: RoutineResult | None) -> list[RunwayLine]:
    """Capacity metrics whose days to threshold shortened from ``before`` to ``now`` (or started crossing
    within the year), by the forecasts stored; soonest first."""
    if now is None:
        return []
    earlier = {item.name: item.metrics.get("days_to_threshold") for item in before.items} if before else {}
    lines = []
    for item in now.items:
        days = item.metrics.get("days_to_threshold")
        if days is None or item.name not in earlier:
            continue
        previous = earlier[item.name]
        if previous is None or days < previous:
            lines.append(RunwayLine(item.name, days, previous, item.metrics.get("crossing_date"), item.status))
    return sorted(lines, key=lambda line: (line.days_to_threshold, line.metric))


def incident_lines(records: Sequence[Any], period: Period) -> tuple[list[IncidentLine], int, int, int]:
    """The incidents overlapping the period and how many opened, closed and are open at its end."""
    lines = [IncidentLine(r.id, r.service, r.start, r.end, float(r.seconds or 0)) for r in records]
    opened = sum(period.start <= line.start < period.end for line in lines)
    closed = sum(line.end is not None and period.start <= line.end < period.end for line in lines)
    open_now = sum(line.end is None or line.end >= period.end for line in lines)
    return lines, opened, closed, open_now


def budget_lines(month: Mapping[str, Mapping[str, Any]]) -> list[BudgetLine]:
    """Each service's error budget over the month so far, the most spent first."""
    lines = [
        BudgetLine(name, m.get("availability_pct"), m.get("slo_availability_pct"), m.get("error_budget_remaining_pct"))
        for name, m in month.items()
    ]
    return sorted(lines, key=lambda line: (line.error_budget_remaining_pct is None, line.error_budget_remaining_pct))


def trend_lines(week: Mapping[str, Mapping[str, Any]], before: Mapping[str, Mapping[str, Any]]) -> list[TrendLine]:
    return [
        TrendLine(
            name,
            m.get("availability_pct"),
            before.get(name, {}).get("availability_pct"),
            m.get("latency_p95_ms"),
            before.get(name, {}).get("latency_p95_ms"),
        )
        for name, m in week.items()
    ]


def month_to_date(period: Period, zone: Any) -> Period:
    """From the local month's first midnight (of the period's last instant) to the period's end."""
    last_day = (period.end - timedelta(microseconds=1)).astimezone(zone).date()
    start = day_period(last_day.replace(day=1), zone).start
    return Period("range", f"{last_day.replace(day=1).isoformat()}..{last_day.isoformat()}", start, period.end)


def digest_kind(period: Period) -> DigestKind:
    return period.kind if period.kind in ("day", "week") else "custom"  # type: ignore[return-value]


# -- the digest as items -----------------------------------------------------------------------


def routine_item(line: RoutineLine, metrics: Mapping[str, Any]) -> Item:
    if line.last_status is None:
        latest = Check(check="latest", status="ok", detail="no run recorded")
    else:
        failing = f": {'; '.join(line.failing[:5])}" if line.failing else ""
        more = f" and {len(line.failing) - 5} more" if len(line.failing) > 5 else ""
        detail = f"{line.last_status} at {format_instant(line.last_run_at)}{failing}{more}"  # type: ignore[arg-type]
        latest = Check(check="latest", status=line.last_status, detail=detail)  # type: ignore[arg-type]
    ran = Check(check="ran", status=line.ran, detail=line.ran_detail)
    return Item(
        name=line.routine,
        checks=[latest, ran],
        metrics={
            "runs": line.total_runs,
            **line.runs,
            "last_status": line.last_status,
            "last_run_at": format_instant(line.last_run_at) if line.last_run_at else None,
            "failing": line.failing,
            **metrics,
        },
    )


def digest_items(digest: Digest, warn_within_days: float) -> list[Item]:
    """One item per routine (checks ``latest``, ``ran``), then ``incidents`` and ``expiring`` (SPEC §5)."""
    extra: dict[str, dict[str, Any]] = {
        "backup-verification": {"objects_verified": digest.backups_verified},
        "dr-drill": {"drills": [_plain(line) for line in digest.drills]},
        "capacity-trends": {"runway_shortened": [_plain(line) for line in digest.runway]},
        "sla-report": {"error_budget": [_plain(line) for line in digest.budget], "budget_period": digest.budget_label},
    }
    items = [routine_item(line, extra.get(line.routine, {})) for line in digest.routines]
    open_lines = [line for line in digest.incidents if line.end is None or line.end >= digest.end]
    if open_lines:
        named = ", ".join(f"{line.service} since {format_instant(line.start)}" for line in open_lines[:5])
        incidents = Check(check="open", status="warn", detail=f"{len(open_lines)} open: {named}")
    else:
        incidents = Check(check="open", status="ok", detail="no open incident")
    items.append(
        Item(
            name="incidents",
            checks=[incidents],
            metrics={
                "opened": digest.opened,
                "closed": digest.closed,
                "open_now": digest.open_now,
                "incidents": [
                    {
                        "service": line.service,
                        "start": format_instant(line.start),
                        "end": format_instant(line.end) if line.end else None,
                        "seconds": line.seconds,
                    }
                    for line in digest.incidents
                ],
            },
        )
    )
    statuses = [line.status for line in digest.expiring]
    soonest = ", ".join(f"{line.name} ({_days(line.days_left)})" for line in digest.expiring[:5])
    expiring = Check(
        check="expiry",
        status=worst(statuses) if statuses else "ok",
        detail=f"{len(statuses)} within {warn_within_days:g} days: {soonest}" if statuses else "nothing expires soon",
    )
    items.append(
        Item(name="expiring", checks=[expiring], metrics={"items": [_plain(line) for line in digest.expiring]})
    )
    return items


def _days(days_left: float | None) -> str:
    if days_left is None:
        return "unknown"
    return f"expired {abs(days_left):g} days ago" if days_left < 0 else f"{days_left:g} days left"


def _plain(line: Any) -> dict[str, Any]:
    """A digest line as JSON-ready metrics (instants in ISO 8601 UTC)."""
    return {key: format_instant(value) if isinstance(value, datetime) else value for key, value in vars(line).items()}


# -- gathering: the store's reads, one task --------------------------------------------------------


@dataclass(frozen=True)
class Stored:
    """What the digest reads from the ops store for one period."""

    counts: dict[str, dict[str, int]]
    latest: dict[str, RoutineResult]
    incidents: list[Any]
    backups_verified: int
    drills: list[tuple[str, RoutineResult]]
    expiry: RoutineResult | None
    capacity_now: RoutineResult | None
    capacity_before: RoutineResult | None
    store_since: datetime | None


def read_stored(store: OpsStore, routines: Sequence[str], period: Period, now: datetime) -> Stored:
    from opsflow.incident_store import list_incidents

    latest = store.latest_results(routines, end=period.end)
    before = store.latest_results(["capacity-trends"], end=period.start)
    return Stored(
        counts=store.run_counts(period.start, period.end),
        latest=latest,
        incidents=list_incidents(store, start=period.start, end=period.end, now=min(now, period.end)),
        backups_verified=store.count_verifications(period.start, period.end),
        drills=store.results_between("dr-drill", period.start, period.end),
        expiry=latest.get("expiry-check"),
        capacity_now=latest.get("capacity-trends"),
        capacity_before=before.get("capacity-trends"),
        store_since=store.created_at(),
    )


@task(**IO_RETRIES, cache_policy=NO_CACHE, task_run_name="read[ops store]")
def read_stored_task(store: OpsStore, routines: Sequence[str], period: Period, now: datetime) -> Stored:
    return read_stored(store, routines, period, now)


# -- delivery --------------------------------------------------------------------------------------


def destination(config: Config, period: Period) -> DailyDigest | None:
    """Where this period's digest goes: ``digests.weekly`` for a week, else ``digests.daily``."""
    return config.digests.weekly if period.kind == "week" else config.digests.daily


@task(**IO_RETRIES, cache_policy=NO_CACHE, task_run_name="deliver[email:{subject}]")
def email_task(config: Config, to: Sequence[str], subject: str, html: str, text: str) -> None:
    """The digest as one email (HTML with a plain-text alternative) to ``to``."""
    from opsflow.errors import UsageError
    from tasks.notify import compose_email, send_message

    settings = config.notifications.email
    if settings is None:
        raise UsageError("email: not configured (notifications.email)")
    send_message(settings, compose_email(settings.sender, to, subject, text, html=html))


@task(**IO_RETRIES, cache_policy=NO_CACHE, task_run_name="deliver[slack:digest]")
def slack_task(config: Config, payload: dict[str, Any]) -> None:
    """The digest as one Slack message through the configured webhook."""
    from opsflow.config import resolve_secret
    from opsflow.errors import UsageError
    from tasks.notify import post_json

    slack = config.notifications.slack
    if slack is None:
        raise UsageError("slack: not configured (notifications.slack)")
    post_json("slack", resolve_secret(slack.webhook_url) or "", payload)


def deliver(
    config: Config, period: Period, digest: Digest, render: Callable[[Digest], tuple[str, str, str, dict[str, Any]]]
) -> tuple[list[str], list[Check]]:
    """Send the digest where ``digests`` says (``render``: subject, html, text, Slack payload); returns
    what was delivered and a failing check per channel that was not."""
    target = destination(config, period)
    if target is None:
        return [], []
    subject, html, text, slack = render(digest)
    sent: list[str] = []
    problems: list[Check] = []
    attempts = []
    if target.to:
        attempts.append(("email", email_task.submit(config, list(target.to), subject, html, text)))
    if target.slack:
        attempts.append(("slack", slack_task.submit(config, slack)))
    from tasks.routine import settle

    for channel, future in attempts:
        _, error = settle(future)
        if error is None:
            sent.append(channel)
        else:
            from opsflow.redact import first_line

            problems.append(Check(check=channel, status="error", detail=f"digest not delivered: {first_line(error)}"))
    return sent, problems
