-- Alert state per routine and item (dedup, resolve, flap suppression) and a
-- log of every delivery attempt's outcome.

create table opsflow.alert_state (
    routine       text        not null,
    item          text        not null,
    status        text        not null check (status in ('ok', 'warn', 'fail', 'error')),
    -- An alert is open from the first failing run until the item recovers.
    is_open       boolean     not null default false,
    opened_at     timestamptz,
    -- Whether PagerDuty currently holds a triggered incident for this item.
    paged         boolean     not null default false,
    last_paged_at timestamptz,
    updated_at    timestamptz not null default now(),
    primary key (routine, item)
);

create table opsflow.alert_deliveries (
    id          bigint generated always as identity primary key,
    routine     text        not null,
    item        text        not null,
    kind        text        not null,
    channel     text        not null,
    delivered   boolean     not null,
    error       text,
    as_of       timestamptz not null,
    flow_run_id uuid,
    recorded_at timestamptz not null default now()
);
create index alert_deliveries_recent on opsflow.alert_deliveries (routine, item, recorded_at desc);
