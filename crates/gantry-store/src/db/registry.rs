//! The OCI registry's metadata (migration 0008): repositories, the blobs each may read,
//! manifests and what they point at, tags, uploads in progress, and each project's registry
//! settings. The bytes are in the blob store; nothing here reads or writes them.

use super::{AuditEntry, AuditRow, Db, PageReq, now_ms, returned_id};
use crate::Result;
use sqlx::Row;
use sqlx::any::AnyRow;

/// A project's registry settings (the defaults when it has no row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrySettingsRow {
    pub public: bool,
    /// The least role (`gantry_api::Role` name) that may push into the project.
    pub push_role: String,
    /// The least role that may promote images into the project.
    pub promote_role: String,
    /// Immutability and retention, as JSON (`gantry_api::rest::RegistryPolicy`).
    pub policy: String,
}

impl Default for RegistrySettingsRow {
    fn default() -> Self {
        RegistrySettingsRow {
            public: false,
            push_role: "developer".into(),
            promote_role: "maintainer".into(),
            policy: "{}".into(),
        }
    }
}

/// A repository: `name` belongs to project `project_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositoryRow {
    pub id: i64,
    pub project_id: i64,
    pub name: String,
}

/// A manifest as stored (its bytes are the blob of the same digest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestRow {
    pub digest: String,
    pub media_type: String,
    pub size: i64,
    pub artifact_type: Option<String>,
    pub subject: Option<String>,
    /// JSON object, as the manifest had it.
    pub annotations: Option<String>,
    pub pushed_by: String,
    pub created_at: i64,
}

impl ManifestRow {
    fn from_row(r: &AnyRow) -> Result<ManifestRow> {
        Ok(ManifestRow {
            digest: r.try_get("digest")?,
            media_type: r.try_get("media_type")?,
            size: r.try_get("size")?,
            artifact_type: r.try_get("artifact_type")?,
            subject: r.try_get("subject")?,
            annotations: r.try_get("annotations")?,
            pushed_by: r.try_get("pushed_by")?,
            created_at: r.try_get("created_at")?,
        })
    }
}

const MANIFEST_COLS: &str =
    "digest, media_type, size, artifact_type, subject, annotations, pushed_by, created_at";

/// A manifest to store, with what it points at.
#[derive(Debug, Clone)]
pub struct NewManifest<'a> {
    pub row: ManifestRow,
    /// Blobs (config, layers) and manifests (an index's entries) it references.
    pub children: &'a [String],
}

/// A tag as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagRow {
    pub name: String,
    pub digest: String,
    pub pushed_by: String,
    pub updated_at: i64,
    pub pulled_at: Option<i64>,
}

/// A repository as the web UI lists it: how many tags, and when something was last pushed
/// to it (a tag moved, or a manifest stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositorySummary {
    pub id: i64,
    pub name: String,
    pub tags: i64,
    pub last_push: Option<i64>,
}

/// A tag as the web UI lists it: the tag, what its manifest is, and how many bytes the
/// image holds (its config and layers; an index's images' configs and layers, each blob
/// counted once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagSummary {
    pub tag: TagRow,
    pub media_type: String,
    pub artifact_type: Option<String>,
    pub size: i64,
}

/// The audit actions of a project's registry history: promotions into it, deletions (by
/// the Distribution API or the web UI) and what retention removed when the API applied it
/// (`POST …/registry/retention`; the collection task's retention is not audited).
pub const REGISTRY_HISTORY_ACTIONS: [&str; 3] =
    ["registry.promote", "registry.delete", "registry.retention"];

/// A robot account as stored: its token's hash, never the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RobotRow {
    pub id: i64,
    pub project_id: i64,
    pub name: String,
    pub hint: String,
    /// `pull` or `pull,push`.
    pub actions: String,
    pub expires_at: Option<i64>,
    pub revoked: bool,
    pub created_by: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

impl RobotRow {
    fn from_row(r: &AnyRow) -> Result<RobotRow> {
        Ok(RobotRow {
            id: r.try_get("id")?,
            project_id: r.try_get("project_id")?,
            name: r.try_get("name")?,
            hint: r.try_get("hint")?,
            actions: r.try_get("actions")?,
            expires_at: r.try_get("expires_at")?,
            revoked: r.try_get::<i64, _>("revoked")? != 0,
            created_by: r.try_get("created_by")?,
            created_at: r.try_get("created_at")?,
            last_used_at: r.try_get("last_used_at")?,
        })
    }
}

const ROBOT_COLS: &str = "id, project_id, name, hint, actions, expires_at, revoked, created_by, \
                          created_at, last_used_at";

/// Pulls are written at most this often per tag: a pull is a read.
pub const PULL_RECORD_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60 * 60);
const PULL_RECORD_INTERVAL_MS: i64 = PULL_RECORD_INTERVAL.as_millis() as i64;

impl Db {
    // ---- settings -------------------------------------------------------------------------

    pub async fn registry_settings(&self, project_id: i64) -> Result<RegistrySettingsRow> {
        let row = sqlx::query(
            "SELECT public, push_role, promote_role, policy FROM registry_projects \
             WHERE project_id = $1",
        )
        .bind(project_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some(r) => RegistrySettingsRow {
                public: r.try_get::<i64, _>("public")? != 0,
                push_role: r.try_get("push_role")?,
                promote_role: r.try_get("promote_role")?,
                policy: r.try_get("policy")?,
            },
            None => RegistrySettingsRow::default(),
        })
    }

    pub async fn set_registry_settings(
        &self,
        project_id: i64,
        s: &RegistrySettingsRow,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO registry_projects (project_id, public, push_role, promote_role, \
             policy, updated_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (project_id) DO \
             UPDATE SET public = excluded.public, push_role = excluded.push_role, \
             promote_role = excluded.promote_role, policy = excluded.policy, \
             updated_at = excluded.updated_at",
        )
        .bind(project_id)
        .bind(i64::from(s.public))
        .bind(&s.push_role)
        .bind(&s.promote_role)
        .bind(&s.policy)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The projects a user is a member of (none for `None`) and the public ones.
    pub async fn registry_visible_projects(&self, user_id: Option<i64>) -> Result<Vec<i64>> {
        let rows = sqlx::query(
            "SELECT project_id FROM members WHERE user_id = $1 UNION \
             SELECT project_id FROM registry_projects WHERE public = 1 ORDER BY 1",
        )
        .bind(user_id.unwrap_or(-1))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get::<i64, _>(0)?)).collect()
    }

    /// Projects whose registry policy is not empty (retention may apply).
    pub async fn registry_projects_with_policy(&self) -> Result<Vec<i64>> {
        let rows = sqlx::query(
            "SELECT project_id FROM registry_projects WHERE policy <> '{}' ORDER BY project_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get::<i64, _>(0)?)).collect()
    }

    // ---- repositories ---------------------------------------------------------------------

    pub async fn repository(&self, name: &str) -> Result<Option<RepositoryRow>> {
        let row =
            sqlx::query("SELECT id, project_id, name FROM registry_repositories WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|r| {
            Ok(RepositoryRow {
                id: r.try_get("id")?,
                project_id: r.try_get("project_id")?,
                name: r.try_get("name")?,
            })
        })
        .transpose()
    }

    /// The repository `name` of the project, made if it does not exist yet.
    pub async fn ensure_repository(&self, project_id: i64, name: &str) -> Result<RepositoryRow> {
        if let Some(r) = self.repository(name).await? {
            return Ok(r);
        }
        sqlx::query(
            "INSERT INTO registry_repositories (project_id, name, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(project_id)
        .bind(name)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        self.repository(name)
            .await?
            .ok_or_else(|| sqlx::Error::RowNotFound.into())
    }

    /// A project's repositories.
    pub async fn repositories_of(&self, project_id: i64) -> Result<Vec<RepositoryRow>> {
        let rows = sqlx::query(
            "SELECT id, project_id, name FROM registry_repositories WHERE project_id = $1 \
             ORDER BY name",
        )
        .bind(project_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(RepositoryRow {
                    id: r.try_get("id")?,
                    project_id: r.try_get("project_id")?,
                    name: r.try_get("name")?,
                })
            })
            .collect()
    }

    /// A page of a project's repositories, by name, with their tag count and last push.
    pub async fn repository_summaries(
        &self,
        project_id: i64,
        page: PageReq,
    ) -> Result<Vec<RepositorySummary>> {
        let rows = sqlx::query(
            "SELECT r.id, r.name, \
             (SELECT COUNT(*) FROM registry_tags t WHERE t.repository_id = r.id) AS tags, \
             (SELECT MAX(t.updated_at) FROM registry_tags t WHERE t.repository_id = r.id) \
             AS last_tag, \
             (SELECT MAX(m.created_at) FROM registry_manifests m WHERE m.repository_id = r.id) \
             AS last_manifest \
             FROM registry_repositories r WHERE r.project_id = $1 ORDER BY r.name \
             LIMIT $2 OFFSET $3",
        )
        .bind(project_id)
        .bind(page.limit())
        .bind(page.offset())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let last_tag: Option<i64> = r.try_get("last_tag")?;
                let last_manifest: Option<i64> = r.try_get("last_manifest")?;
                Ok(RepositorySummary {
                    id: r.try_get("id")?,
                    name: r.try_get("name")?,
                    tags: r.try_get("tags")?,
                    last_push: last_tag.max(last_manifest),
                })
            })
            .collect()
    }

    /// A page of a repository's tags, the most recently pushed first, each with its
    /// manifest's media type and the bytes of its image: the blobs its manifest points at,
    /// and for an index those its manifests point at (each blob once; manifests themselves
    /// not counted).
    pub async fn tag_summaries(
        &self,
        repository_id: i64,
        page: PageReq,
    ) -> Result<Vec<TagSummary>> {
        let rows = sqlx::query(
            "SELECT t.name, t.digest, t.pushed_by, t.updated_at, t.pulled_at, \
             COALESCE(m.media_type, '') AS media_type, m.artifact_type, \
             CAST(COALESCE((SELECT SUM(b.size) FROM registry_blobs b WHERE b.digest IN ( \
               SELECT r.child_digest FROM registry_manifest_refs r \
               WHERE r.repository_id = t.repository_id AND r.manifest_digest = t.digest \
               UNION \
               SELECT r2.child_digest FROM registry_manifest_refs r1 \
               JOIN registry_manifest_refs r2 ON r2.repository_id = r1.repository_id \
               AND r2.manifest_digest = r1.child_digest \
               WHERE r1.repository_id = t.repository_id AND r1.manifest_digest = t.digest) \
             AND NOT EXISTS (SELECT 1 FROM registry_manifests x \
               WHERE x.repository_id = t.repository_id AND x.digest = b.digest)), 0) \
             AS BIGINT) AS size \
             FROM registry_tags t LEFT JOIN registry_manifests m \
             ON m.repository_id = t.repository_id AND m.digest = t.digest \
             WHERE t.repository_id = $1 ORDER BY t.updated_at DESC, t.name \
             LIMIT $2 OFFSET $3",
        )
        .bind(repository_id)
        .bind(page.limit())
        .bind(page.offset())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(TagSummary {
                    tag: tag_from_row(r)?,
                    media_type: r.try_get("media_type")?,
                    artifact_type: r.try_get("artifact_type")?,
                    size: r.try_get("size")?,
                })
            })
            .collect()
    }

    /// A page of a project's registry history from the audit log, newest first: the
    /// entries of [`REGISTRY_HISTORY_ACTIONS`].
    pub async fn registry_history(&self, project_id: i64, page: PageReq) -> Result<Vec<AuditRow>> {
        let rows = sqlx::query(
            "SELECT id, at, actor, action, project_id, target, details, ip FROM audit_log \
             WHERE project_id = $1 AND action IN ($2, $3, $4) ORDER BY id DESC \
             LIMIT $5 OFFSET $6",
        )
        .bind(project_id)
        .bind(REGISTRY_HISTORY_ACTIONS[0])
        .bind(REGISTRY_HISTORY_ACTIONS[1])
        .bind(REGISTRY_HISTORY_ACTIONS[2])
        .bind(page.limit())
        .bind(page.offset())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditRow {
                    id: r.try_get("id")?,
                    at: r.try_get("at")?,
                    entry: AuditEntry {
                        actor: r.try_get("actor")?,
                        action: r.try_get("action")?,
                        project_id: r.try_get("project_id")?,
                        target: r.try_get("target")?,
                        details: r.try_get("details")?,
                        ip: r.try_get("ip")?,
                    },
                })
            })
            .collect()
    }

    /// How many tags point at a manifest.
    pub async fn tags_of_manifest(&self, repository_id: i64, digest: &str) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT name FROM registry_tags WHERE repository_id = $1 AND digest = $2 ORDER BY name",
        )
        .bind(repository_id)
        .bind(digest)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get("name")?)).collect()
    }

    /// Repository names after `last` (all when `None`), sorted, at most `n`; only those of
    /// `projects` when given.
    pub async fn repository_names(
        &self,
        last: Option<&str>,
        n: i64,
        projects: Option<&[i64]>,
    ) -> Result<Vec<String>> {
        let mut sql = String::from("SELECT name FROM registry_repositories WHERE name > $1");
        if let Some(ps) = projects {
            if ps.is_empty() {
                return Ok(Vec::new());
            }
            let ids: Vec<String> = ps.iter().map(i64::to_string).collect();
            sql.push_str(&format!(" AND project_id IN ({})", ids.join(",")));
        }
        sql.push_str(" ORDER BY name LIMIT $2");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(last.unwrap_or(""))
            .bind(n)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok(r.try_get("name")?))
            .collect::<Result<_>>()
    }

    // ---- blobs ----------------------------------------------------------------------------

    /// The size of a blob the repository holds.
    pub async fn linked_blob(&self, repository_id: i64, digest: &str) -> Result<Option<i64>> {
        let row = sqlx::query(
            "SELECT b.size FROM registry_blob_links l JOIN registry_blobs b ON b.digest = l.digest \
             WHERE l.repository_id = $1 AND l.digest = $2",
        )
        .bind(repository_id)
        .bind(digest)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| Ok(r.try_get("size")?)).transpose()
    }

    /// The size of a blob any repository holds.
    pub async fn known_blob(&self, digest: &str) -> Result<Option<i64>> {
        let row = sqlx::query("SELECT size FROM registry_blobs WHERE digest = $1")
            .bind(digest)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| Ok(r.try_get("size")?)).transpose()
    }

    /// Records a blob whose bytes are stored and links it to the repository.
    pub async fn link_new_blob(&self, repository_id: i64, digest: &str, size: i64) -> Result<()> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO registry_blobs (digest, size, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (digest) DO UPDATE SET created_at = excluded.created_at",
        )
        .bind(digest)
        .bind(size)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO registry_blob_links (repository_id, digest, created_at) \
             VALUES ($1, $2, $3) ON CONFLICT (repository_id, digest) \
             DO UPDATE SET created_at = excluded.created_at",
        )
        .bind(repository_id)
        .bind(digest)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Links a blob another repository holds (a cross-repository mount); false when no
    /// repository `from` holds it.
    pub async fn mount_blob(&self, repository_id: i64, digest: &str, from: i64) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO registry_blob_links (repository_id, digest, created_at) \
             SELECT $1, digest, $3 FROM registry_blob_links WHERE repository_id = $4 AND \
             digest = $2 ON CONFLICT (repository_id, digest) DO NOTHING",
        )
        .bind(repository_id)
        .bind(digest)
        .bind(now_ms())
        .bind(from)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() > 0 {
            return Ok(true);
        }
        Ok(self.linked_blob(repository_id, digest).await?.is_some()
            && self.linked_blob(from, digest).await?.is_some())
    }

    /// Removes a blob from a repository (the bytes stay until garbage collection).
    pub async fn unlink_blob(&self, repository_id: i64, digest: &str) -> Result<bool> {
        let done =
            sqlx::query("DELETE FROM registry_blob_links WHERE repository_id = $1 AND digest = $2")
                .bind(repository_id)
                .bind(digest)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Which of `digests` the repository does not hold as blobs.
    pub async fn missing_blobs(
        &self,
        repository_id: i64,
        digests: &[String],
    ) -> Result<Vec<String>> {
        self.missing(
            "SELECT digest FROM registry_blob_links WHERE repository_id = $1 AND digest IN",
            repository_id,
            digests,
        )
        .await
    }

    /// Which of `digests` the repository does not hold as manifests.
    pub async fn missing_manifests(
        &self,
        repository_id: i64,
        digests: &[String],
    ) -> Result<Vec<String>> {
        self.missing(
            "SELECT digest FROM registry_manifests WHERE repository_id = $1 AND digest IN",
            repository_id,
            digests,
        )
        .await
    }

    async fn missing(
        &self,
        select: &str,
        repository_id: i64,
        digests: &[String],
    ) -> Result<Vec<String>> {
        let mut missing = Vec::new();
        for chunk in digests.chunks(200) {
            let marks: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 2)).collect();
            let sql = format!("{select} ({})", marks.join(","));
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(repository_id);
            for d in chunk {
                q = q.bind(d);
            }
            let rows = q.fetch_all(&self.pool).await?;
            let found: std::collections::HashSet<String> = rows
                .iter()
                .map(|r| r.try_get::<String, _>("digest"))
                .collect::<std::result::Result<_, _>>()?;
            missing.extend(chunk.iter().filter(|d| !found.contains(*d)).cloned());
        }
        missing.dedup();
        Ok(missing)
    }

    // ---- manifests and tags ---------------------------------------------------------------

    /// Stores a manifest (its bytes stored already under its digest), what it points at,
    /// and the tag, in one transaction. Storing a manifest again is not an error.
    pub async fn put_manifest(
        &self,
        repository_id: i64,
        m: &NewManifest<'_>,
        tag: Option<&str>,
    ) -> Result<()> {
        let now = now_ms();
        let row = &m.row;
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO registry_blobs (digest, size, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (digest) DO UPDATE SET created_at = excluded.created_at",
        )
        .bind(&row.digest)
        .bind(row.size)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO registry_blob_links (repository_id, digest, created_at) \
             VALUES ($1, $2, $3) ON CONFLICT (repository_id, digest) \
             DO UPDATE SET created_at = excluded.created_at",
        )
        .bind(repository_id)
        .bind(&row.digest)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let inserted = sqlx::query(
            "INSERT INTO registry_manifests (repository_id, digest, media_type, size, \
             artifact_type, subject, annotations, pushed_by, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (repository_id, digest) DO NOTHING",
        )
        .bind(repository_id)
        .bind(&row.digest)
        .bind(&row.media_type)
        .bind(row.size)
        .bind(&row.artifact_type)
        .bind(&row.subject)
        .bind(&row.annotations)
        .bind(&row.pushed_by)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        // What the manifest uses must still be linked (garbage collection may have removed
        // an old unused link since the caller looked); using it makes it young again.
        for child in m.children {
            let touched = sqlx::query(
                "UPDATE registry_blob_links SET created_at = $3 WHERE repository_id = $1 \
                 AND digest = $2",
            )
            .bind(repository_id)
            .bind(child)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            if touched.rows_affected() == 0 {
                return Err(crate::StoreError::NotFound(format!("blob {child}")));
            }
        }
        if inserted.rows_affected() > 0 {
            for child in m.children {
                sqlx::query(
                    "INSERT INTO registry_manifest_refs (repository_id, manifest_digest, \
                     child_digest) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                )
                .bind(repository_id)
                .bind(&row.digest)
                .bind(child)
                .execute(&mut *tx)
                .await?;
            }
        }
        if let Some(tag) = tag {
            upsert_tag(
                &mut tx,
                repository_id,
                tag,
                &row.digest,
                &row.pushed_by,
                now,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn manifest(&self, repository_id: i64, digest: &str) -> Result<Option<ManifestRow>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {MANIFEST_COLS} FROM registry_manifests WHERE repository_id = $1 AND digest = $2"
        )))
        .bind(repository_id)
        .bind(digest)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(ManifestRow::from_row).transpose()
    }

    /// The manifest a tag points at.
    pub async fn tagged_manifest(
        &self,
        repository_id: i64,
        tag: &str,
    ) -> Result<Option<ManifestRow>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {} FROM registry_tags t JOIN registry_manifests m ON m.repository_id = \
             t.repository_id AND m.digest = t.digest WHERE t.repository_id = $1 AND t.name = $2",
            MANIFEST_COLS
                .split(", ")
                .map(|c| format!("m.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        )))
        .bind(repository_id)
        .bind(tag)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(ManifestRow::from_row).transpose()
    }

    /// Records that a tag was pulled now (at most once an hour per tag: retention by last
    /// pull needs days, not seconds).
    pub async fn record_pull(&self, repository_id: i64, tag: &str) -> Result<()> {
        let now = now_ms();
        sqlx::query(
            "UPDATE registry_tags SET pulled_at = $3 WHERE repository_id = $1 AND name = $2 \
             AND (pulled_at IS NULL OR pulled_at < $4)",
        )
        .bind(repository_id)
        .bind(tag)
        .bind(now)
        .bind(now - PULL_RECORD_INTERVAL_MS)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Points a tag at a manifest the repository holds.
    pub async fn set_tag(
        &self,
        repository_id: i64,
        tag: &str,
        digest: &str,
        pushed_by: &str,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        upsert_tag(&mut tx, repository_id, tag, digest, pushed_by, now_ms()).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn tag(&self, repository_id: i64, tag: &str) -> Result<Option<TagRow>> {
        let row = sqlx::query(
            "SELECT name, digest, pushed_by, updated_at, pulled_at FROM registry_tags \
             WHERE repository_id = $1 AND name = $2",
        )
        .bind(repository_id)
        .bind(tag)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(tag_from_row).transpose()
    }

    /// Tags after `last`, sorted, at most `n`.
    pub async fn tags(
        &self,
        repository_id: i64,
        last: Option<&str>,
        n: i64,
    ) -> Result<Vec<TagRow>> {
        let rows = sqlx::query(
            "SELECT name, digest, pushed_by, updated_at, pulled_at FROM registry_tags \
             WHERE repository_id = $1 AND name > $2 ORDER BY name LIMIT $3",
        )
        .bind(repository_id)
        .bind(last.unwrap_or(""))
        .bind(n)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(tag_from_row).collect()
    }

    pub async fn delete_tag(&self, repository_id: i64, tag: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM registry_tags WHERE repository_id = $1 AND name = $2")
            .bind(repository_id)
            .bind(tag)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Removes a manifest from a repository with the tags that point at it.
    pub async fn delete_manifest(&self, repository_id: i64, digest: &str) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        for sql in [
            "DELETE FROM registry_tags WHERE repository_id = $1 AND digest = $2",
            "DELETE FROM registry_manifest_refs WHERE repository_id = $1 AND manifest_digest = $2",
            "DELETE FROM registry_blob_links WHERE repository_id = $1 AND digest = $2",
        ] {
            sqlx::query(sql)
                .bind(repository_id)
                .bind(digest)
                .execute(&mut *tx)
                .await?;
        }
        let done =
            sqlx::query("DELETE FROM registry_manifests WHERE repository_id = $1 AND digest = $2")
                .bind(repository_id)
                .bind(digest)
                .execute(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    /// The manifests whose subject is `subject`, oldest first.
    pub async fn referrers(&self, repository_id: i64, subject: &str) -> Result<Vec<ManifestRow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {MANIFEST_COLS} FROM registry_manifests WHERE repository_id = $1 AND \
             subject = $2 ORDER BY created_at, digest"
        )))
        .bind(repository_id)
        .bind(subject)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(ManifestRow::from_row).collect()
    }

    /// Marks a link as used now when it is older than `older_than` (ms): garbage collection
    /// spares links younger than its grace period, so a client that saw the blob (`HEAD`)
    /// and skips pushing it finds it still there when it puts its manifest.
    pub async fn touch_link(
        &self,
        repository_id: i64,
        digest: &str,
        older_than: i64,
    ) -> Result<()> {
        let now = now_ms();
        sqlx::query(
            "UPDATE registry_blob_links SET created_at = $3 WHERE repository_id = $1 AND \
             digest = $2 AND created_at < $4",
        )
        .bind(repository_id)
        .bind(digest)
        .bind(now)
        .bind(now - older_than)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    // ---- garbage collection ---------------------------------------------------------------

    /// Removes links made before `cutoff` (ms) that no manifest of their repository uses
    /// (layers pushed without a manifest, or left by a deleted one). How many.
    pub async fn gc_unreferenced_links(&self, cutoff: i64) -> Result<u64> {
        let done = sqlx::query(
            "DELETE FROM registry_blob_links WHERE created_at < $1 AND NOT EXISTS \
             (SELECT 1 FROM registry_manifests m WHERE m.repository_id = \
             registry_blob_links.repository_id AND m.digest = registry_blob_links.digest) \
             AND NOT EXISTS (SELECT 1 FROM registry_manifest_refs r WHERE r.repository_id = \
             registry_blob_links.repository_id AND r.child_digest = registry_blob_links.digest)",
        )
        .bind(cutoff)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Blobs recorded before `cutoff` that no repository links: garbage, at most `limit`.
    pub async fn gc_unlinked_blobs(&self, cutoff: i64, limit: i64) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT digest, size FROM registry_blobs b WHERE created_at < $1 AND NOT EXISTS \
             (SELECT 1 FROM registry_blob_links l WHERE l.digest = b.digest) \
             ORDER BY digest LIMIT $2",
        )
        .bind(cutoff)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("digest")?, r.try_get("size")?)))
            .collect()
    }

    /// Forgets a blob if it is still garbage (recorded before `cutoff`, linked nowhere);
    /// true when it did, and then its bytes may go.
    pub async fn gc_forget_blob(&self, digest: &str, cutoff: i64) -> Result<bool> {
        let done = sqlx::query(
            "DELETE FROM registry_blobs WHERE digest = $1 AND created_at < $2 AND NOT EXISTS \
             (SELECT 1 FROM registry_blob_links l WHERE l.digest = $1)",
        )
        .bind(digest)
        .bind(cutoff)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    // ---- promotion ------------------------------------------------------------------------

    /// Promotes manifest `digest` of repository `from` into repository `to` under `tag`,
    /// in one transaction: the manifest, the manifests an index lists, the manifests that
    /// refer to them (signatures, SBOMs) and the links to every blob they use. No byte is
    /// copied: both repositories then hold the same blobs. The number of manifests copied.
    pub async fn promote_manifest(
        &self,
        from: i64,
        digest: &str,
        to: i64,
        tag: &str,
        by: &str,
    ) -> Result<usize> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let mut queue = vec![digest.to_string()];
        let mut seen = std::collections::HashSet::new();
        while let Some(d) = queue.pop() {
            if !seen.insert(d.clone()) {
                continue;
            }
            let copied = sqlx::query(
                "INSERT INTO registry_manifests (repository_id, digest, media_type, size, \
                 artifact_type, subject, annotations, pushed_by, created_at) \
                 SELECT $1, digest, media_type, size, artifact_type, subject, annotations, $4, $5 \
                 FROM registry_manifests WHERE repository_id = $2 AND digest = $3 \
                 ON CONFLICT (repository_id, digest) DO NOTHING",
            )
            .bind(to)
            .bind(from)
            .bind(&d)
            .bind(by)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            if copied.rows_affected() == 0 && seen.len() == 1 {
                // The image itself must be in the source (the caller checked; a concurrent
                // delete may have removed it since).
                let exists = sqlx::query(
                    "SELECT 1 FROM registry_manifests WHERE repository_id = $1 AND digest = $2",
                )
                .bind(from)
                .bind(&d)
                .fetch_optional(&mut *tx)
                .await?;
                if exists.is_none() {
                    return Err(crate::StoreError::NotFound(format!("manifest {d}")));
                }
            }
            sqlx::query(
                "INSERT INTO registry_manifest_refs (repository_id, manifest_digest, child_digest) \
                 SELECT $1, manifest_digest, child_digest FROM registry_manifest_refs \
                 WHERE repository_id = $2 AND manifest_digest = $3 ON CONFLICT DO NOTHING",
            )
            .bind(to)
            .bind(from)
            .bind(&d)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO registry_blob_links (repository_id, digest, created_at) \
                 SELECT $1, child_digest, $4 FROM registry_manifest_refs \
                 WHERE repository_id = $2 AND manifest_digest = $3 \
                 ON CONFLICT (repository_id, digest) DO NOTHING",
            )
            .bind(to)
            .bind(from)
            .bind(&d)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO registry_blob_links (repository_id, digest, created_at) \
                 VALUES ($1, $2, $3) ON CONFLICT (repository_id, digest) DO NOTHING",
            )
            .bind(to)
            .bind(&d)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            // An index's manifests, and what refers to this one.
            let rows = sqlx::query(
                "SELECT r.child_digest AS d FROM registry_manifest_refs r JOIN registry_manifests m \
                 ON m.repository_id = r.repository_id AND m.digest = r.child_digest \
                 WHERE r.repository_id = $1 AND r.manifest_digest = $2 \
                 UNION SELECT digest AS d FROM registry_manifests \
                 WHERE repository_id = $1 AND subject = $2",
            )
            .bind(from)
            .bind(&d)
            .fetch_all(&mut *tx)
            .await?;
            for r in &rows {
                queue.push(r.try_get("d")?);
            }
        }
        upsert_tag(&mut tx, to, tag, digest, by, now).await?;
        tx.commit().await?;
        Ok(seen.len())
    }

    // ---- robot accounts -------------------------------------------------------------------

    #[allow(clippy::too_many_arguments)]
    pub async fn insert_robot(
        &self,
        project_id: i64,
        name: &str,
        token_hash: &str,
        hint: &str,
        actions: &str,
        expires_at: Option<i64>,
        created_by: &str,
    ) -> Result<i64> {
        let rows = sqlx::query(
            "INSERT INTO registry_robots (project_id, name, token_hash, hint, actions, \
             expires_at, created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             RETURNING id",
        )
        .bind(project_id)
        .bind(name)
        .bind(token_hash)
        .bind(hint)
        .bind(actions)
        .bind(expires_at)
        .bind(created_by)
        .bind(now_ms())
        .fetch_all(&self.pool)
        .await
        .map_err(|e| {
            super::unique_to_conflict(e, "the project has a robot account of this name")
        })?;
        returned_id(&rows)
    }

    pub async fn robots(&self, project_id: i64) -> Result<Vec<RobotRow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ROBOT_COLS} FROM registry_robots WHERE project_id = $1 ORDER BY id"
        )))
        .bind(project_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(RobotRow::from_row).collect()
    }

    pub async fn robot_by_token_hash(&self, hash: &str) -> Result<Option<RobotRow>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ROBOT_COLS} FROM registry_robots WHERE token_hash = $1"
        )))
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(RobotRow::from_row).transpose()
    }

    pub async fn revoke_robot(&self, project_id: i64, id: i64) -> Result<bool> {
        let done =
            sqlx::query("UPDATE registry_robots SET revoked = 1 WHERE project_id = $1 AND id = $2")
                .bind(project_id)
                .bind(id)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn touch_robot(&self, id: i64) -> Result<()> {
        sqlx::query("UPDATE registry_robots SET last_used_at = $2 WHERE id = $1")
            .bind(id)
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // ---- uploads --------------------------------------------------------------------------

    pub async fn insert_upload(&self, id: &str, repository_id: i64) -> Result<()> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO registry_uploads (id, repository_id, started_at, updated_at) \
             VALUES ($1, $2, $3, $3)",
        )
        .bind(id)
        .bind(repository_id)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The repository an upload in progress belongs to.
    pub async fn upload_repository(&self, id: &str) -> Result<Option<i64>> {
        let row = sqlx::query("SELECT repository_id FROM registry_uploads WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| Ok(r.try_get("repository_id")?)).transpose()
    }

    pub async fn delete_upload(&self, id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM registry_uploads WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Upload ids not touched since `before` (ms), to be removed.
    pub async fn stale_uploads(&self, before: i64) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT id FROM registry_uploads WHERE updated_at < $1")
            .bind(before)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok(r.try_get("id")?)).collect()
    }

    pub async fn touch_upload(&self, id: &str) -> Result<()> {
        sqlx::query("UPDATE registry_uploads SET updated_at = $2 WHERE id = $1")
            .bind(id)
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// How many repositories there are (for tests and metrics).
    pub async fn repository_count(&self) -> Result<i64> {
        let rows = sqlx::query("SELECT COUNT(*) FROM registry_repositories")
            .fetch_all(&self.pool)
            .await?;
        returned_id(&rows)
    }
}

fn tag_from_row(r: &AnyRow) -> Result<TagRow> {
    Ok(TagRow {
        name: r.try_get("name")?,
        digest: r.try_get("digest")?,
        pushed_by: r.try_get("pushed_by")?,
        updated_at: r.try_get("updated_at")?,
        pulled_at: r.try_get("pulled_at")?,
    })
}

async fn upsert_tag(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    repository_id: i64,
    tag: &str,
    digest: &str,
    pushed_by: &str,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO registry_tags (repository_id, name, digest, pushed_by, updated_at) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (repository_id, name) DO UPDATE SET \
         digest = excluded.digest, pushed_by = excluded.pushed_by, \
         updated_at = excluded.updated_at",
    )
    .bind(repository_id)
    .bind(tag)
    .bind(digest)
    .bind(pushed_by)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
