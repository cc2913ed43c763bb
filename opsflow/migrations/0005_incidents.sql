-- Uptime incidents (SPEC §6): an incident opens at the first of
-- `failure_threshold` consecutive failures and closes at the next success.

create table opsflow.incidents (
    id           bigint generated always as identity primary key,
    service      text        not null,
    opened_at    timestamptz not null,
    closed_at    timestamptz,
    last_error   text,
    unique (service, opened_at)
);
-- At most one open incident per service.
create unique index incidents_one_open on opsflow.incidents (service) where closed_at is null;

-- Where each service's run of consecutive failures stands, between probe runs.
create table opsflow.probe_state (
    service              text        primary key,
    consecutive_failures integer     not null default 0,
    first_failure_at     timestamptz,
    last_checked_at      timestamptz not null
);
