-- SLA reports (SPEC §6): hourly rollups of probe results, and frozen report revisions.

-- A latency's bucket on a fixed log scale: bucket b holds [0.001 ms * G^b, 0.001 ms * G^(b+1)),
-- G = 1.018. Its representative value 0.001 ms * G^(b + 0.5) is within sqrt(G) - 1 = 0.9% of
-- every latency in it, so a percentile read from summed buckets stays within 1% of the exact one.
create function opsflow.latency_bucket(ms double precision) returns integer
language sql immutable parallel safe as $$
    select floor(ln(greatest(coalesce(ms, 0), 0.001) / 0.001) / ln(1.018))::integer
$$;

create function opsflow.latency_bucket_value(bucket integer) returns double precision
language sql immutable parallel safe as $$
    select 0.001 * power(1.018, bucket + 0.5)
$$;

-- One row per service and UTC hour [hour, hour + 1h): the seconds of that hour covered by
-- successful and failed results (a result at t covers [t, min(t + interval, next result))),
-- how many results were taken in it, and the latency histogram of its successful results
-- (parallel arrays: bucket ids and counts). Maintenance is not taken out here: the report reads
-- raw rows for hours that touch a maintenance window. A row exists for every refreshed hour,
-- also an hour without data, so a missing row means "not rolled up yet".
create table opsflow.probe_hourly (
    service        text             not null,
    hour           timestamptz      not null,
    interval_s     double precision not null,
    up_seconds     double precision not null default 0,
    down_seconds   double precision not null default 0,
    ok_count       integer          not null default 0,
    fail_count     integer          not null default 0,
    hist_buckets   integer[]        not null default '{}',
    hist_counts    integer[]        not null default '{}',
    refreshed_at   timestamptz      not null default now(),
    primary key (service, hour)
);

-- Every stored SLA report, by period; a month is frozen: a re-run adds a revision.
create table opsflow.sla_reports (
    period_label text        not null,
    period_kind  text        not null,
    revision     integer     not null,
    period_start timestamptz not null,
    period_end   timestamptz not null,
    as_of        timestamptz not null,
    flow_run_id  uuid,
    result       jsonb       not null,
    recorded_at  timestamptz not null default now(),
    primary key (period_label, revision)
);

-- The failures alone, for incidents: a report reads them without touching the successes.
create index probe_results_failures on opsflow.probe_results (service, checked_at) where not ok;

-- Daily rollups (UTC days) summed from the 24 hourly rows, so a month reads 30 rows per service.
create table opsflow.probe_daily (
    service      text             not null,
    day          timestamptz      not null,
    interval_s   double precision not null,
    hours        integer          not null,
    up_seconds   double precision not null,
    down_seconds double precision not null,
    hist_buckets integer[]        not null,
    hist_counts  integer[]        not null,
    primary key (service, day)
);
