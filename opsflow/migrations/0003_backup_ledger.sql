-- Every deep verification of a backup object (checksum, full read, restore):
-- what was verified, when, and with what outcome. A later run skips an object
-- verified with the same size and ETag within `reverify_after`.

create table opsflow.backup_verifications (
    id          bigint generated always as identity primary key,
    backup_set  text        not null,
    storage     text        not null,
    key         text        not null,
    size        bigint      not null,
    etag        text,
    sha256      text,
    written_at  timestamptz not null,
    verified_at timestamptz not null default now(),
    as_of       timestamptz not null,
    -- the worst status of the object's deep checks, and each check's result
    outcome     text        not null check (outcome in ('ok', 'warn', 'fail', 'error')),
    checks      jsonb       not null,
    flow_run_id uuid
);
create index backup_verifications_by_object on opsflow.backup_verifications (backup_set, key, verified_at desc);
