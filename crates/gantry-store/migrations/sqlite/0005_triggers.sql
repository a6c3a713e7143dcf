-- Trigger tokens and merge requests, SQLite flavour. Keep postgres/0005_triggers.sql in step
-- (a test compares them).

-- A trigger token starts pipelines of its project through `POST /api/v1/projects/{id}/trigger`
-- (source `trigger`). Only its SHA-256 is kept: the token is shown once, when it is made;
-- `hint` is its first characters, to tell tokens apart in a list.
CREATE TABLE trigger_tokens (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id   INTEGER NOT NULL REFERENCES projects(id),
    description  TEXT NOT NULL,
    token_hash   TEXT NOT NULL UNIQUE,
    hint         TEXT NOT NULL,
    created_by   TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER
);
CREATE INDEX trigger_tokens_by_project ON trigger_tokens (project_id, id);

-- Merge requests as the forge's webhooks told of them: the open ones whose source branch is in
-- the project itself (not a fork) are listed in that branch's pipelines as
-- CI_OPEN_MERGE_REQUESTS.
CREATE TABLE merge_requests (
    project_id    INTEGER NOT NULL REFERENCES projects(id),
    iid           INTEGER NOT NULL,
    source_branch TEXT NOT NULL,
    target_branch TEXT NOT NULL,
    title         TEXT NOT NULL,
    from_fork     INTEGER NOT NULL,
    is_open       INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    PRIMARY KEY (project_id, iid)
);
CREATE INDEX merge_requests_by_branch ON merge_requests (project_id, source_branch, is_open);
