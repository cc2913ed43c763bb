-- Escalation tiers told of an alert episode still open `after` its trigger (SPEC §4
-- notifications.escalate, §7): one row per routine, item, episode (the alert state's
-- opened_at) and tier, claimed by an insert ... on conflict do nothing, so two runs at
-- once tell a tier once. A delivery that did not land is tried again by the next run.

create table opsflow.escalations (
    routine            text        not null,
    item               text        not null,
    -- The alert episode: opsflow.alert_state.opened_at when the item triggered (the run's as_of).
    opened_at          timestamptz not null,
    -- 1-based position of the tier in notifications.escalate.
    tier               integer     not null check (tier >= 1),
    after_seconds      double precision not null,
    recipients         text[]      not null default '{}',
    mention            text,
    -- When the first run claimed it (the clock of the run), and the run's as_of.
    created_at         timestamptz not null,
    as_of              timestamptz not null,
    flow_run_id        uuid,
    -- A run is delivering it now (a claim older than 10 minutes is stale: its run died).
    claimed_at         timestamptz,
    attempts           integer     not null default 0,
    -- Channels (email, slack) that have landed; delivered once every channel of the tier has.
    sent               text[]      not null default '{}',
    delivered          boolean     not null default false,
    at                 timestamptz,
    error              text,
    -- The episode's resolve told to this (delivered) tier.
    resolve_claimed_at timestamptz,
    resolve_sent       text[]      not null default '{}',
    resolve_told_at    timestamptz,
    resolve_error      text,
    primary key (routine, item, opened_at, tier)
);
-- What a run still has to do: deliveries to retry and resolves to tell.
create index escalations_pending on opsflow.escalations (routine, item)
    where not delivered or resolve_told_at is null;
