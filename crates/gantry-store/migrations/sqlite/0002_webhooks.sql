-- Webhooks, SQLite flavour. Keep postgres/0002_webhooks.sql in step (a test compares them).
--
-- A project's webhook secret is sealed (gantry_store::secrets, bound to the row as
-- `project:<id>:webhook_secret`), like its credentials.
ALTER TABLE projects ADD COLUMN webhook_secret TEXT;

-- Every webhook request that named a project: accepted or refused, with the HTTP status it got.
-- A delivery that may start a pipeline is `claimed` (1) before the pipeline is created; the
-- two unique indexes then refuse a second claim of the same delivery id or of the same payload
-- (a replay under a new id), so two concurrent copies cannot both create a pipeline. A
-- delivery that failed gives its claim back (0), so that the forge may redeliver it.
CREATE TABLE webhook_deliveries (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id     INTEGER NOT NULL REFERENCES projects(id),
    forge          TEXT NOT NULL,
    event          TEXT NOT NULL,
    delivery_id    TEXT,
    payload_sha256 TEXT NOT NULL,
    claimed        INTEGER NOT NULL DEFAULT 0,
    received_at    INTEGER NOT NULL,
    status         INTEGER NOT NULL,
    outcome        TEXT NOT NULL,
    pipeline_id    INTEGER REFERENCES pipelines(id),
    error          TEXT
);
CREATE INDEX webhook_deliveries_by_project ON webhook_deliveries (project_id, id);
CREATE UNIQUE INDEX webhook_deliveries_once ON webhook_deliveries (project_id, delivery_id) WHERE claimed = 1;
CREATE UNIQUE INDEX webhook_payloads_once ON webhook_deliveries (project_id, payload_sha256) WHERE claimed = 1;
