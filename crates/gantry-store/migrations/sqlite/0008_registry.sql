-- The OCI registry's metadata, SQLite flavour. Keep postgres/0008_registry.sql in step (a test
-- compares them). Blob and manifest bytes are in the blob store under `registry/<algorithm>/…`,
-- by digest; these tables say which repository may see which of them.

-- A project's registry settings; a project without a row has the defaults. `public`: anyone,
-- signed in or not, may pull. `push_role` and `promote_role`: the least role that may push
-- into the project's repositories and promote images into them (so that developers push to
-- `dev` while only testers promote into `test`).
CREATE TABLE registry_projects (
    project_id   INTEGER PRIMARY KEY REFERENCES projects(id),
    public       INTEGER NOT NULL DEFAULT 0,
    push_role    TEXT NOT NULL DEFAULT 'developer',
    promote_role TEXT NOT NULL DEFAULT 'maintainer',
    updated_at   INTEGER NOT NULL
);

-- A repository (`team/app`, `team/app/web`) belongs to the project whose path is its longest
-- prefix; it is made by its first push.
CREATE TABLE registry_repositories (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id INTEGER NOT NULL REFERENCES projects(id),
    name       TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);
CREATE INDEX registry_repositories_by_project ON registry_repositories (project_id, name);

-- Content in the blob store (layers, configs, manifests), once per digest.
CREATE TABLE registry_blobs (
    digest     TEXT PRIMARY KEY,
    size       BIGINT NOT NULL,
    created_at INTEGER NOT NULL
);

-- Which blobs a repository holds: what was pushed to it or mounted into it. A blob is
-- served to a repository only through a link.
CREATE TABLE registry_blob_links (
    repository_id INTEGER NOT NULL REFERENCES registry_repositories(id),
    digest        TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (repository_id, digest)
);
CREATE INDEX registry_blob_links_by_digest ON registry_blob_links (digest);

-- Manifests (images, indexes, artifacts) of a repository. `subject` is the digest a
-- referrer points at (the referrers API); `annotations` its annotations as JSON.
CREATE TABLE registry_manifests (
    repository_id INTEGER NOT NULL REFERENCES registry_repositories(id),
    digest        TEXT NOT NULL,
    media_type    TEXT NOT NULL,
    size          BIGINT NOT NULL,
    artifact_type TEXT,
    subject       TEXT,
    annotations   TEXT,
    pushed_by     TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (repository_id, digest)
);
CREATE INDEX registry_manifests_by_subject ON registry_manifests (repository_id, subject);

-- What a manifest points at: its config and layers (blobs) or, for an index, its manifests.
-- Garbage collection keeps what any manifest points at.
CREATE TABLE registry_manifest_refs (
    repository_id   INTEGER NOT NULL,
    manifest_digest TEXT NOT NULL,
    child_digest    TEXT NOT NULL,
    PRIMARY KEY (repository_id, manifest_digest, child_digest)
);
CREATE INDEX registry_manifest_refs_by_child ON registry_manifest_refs (child_digest);

-- Tags: a name pointing at a manifest of the repository.
CREATE TABLE registry_tags (
    repository_id INTEGER NOT NULL REFERENCES registry_repositories(id),
    name          TEXT NOT NULL,
    digest        TEXT NOT NULL,
    pushed_by     TEXT NOT NULL,
    updated_at    INTEGER NOT NULL,
    pulled_at     INTEGER,
    PRIMARY KEY (repository_id, name)
);

-- Uploads in progress; their bytes are a file under the registry's upload folder.
-- Garbage collection never removes a blob an upload younger than a day may complete to.
CREATE TABLE registry_uploads (
    id            TEXT PRIMARY KEY,
    repository_id INTEGER NOT NULL REFERENCES registry_repositories(id),
    started_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);
