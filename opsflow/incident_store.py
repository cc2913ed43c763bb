"""Incident records and escalations in the ops store: SQL reads and the escalation ledger.

An **incident** is a service's run of failures (SPEC §6): ``opsflow.incidents``, opened at the first
of ``failure_threshold`` consecutive failures and closed at the next success. Around it the store
holds the alerts of the ``uptime-probe`` routine for that service (``opsflow.alert_deliveries``,
item = the service: uptime alerts follow the ``incident`` check) and the escalation tiers told of
the alert episode (``opsflow.escalations``).

**Matching alerts and escalations to an incident.** An alert delivery carries its run's ``as_of``,
which is the run's start — or an explicit ``--as-of`` up to 5 minutes away from the clock — while an
incident's instants are the probes' own ``checked_at``. So they are matched by the instants the
clock recorded instead: a delivery's ``recorded_at`` (stored after the delivery, so after the
probes of its run) and an escalation's ``created_at`` (the clock of the run that first claimed it):

- a trigger, a page or an escalation belongs to the incident of that service most recently opened
  at or before its instant (:data:`CLOCK_SKEW` allowed between the database's and the worker's
  clocks), provided that incident was still open then or had closed at most :data:`LATE_DELIVERY`
  before (a run whose deliveries were still retrying when the next run closed it);
- a resolve belongs to the incident most recently closed at or before its instant, at most
  :data:`LATE_DELIVERY` before.

Runs of one routine follow each other, so a delivery is never ascribed to the next incident; a
warn or clear (certificate, burn-rate ticket) is not part of an incident.

Reading them (a real store: not a doctest)::

    records = list_incidents(store, service="api", open_only=True)   # [IncidentRecord(id=7, ...)]
    record, events = incident_timeline(store, records[0].id)          # events: opened, alert, ...
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from psycopg.rows import dict_row

from opsflow.redact import redact
from opsflow.results import format_instant
from opsflow.store import OpsStore
from opsflow.units import format_duration

#: The routine whose alerts follow incidents (its items are the services).
INCIDENT_ROUTINE = "uptime-probe"
#: Allowed difference between the database's clock (``recorded_at``) and the worker's (``checked_at``).
CLOCK_SKEW = timedelta(seconds=30)
#: How long after the incident's close a delivery may still be recorded (retries, a slow run).
LATE_DELIVERY = timedelta(minutes=5)
#: A claimed escalation whose run has not recorded it after this long is free for the next run.
STALE_CLAIM = timedelta(minutes=10)
#: At most this many failing probe results are quoted in the ``opened`` event.
OPENED_RESULTS_SHOWN = 5

EventKind = Literal["opened", "alert", "escalated", "resolved"]


@dataclass(frozen=True)
class IncidentRecord:
    """One incident: ``end`` is None while it is open, and ``seconds`` then runs to ``now``."""

    id: int
    service: str
    start: datetime
    end: datetime | None
    seconds: float
    alerts: int  # alert deliveries of its episode that landed
    escalations: int  # escalation tiers told of it (delivered)

    @property
    def open(self) -> bool:
        return self.end is None

    def to_json(self) -> dict[str, Any]:
        """SPEC §5's fields, times ISO 8601 UTC with Z."""
        return {
            "id": self.id,
            "service": self.service,
            "start": format_instant(self.start),
            "end": None if self.end is None else format_instant(self.end),
            "seconds": round(self.seconds, 3),
            "alerts": self.alerts,
            "escalations": self.escalations,
        }


@dataclass(frozen=True)
class TimelineEvent:
    at: datetime
    event: EventKind
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"at": format_instant(self.at), "event": self.event, "detail": self.detail}


@dataclass
class _Incident:
    id: int
    service: str
    opened_at: datetime
    closed_at: datetime | None
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    escalations: list[dict[str, Any]] = field(default_factory=list)


# -- reads ------------------------------------------------------------------------------------


def list_incidents(
    store: OpsStore,
    service: str | None = None,
    open_only: bool = False,
    start: datetime | None = None,
    end: datetime | None = None,
    now: datetime | None = None,
) -> list[IncidentRecord]:
    """Incidents (of ``service``, only open ones with ``open_only``) overlapping ``[start, end)``,
    oldest first, with the alerts and escalations of each."""
    now = now or datetime.now(UTC)
    with store.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            """select id, service, opened_at, closed_at from opsflow.incidents
               where (%(service)s::text is null or service = %(service)s)
                 and (not %(open_only)s or closed_at is null)
                 and (%(end)s::timestamptz is null or opened_at < %(end)s)
                 and (%(start)s::timestamptz is null or closed_at is null or closed_at > %(start)s)
               order by opened_at, id""",
            {"service": service, "open_only": open_only, "start": start, "end": end},
        ).fetchall()
        incidents = [_Incident(r["id"], r["service"], r["opened_at"], r["closed_at"]) for r in rows]
        _attach(cur, incidents)
    return [_record(incident, now) for incident in incidents]


def incident_timeline(
    store: OpsStore, id: int, now: datetime | None = None
) -> tuple[IncidentRecord, list[TimelineEvent]] | None:
    """One incident and its timeline (opened, each alert, each escalation, resolved) in time order;
    None when there is no incident ``id``."""
    now = now or datetime.now(UTC)
    with store.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "select id, service, opened_at, closed_at from opsflow.incidents where id = %s", (id,)
        ).fetchone()
        if row is None:
            return None
        incident = _Incident(row["id"], row["service"], row["opened_at"], row["closed_at"])
        # Its neighbours too, so that a delivery near the boundary goes to the right one.
        neighbours = cur.execute(
            """select id, service, opened_at, closed_at from opsflow.incidents
               where service = %(service)s and id <> %(id)s
                 and opened_at < coalesce(%(closed_at)s, 'infinity'::timestamptz) + %(late)s
                 and coalesce(closed_at, 'infinity'::timestamptz) > %(opened_at)s - %(late)s""",
            {**row, "late": LATE_DELIVERY},
        ).fetchall()
        _attach(
            cur, [incident, *(_Incident(r["id"], r["service"], r["opened_at"], r["closed_at"]) for r in neighbours)]
        )
        failures = cur.execute(
            """select checked_at, error, status_code from opsflow.probe_results
               where service = %s and checked_at >= %s and checked_at < coalesce(%s, 'infinity'::timestamptz)
                 and not ok order by checked_at limit %s""",
            (incident.service, incident.opened_at, incident.closed_at, 50),
        ).fetchall()
        recovery = None
        if incident.closed_at is not None:
            recovery = cur.execute(
                """select latency_ms, status_code from opsflow.probe_results
                   where service = %s and checked_at = %s""",
                (incident.service, incident.closed_at),
            ).fetchone()
    return _record(incident, now), _timeline(incident, failures, recovery)


# -- matching ---------------------------------------------------------------------------------


def _attach(cur: Any, incidents: Sequence[_Incident]) -> None:
    """Read the deliveries and escalations around ``incidents`` and give each to its incident."""
    if not incidents:
        return
    services = sorted({i.service for i in incidents})
    low = min(i.opened_at for i in incidents) - CLOCK_SKEW
    closed = [i.closed_at for i in incidents]
    high = None if any(c is None for c in closed) else max(c for c in closed if c is not None) + LATE_DELIVERY
    window = {"routine": INCIDENT_ROUTINE, "services": services, "low": low, "high": high}
    deliveries = cur.execute(
        """select item, kind, channel, delivered, error, as_of, recorded_at from opsflow.alert_deliveries
           where routine = %(routine)s and item = any(%(services)s) and kind in ('trigger', 'page', 'resolve')
             and recorded_at >= %(low)s and (%(high)s::timestamptz is null or recorded_at <= %(high)s)
           order by recorded_at, id""",
        window,
    ).fetchall()
    escalations = cur.execute(
        """select item, opened_at, tier, after_seconds, recipients, mention, created_at, attempts, sent,
                  delivered, at, error, resolve_sent, resolve_told_at, resolve_error
           from opsflow.escalations
           where routine = %(routine)s and item = any(%(services)s)
             and created_at >= %(low)s and (%(high)s::timestamptz is null or created_at <= %(high)s)
           order by created_at, tier""",
        window,
    ).fetchall()
    by_service: dict[str, _Service] = {}
    for incident in sorted(incidents, key=lambda i: i.opened_at):
        by_service.setdefault(incident.service, _Service()).add(incident)
    for delivery in deliveries:
        service = by_service.get(delivery["item"])
        owner = service.owner(delivery["recorded_at"], delivery["kind"] == "resolve") if service else None
        if owner is not None:
            owner.deliveries.append(delivery)
    for escalation in escalations:
        service = by_service.get(escalation["item"])
        owner = service.owner(escalation["created_at"], False) if service else None
        if owner is not None:
            owner.escalations.append(escalation)


@dataclass
class _Service:
    """One service's incidents, by start and by end, for :meth:`owner`."""

    opened: list[_Incident] = field(default_factory=list)
    opened_at: list[datetime] = field(default_factory=list)
    closed: list[_Incident] = field(default_factory=list)
    closed_at: list[datetime] = field(default_factory=list)

    def add(self, incident: _Incident) -> None:  # in order of opened_at
        self.opened.append(incident)
        self.opened_at.append(incident.opened_at)

    def owner(self, at: datetime, resolve: bool) -> _Incident | None:
        """The incident a delivery recorded ``at`` belongs to (see the module doc)."""
        if resolve:
            if not self.closed_at:  # once, after every incident was added
                self.closed = sorted((i for i in self.opened if i.closed_at is not None), key=lambda i: i.closed_at)
                self.closed_at = [i.closed_at for i in self.closed if i.closed_at is not None]
            index = bisect_right(self.closed_at, at + CLOCK_SKEW) - 1
            last = self.closed[index] if index >= 0 else None
            if last is not None and last.closed_at is not None and at <= last.closed_at + LATE_DELIVERY:
                return last
            return None
        index = bisect_right(self.opened_at, at + CLOCK_SKEW) - 1
        if index < 0:
            return None
        last = self.opened[index]
        if last.closed_at is None or at <= last.closed_at + LATE_DELIVERY:
            return last
        return None


def _record(incident: _Incident, now: datetime) -> IncidentRecord:
    end = incident.closed_at
    return IncidentRecord(
        id=int(incident.id),
        service=incident.service,
        start=incident.opened_at,
        end=end,
        seconds=max(0.0, ((end or now) - incident.opened_at).total_seconds()),
        alerts=sum(1 for d in incident.deliveries if d["delivered"]),
        escalations=len({(e["opened_at"], e["tier"]) for e in incident.escalations if e["delivered"]}),
    )


# -- the timeline -----------------------------------------------------------------------------


def _clock(moment: datetime) -> str:
    """``06:01:02Z``: the time of day in UTC, to the second."""
    return moment.astimezone(UTC).strftime("%H:%M:%SZ")


def _probe_answer(status_code: int | None, error: str | None) -> str:
    if error:
        return " ".join(redact(error).split())[:120]
    return f"HTTP {status_code}" if status_code else "failed"


def _who(recipients: Iterable[str], mention: str | None) -> str:
    names = [*recipients, *([mention] if mention else [])]
    return ", ".join(names) or "no one"


def _outcome(delivered: bool, error: str | None) -> str:
    return "delivered" if delivered else f"not delivered: {redact(error or 'unknown error')}"


def _timeline(
    incident: _Incident, failures: Sequence[Mapping[str, Any]], recovery: Mapping[str, Any] | None
) -> list[TimelineEvent]:
    events: list[tuple[datetime, int, TimelineEvent]] = []

    def add(at: datetime, rank: int, kind: EventKind, detail: str) -> None:
        events.append((at, rank, TimelineEvent(at, kind, detail)))

    # The failures that opened it: those up to the first trigger (when it was found), else the first few.
    triggers = [d["recorded_at"] for d in incident.deliveries if d["kind"] == "trigger"]
    opening = [f for f in failures if not triggers or f["checked_at"] <= min(triggers)] or list(failures[:3])
    shown = "; ".join(
        f"{_probe_answer(f['status_code'], f['error'])} at {_clock(f['checked_at'])}"
        for f in opening[:OPENED_RESULTS_SHOWN]
    )
    more = f"; … {len(opening) - OPENED_RESULTS_SHOWN} more" if len(opening) > OPENED_RESULTS_SHOWN else ""
    count = len(opening)
    head = f"{count} consecutive failure{'' if count == 1 else 's'}" if count else "consecutive failures"
    add(incident.opened_at, 0, "opened", f"{head}: {shown}{more}" if shown else head)
    for d in incident.deliveries:
        add(d["recorded_at"], 1, "alert", f"{d['kind']} via {d['channel']}: {_outcome(d['delivered'], d['error'])}")
    for e in incident.escalations:
        who = _who(e["recipients"], e["mention"])
        after = format_duration(float(e["after_seconds"]))
        tries = f" ({e['attempts']} attempts)" if e["attempts"] > 1 else ""
        at = e["at"] or e["created_at"]
        add(
            at,
            2,
            "escalated",
            f"tier {e['tier']} (after {after}) to {who}: {_outcome(e['delivered'], e['error'])}{tries}",
        )
        if e["resolve_told_at"] is not None or e["resolve_error"]:
            told = e["resolve_told_at"] is not None
            add(
                e["resolve_told_at"] or at,
                4,
                "alert",
                f"resolve to escalation tier {e['tier']} ({who}): {_outcome(told, e['resolve_error'])}",
            )
    if incident.closed_at is not None:
        if recovery is None:
            detail = "probe succeeded"
        elif recovery["status_code"]:
            detail = f"HTTP {recovery['status_code']} in {recovery['latency_ms']:.0f} ms"
        else:
            detail = f"connected in {recovery['latency_ms']:.0f} ms" if recovery["latency_ms"] is not None else "up"
        add(incident.closed_at, 3, "resolved", detail)
    events.sort(key=lambda e: (e[0], e[1]))
    return [event for _, _, event in events]


# -- the escalation ledger (written by tasks.escalation) ----------------------------------------


_ESCALATION_COLUMNS = """routine, item, opened_at, tier, after_seconds, recipients, mention, created_at, as_of,
    attempts, sent, delivered, at, error, resolve_sent, resolve_told_at, resolve_error"""


def escalation_rows(
    store: OpsStore, routine: str, items: Sequence[str], open_episodes: Mapping[str, datetime]
) -> list[dict[str, Any]]:
    """The escalations of ``routine``'s ``items`` a run needs: every tier of each item's open episode
    (``open_episodes``: item → opened_at), and the delivered tiers not yet told of their resolve."""
    with store.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            f"""select {_ESCALATION_COLUMNS} from opsflow.escalations
                where routine = %(routine)s and item = any(%(items)s)
                  and ((delivered and resolve_told_at is null)
                       or (item, opened_at) in (
                           select * from unnest(%(open_items)s::text[], %(open_at)s::timestamptz[])))
                order by item, opened_at, tier""",  # noqa: S608 - fixed text
            {
                "routine": routine,
                "items": list(items),
                "open_items": list(open_episodes),
                "open_at": list(open_episodes.values()),
            },
        ).fetchall()


def claim_escalation(store: OpsStore, row: Mapping[str, Any], now: datetime) -> dict[str, Any] | None:
    """Claim one tier of one episode for delivery: a new row, or one whose delivery did not land (and
    that no live run is delivering). Returns the claimed row (``sent``: channels already done), or None
    when it is delivered or another run holds it. ``row``: ``routine, item, opened_at, tier,
    after_seconds, recipients, mention, as_of, flow_run_id``."""
    params = {**row, "now": now, "stale": now - STALE_CLAIM}
    with store.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        claimed = cur.execute(
            f"""insert into opsflow.escalations (routine, item, opened_at, tier, after_seconds, recipients, mention,
                    created_at, as_of, flow_run_id, claimed_at)
                values (%(routine)s, %(item)s, %(opened_at)s, %(tier)s, %(after_seconds)s, %(recipients)s,
                        %(mention)s, %(now)s, %(as_of)s, %(flow_run_id)s, %(now)s)
                on conflict do nothing returning {_ESCALATION_COLUMNS}""",  # noqa: S608 - fixed text
            params,
        ).fetchone()
        if claimed is None:
            claimed = cur.execute(
                f"""update opsflow.escalations set claimed_at = %(now)s
                    where routine = %(routine)s and item = %(item)s and opened_at = %(opened_at)s and tier = %(tier)s
                      and not delivered and (claimed_at is null or claimed_at < %(stale)s)
                    returning {_ESCALATION_COLUMNS}""",  # noqa: S608 - fixed text
                params,
            ).fetchone()
    return claimed


def record_escalation(
    store: OpsStore, key: Mapping[str, Any], sent: Sequence[str], delivered: bool, error: str | None, now: datetime
) -> None:
    """Store a claimed delivery's outcome and release the claim."""
    with store.connection() as conn:
        conn.execute(
            """update opsflow.escalations set claimed_at = null, attempts = attempts + 1, sent = %(sent)s,
                   delivered = %(delivered)s, error = %(error)s, at = case when %(delivered)s then %(now)s end
               where routine = %(routine)s and item = %(item)s and opened_at = %(opened_at)s and tier = %(tier)s""",
            {**key, "sent": list(sent), "delivered": delivered, "error": error, "now": now},
        )


def claim_resolve_notice(store: OpsStore, key: Mapping[str, Any], now: datetime) -> dict[str, Any] | None:
    """Claim telling a delivered tier of its episode's resolve; None when told already or held."""
    with store.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            f"""update opsflow.escalations set resolve_claimed_at = %(now)s
                where routine = %(routine)s and item = %(item)s and opened_at = %(opened_at)s and tier = %(tier)s
                  and delivered and resolve_told_at is null
                  and (resolve_claimed_at is null or resolve_claimed_at < %(stale)s)
                returning {_ESCALATION_COLUMNS}""",  # noqa: S608 - fixed text
            {**key, "now": now, "stale": now - STALE_CLAIM},
        ).fetchone()


def record_resolve_notice(
    store: OpsStore, key: Mapping[str, Any], sent: Sequence[str], told: bool, error: str | None, now: datetime
) -> None:
    with store.connection() as conn:
        conn.execute(
            """update opsflow.escalations set resolve_claimed_at = null, resolve_sent = %(sent)s,
                   resolve_error = %(error)s, resolve_told_at = case when %(told)s then %(now)s end
               where routine = %(routine)s and item = %(item)s and opened_at = %(opened_at)s and tier = %(tier)s""",
            {**key, "sent": list(sent), "told": told, "error": error, "now": now},
        )
