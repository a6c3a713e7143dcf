-- The web UI's lists: a project's pipelines by ref (the last pipeline of a branch, the
-- pipelines list filtered by ref) without reading the project's other pipelines.
CREATE INDEX pipelines_by_ref ON pipelines (project_id, git_ref, id);
