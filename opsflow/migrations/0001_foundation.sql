-- Foundation: routine results, probe history (partitioned by month), capacity samples.

create table opsflow.routine_runs (
    routine     text        not null,
    -- What a run was about when one routine has several independent results
    -- at one instant (the database of a drill, the period of an SLA report).
    scope       text        not null default '',
    as_of       timestamptz not null,
    status      text        not null check (status in ('ok', 'warn', 'fail', 'error')),
    flow_run_id uuid,
    result      jsonb       not null,
    recorded_at timestamptz not null default now(),
    -- A re-run for the same instant replaces the earlier result (SPEC §7).
    primary key (routine, scope, as_of)
);
create index routine_runs_recent on opsflow.routine_runs (routine, scope, recorded_at desc);

create table opsflow.probe_results (
    service     text             not null,
    checked_at  timestamptz      not null,
    ok          boolean          not null,
    latency_ms  double precision,
    status_code integer,
    error       text,
    primary key (service, checked_at)
) partition by range (checked_at);

-- Monthly partitions (UTC months) are created on demand before each write, so
-- old months can be detached or dropped whole.
create function opsflow.ensure_probe_partition(at timestamptz) returns text
language plpgsql as $$
declare
    month_start timestamptz := date_trunc('month', at, 'UTC');
    part_name   text := 'probe_results_' || to_char(month_start at time zone 'UTC', 'YYYY_MM');
begin
    if to_regclass('opsflow.' || part_name) is null then
        -- Serialise concurrent writers: CREATE ... IF NOT EXISTS alone can still race.
        perform pg_advisory_xact_lock(hashtext('opsflow.probe_partition'));
        execute format(
            'create table if not exists opsflow.%I partition of opsflow.probe_results for values from (%L) to (%L)',
            part_name, month_start, month_start + interval '1 month');
    end if;
    return part_name;
end;
$$;

create table opsflow.capacity_samples (
    metric text             not null,
    ts     timestamptz      not null,
    value  double precision not null,
    primary key (metric, ts)
);
