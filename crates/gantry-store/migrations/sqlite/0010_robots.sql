-- Registry robot accounts, SQLite flavour. Keep postgres/0010_robots.sql in step (a test
-- compares them).

-- A robot account pulls (and maybe pushes) the repositories of one project: `docker login -u
-- 'robot$PROJECT+NAME'` with its token. Only the token's SHA-256 is kept; `hint` is its first
-- characters. `actions`: `pull` or `pull,push`.
CREATE TABLE registry_robots (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id   INTEGER NOT NULL REFERENCES projects(id),
    name         TEXT NOT NULL,
    token_hash   TEXT NOT NULL UNIQUE,
    hint         TEXT NOT NULL,
    actions      TEXT NOT NULL,
    expires_at   INTEGER,
    revoked      INTEGER NOT NULL DEFAULT 0,
    created_by   TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER,
    UNIQUE (project_id, name)
);
