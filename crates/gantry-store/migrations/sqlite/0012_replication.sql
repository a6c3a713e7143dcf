-- Registry replication, SQLite flavour. Keep postgres/0012_replication.sql in step (a test
-- compares them).
--
-- A replication rule of a project: the tags of its repositories that match `repositories`
-- (a glob on the name below the project's path; `**` crosses `/`) and `tags` are pushed to
-- another registry at `url` (`https://host[:port]`, or `http://` for plain HTTP), under
-- `namespace` in place of the project's path when it is not empty. `password` is sealed
-- (gantry_store::secrets), bound to the row as `replication:<id>:password`; `username` is
-- plain. Triggers: `on_push` (a matching tag pushed or promoted into the project) and a cron
-- `schedule` in `time_zone`, whose next slot `next_run_at` is claimed as a pipeline
-- schedule's (`UPDATE … WHERE id = ? AND next_run_at = <read>`; NULL without a schedule or
-- while disabled). `insecure`: the destination's TLS certificate is not checked.
CREATE TABLE registry_replications (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id   INTEGER NOT NULL REFERENCES projects(id),
    name         TEXT NOT NULL,
    url          TEXT NOT NULL,
    namespace    TEXT NOT NULL,
    username     TEXT NOT NULL,
    password     TEXT,
    repositories TEXT NOT NULL,
    tags         TEXT NOT NULL,
    on_push      INTEGER NOT NULL,
    schedule     TEXT,
    time_zone    TEXT NOT NULL,
    next_run_at  INTEGER,
    enabled      INTEGER NOT NULL,
    insecure     INTEGER NOT NULL,
    created_by   TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    UNIQUE (project_id, name)
);
CREATE INDEX registry_replications_due ON registry_replications (enabled, next_run_at);

-- A run of a rule, queued durably where it is decided (a push, a schedule's slot, "run now")
-- and executed by the server's replication task, never on a push's path. `triggered_by`:
-- push (`repository` and `tag` name the image), schedule or manual (every matching tag).
-- `status`: queued (also between attempts, then `error` says why the last one failed),
-- running (claimed conditionally, `lease_until` renewed while it runs: a run whose server
-- died is taken over once its lease is past), succeeded, failed (`error`).
CREATE TABLE registry_replication_runs (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    replication_id  INTEGER NOT NULL REFERENCES registry_replications(id),
    project_id      INTEGER NOT NULL REFERENCES projects(id),
    triggered_by    TEXT NOT NULL,
    repository      TEXT,
    tag             TEXT,
    actor           TEXT NOT NULL,
    status          TEXT NOT NULL,
    attempts        INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    lease_until     INTEGER,
    queued_at       INTEGER NOT NULL,
    started_at      INTEGER,
    finished_at     INTEGER,
    images_copied   INTEGER NOT NULL,
    images_skipped  INTEGER NOT NULL,
    blobs_copied    INTEGER NOT NULL,
    blobs_mounted   INTEGER NOT NULL,
    blobs_skipped   INTEGER NOT NULL,
    bytes_copied    INTEGER NOT NULL,
    error           TEXT
);
CREATE INDEX registry_replication_runs_due ON registry_replication_runs (status, next_attempt_at);
CREATE INDEX registry_replication_runs_by_rule ON registry_replication_runs (replication_id, id);
