-- The digest and the status page read each routine's newest result and its runs of a period:
-- by routine and time, whatever the scope (an SLA report's period, a drill's database).
create index routine_runs_by_time on opsflow.routine_runs (routine, as_of desc);
