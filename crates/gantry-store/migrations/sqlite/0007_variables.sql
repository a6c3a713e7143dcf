-- CI/CD variables and protected refs, SQLite flavour. Keep postgres/0007_variables.sql in step
-- (a test compares them).

-- A CI/CD variable of a project, or of the instance (project_id NULL). `value` is sealed
-- (Keyring::seal, bound to `variable:<id>`): the plaintext is never stored, and the API
-- never shows it back. `masked` ones are hidden in job logs; `protected` ones reach only
-- pipelines of protected refs; `variable_type` is `env_var` or `file` (the job gets the path
-- of a file holding the value); `environment_scope` is `*`, an environment's name or a glob
-- (`review/*`).
CREATE TABLE ci_variables (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id        INTEGER REFERENCES projects(id),
    key               TEXT NOT NULL,
    value             TEXT NOT NULL,
    masked            INTEGER NOT NULL,
    protected         INTEGER NOT NULL,
    variable_type     TEXT NOT NULL,
    environment_scope TEXT NOT NULL DEFAULT '*',
    description       TEXT NOT NULL DEFAULT '',
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL
);
-- One definition per key and scope, per project and for the instance (NULL is 0 here).
CREATE UNIQUE INDEX ci_variables_unique
    ON ci_variables (COALESCE(project_id, 0), key, environment_scope);

-- Branch and tag patterns of a project that are protected (`main`, `release/*`, `v*`):
-- their pipelines get protected variables. `kind` is `branch`, `tag` or `any`.
CREATE TABLE protected_refs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id  INTEGER NOT NULL REFERENCES projects(id),
    pattern     TEXT NOT NULL,
    kind        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE UNIQUE INDEX protected_refs_unique ON protected_refs (project_id, pattern, kind);
