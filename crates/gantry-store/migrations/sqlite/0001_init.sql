-- Gantry's schema, SQLite flavour. Keep postgres/0001_init.sql in step: same tables, same
-- columns, same meaning (a test compares them). Times are milliseconds since the Unix epoch;
-- flags are 0/1 integers on both backends.

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE projects (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    path           TEXT NOT NULL UNIQUE,
    git_url        TEXT NOT NULL,
    default_branch TEXT NOT NULL,
    pipeline_file  TEXT,
    credentials    TEXT,
    created_at     INTEGER NOT NULL
);

CREATE TABLE pipelines (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id    INTEGER NOT NULL REFERENCES projects(id),
    git_ref       TEXT NOT NULL,
    sha           TEXT NOT NULL,
    status        TEXT NOT NULL,
    source        TEXT NOT NULL,
    parent_job_id INTEGER,
    trigger_json  TEXT NOT NULL,
    errors        TEXT,
    auto_cancel   TEXT,
    created_at    INTEGER NOT NULL,
    started_at    INTEGER,
    finished_at   INTEGER
);
CREATE INDEX pipelines_by_project ON pipelines (project_id, id);
CREATE INDEX pipelines_by_status ON pipelines (status);

CREATE TABLE jobs (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    pipeline_id    INTEGER NOT NULL REFERENCES pipelines(id),
    project_id     INTEGER NOT NULL REFERENCES projects(id),
    name           TEXT NOT NULL,
    stage          TEXT NOT NULL,
    stage_index    INTEGER NOT NULL,
    position       INTEGER NOT NULL,
    status         TEXT NOT NULL,
    attempt        INTEGER NOT NULL,
    retried        INTEGER NOT NULL DEFAULT 0,
    definition     TEXT NOT NULL,
    tags           TEXT NOT NULL,
    resource_group TEXT,
    failure_reason TEXT,
    exit_code      INTEGER,
    allow_failure  INTEGER NOT NULL DEFAULT 0,
    agent_id       INTEGER,
    token_hash     TEXT,
    lease_until    INTEGER,
    run_at         INTEGER,
    played_by      TEXT,
    dotenv         TEXT,
    has_artifacts  INTEGER NOT NULL DEFAULT 0,
    log_size       INTEGER NOT NULL DEFAULT 0,
    created_at     INTEGER NOT NULL,
    queued_at      INTEGER,
    started_at     INTEGER,
    finished_at    INTEGER
);
CREATE INDEX jobs_by_pipeline ON jobs (pipeline_id, id);
CREATE INDEX jobs_by_status ON jobs (status);
CREATE INDEX jobs_by_agent ON jobs (agent_id, status);
CREATE UNIQUE INDEX jobs_by_token ON jobs (token_hash);

CREATE TABLE agents (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    name         TEXT NOT NULL,
    token_hash   TEXT NOT NULL UNIQUE,
    tags         TEXT NOT NULL,
    run_untagged INTEGER NOT NULL,
    executor     TEXT NOT NULL,
    concurrency  INTEGER NOT NULL,
    version      TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    last_seen_at INTEGER
);
