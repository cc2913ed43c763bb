-- Raw probe retention (store.raw_probe_retention): the monthly partitions of opsflow.probe_results
-- dropped after their hourly, daily and weekly rollups were complete. The SLA report reads these
-- months from the rollups only, and no rollup refresh rebuilds their hours from (absent) raw rows.
create table opsflow.probe_retention (
    month       timestamptz primary key,  -- the partition's UTC month start
    month_end   timestamptz not null,     -- the next UTC month's start (the partition's upper bound)
    partition   text        not null,     -- its table name, probe_results_YYYY_MM
    dropped_at  timestamptz not null default now()
);
