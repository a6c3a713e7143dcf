-- Commit statuses and notifications, SQLite flavour. Keep postgres/0004_outbox.sql in step (a
-- test compares them).
--
-- A project's forge, to which Gantry reports commit statuses. The token is sealed
-- (gantry_store::secrets), bound to the row as `project:<id>:forge_token`.
CREATE TABLE project_forges (
    project_id   INTEGER PRIMARY KEY REFERENCES projects(id),
    kind         TEXT NOT NULL,
    api_url      TEXT NOT NULL,
    repository   TEXT NOT NULL,
    token        TEXT NOT NULL,
    job_statuses INTEGER NOT NULL DEFAULT 0,
    updated_at   INTEGER NOT NULL
);

-- Where a project's notifications go: `email` (recipients, comma-separated) or a chat webhook
-- (`slack`, `dingtalk`, `feishu`, `teams`, `generic`) whose URL, which carries a secret, is
-- sealed and bound to the row as `channel:<id>:url`. `events`: comma-separated among failed,
-- fixed, succeeded, manual.
CREATE TABLE notification_channels (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id INTEGER NOT NULL REFERENCES projects(id),
    kind       TEXT NOT NULL,
    recipients TEXT,
    url        TEXT,
    events     TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX notification_channels_by_project ON notification_channels (project_id, id);

-- What is to be sent, sent, or given up: commit statuses (`commit_status`), `email`, `chat`.
-- `dedupe_key` is unique: enqueueing the same event twice keeps one row. Rows of one
-- `group_key` (a pipeline's or a job's commit status on a forge) are sent in order, and an
-- older one is never sent after a newer one exists (`superseded`). `payload` is JSON without
-- secrets (tokens and webhook URLs are read from their rows when sending). `state`: queued,
-- sending, done, failed, superseded.
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id      INTEGER NOT NULL REFERENCES projects(id),
    pipeline_id     INTEGER,
    job_id          INTEGER,
    kind            TEXT NOT NULL,
    channel_id      INTEGER,
    dedupe_key      TEXT NOT NULL UNIQUE,
    group_key       TEXT NOT NULL,
    payload         TEXT NOT NULL,
    state           TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX outbox_due ON outbox (state, next_attempt_at);
CREATE INDEX outbox_by_project ON outbox (project_id, id);
CREATE INDEX outbox_by_group ON outbox (group_key, id);
