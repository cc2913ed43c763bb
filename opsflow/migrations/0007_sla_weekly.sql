-- SLA reports read a month as a few ISO weeks (UTC) plus edge days and hours, not as 30 days:
-- summing latency histograms is the report's heaviest step, and a week's histogram is barely
-- longer than a day's (the same buckets fill up).

-- Weekly rollups (UTC ISO weeks, from Monday 00:00 UTC) summed from the 7 daily rows; a row
-- exists only when all 7 days are complete (24 hours each) and share one interval.
create table opsflow.probe_weekly (
    service      text             not null,
    week         timestamptz      not null,
    interval_s   double precision not null,
    days         integer          not null,
    up_seconds   double precision not null,
    down_seconds double precision not null,
    hist_buckets integer[]        not null,
    hist_counts  integer[]        not null,
    primary key (service, week)
);

-- Hours with at least one success: an incident's run of failures is broken by a success between
-- two failures, and an hour with a success lying wholly between them proves one without reading
-- raw rows (an index-only lookup in a small index instead of a random read in the large one).
create index probe_hourly_with_successes on opsflow.probe_hourly (service, hour) where ok_count > 0;
