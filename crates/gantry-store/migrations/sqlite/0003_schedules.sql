-- Schedules and polling, SQLite flavour. Keep postgres/0003_schedules.sql in step (a test
-- compares them).
--
-- A cron schedule of a project: a standard 5-field cron expression read in an IANA time zone,
-- the ref and variables of the pipelines it starts (source `schedule`). `next_run_at` is the
-- next slot (NULL while inactive). A firing is claimed by moving `next_run_at` from the slot
-- it read to the next one (`UPDATE … WHERE id = ? AND next_run_at = <read>`), so two ticks
-- or two servers never fire the same slot; after downtime the next slot is computed from
-- the time of the firing, so a missed run fires once, not once per missed slot.
-- `variables` is a JSON array of {"key", "value"}.
CREATE TABLE schedules (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id       INTEGER NOT NULL REFERENCES projects(id),
    description      TEXT NOT NULL,
    cron             TEXT NOT NULL,
    time_zone        TEXT NOT NULL,
    git_ref          TEXT NOT NULL,
    variables        TEXT NOT NULL,
    active           INTEGER NOT NULL,
    next_run_at      INTEGER,
    last_run_at      INTEGER,
    last_pipeline_id INTEGER REFERENCES pipelines(id),
    last_error       TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);
CREATE INDEX schedules_by_project ON schedules (project_id, id);
CREATE INDEX schedules_due ON schedules (active, next_run_at);

-- Polling of a project whose forge cannot send webhooks: every `interval_secs` the remote's
-- heads and tags are listed (`git ls-remote`); a poll is claimed like a schedule's slot
-- (`next_poll_at` moved from the value read). `primed` is 1 once a poll recorded the heads:
-- the first poll starts no pipeline. The last error stays until a poll succeeds.
CREATE TABLE project_polling (
    project_id      INTEGER PRIMARY KEY REFERENCES projects(id),
    interval_secs   INTEGER NOT NULL,
    next_poll_at    INTEGER NOT NULL,
    primed          INTEGER NOT NULL DEFAULT 0,
    last_poll_at    INTEGER,
    last_error      TEXT,
    last_error_at   INTEGER,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX project_polling_due ON project_polling (next_poll_at);

-- The last sha polling saw for each head and tag (full ref names: refs/heads/main).
CREATE TABLE polled_refs (
    project_id INTEGER NOT NULL REFERENCES projects(id),
    git_ref    TEXT NOT NULL,
    sha        TEXT NOT NULL,
    PRIMARY KEY (project_id, git_ref)
);
