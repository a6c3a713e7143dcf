-- Users, their tokens and sessions, project roles and the audit log, SQLite flavour. Keep
-- postgres/0006_accounts.sql in step (a test compares them).

-- Local accounts. `password_hash` is an Argon2id PHC string (salt and parameters inside it).
-- `failed_logins` counts wrong passwords since the last good one; `locked_until` refuses
-- logins until then (ms since the epoch).
CREATE TABLE users (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    username      TEXT NOT NULL UNIQUE,
    name          TEXT NOT NULL,
    email         TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    is_admin      INTEGER NOT NULL DEFAULT 0,
    blocked       INTEGER NOT NULL DEFAULT 0,
    failed_logins INTEGER NOT NULL DEFAULT 0,
    locked_until  INTEGER,
    created_at    INTEGER NOT NULL,
    last_login_at INTEGER
);

-- Personal access tokens: only their SHA-256 is kept; `scopes` is a comma-separated list of
-- api, read_api, read_registry, write_registry.
CREATE TABLE access_tokens (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id      INTEGER NOT NULL REFERENCES users(id),
    name         TEXT NOT NULL,
    token_hash   TEXT NOT NULL UNIQUE,
    hint         TEXT NOT NULL,
    scopes       TEXT NOT NULL,
    expires_at   INTEGER,
    revoked      INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER
);
CREATE INDEX access_tokens_by_user ON access_tokens (user_id, id);

-- Browser sessions: the cookie's SHA-256, and the CSRF token the session's pages send back.
CREATE TABLE sessions (
    id_hash     TEXT PRIMARY KEY,
    user_id     INTEGER NOT NULL REFERENCES users(id),
    csrf_token  TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
CREATE INDEX sessions_by_user ON sessions (user_id);

-- A user's role in a project: guest, reporter, developer, maintainer or owner.
CREATE TABLE members (
    project_id INTEGER NOT NULL REFERENCES projects(id),
    user_id    INTEGER NOT NULL REFERENCES users(id),
    role       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (project_id, user_id)
);
CREATE INDEX members_by_user ON members (user_id);

-- Who did what, when. Rows are only ever inserted, and removed when older than the retention.
CREATE TABLE audit_log (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at         INTEGER NOT NULL,
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    project_id INTEGER,
    target     TEXT NOT NULL,
    details    TEXT,
    ip         TEXT
);
CREATE INDEX audit_log_by_time ON audit_log (at);
