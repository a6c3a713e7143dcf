//! CI/CD variables of the instance and of projects, and protected refs (migration 0007).
//!
//! A variable's value is stored sealed ([`crate::Keyring::seal`]) and bound to its row with
//! [`variable_aad`] (`variable:<id>`): the row's id is known only once it is inserted, so the
//! row and its sealed value are written in one transaction. Nothing here ever sees the
//! plaintext: the engine seals and opens.

use super::{Db, now_ms, returned_id, unique_to_conflict};
use crate::Result;
use sqlx::Row;
use sqlx::any::AnyRow;

/// The row binding (associated data) of a variable's sealed value: `variable:<id>`. Ids are
/// never reused, so a value copied into another variable's row does not open.
pub fn variable_aad(id: i64) -> String {
    format!("variable:{id}")
}

/// A CI/CD variable as stored; `value` is sealed.
#[derive(Clone)]
pub struct VariableRow {
    pub id: i64,
    /// None for an instance variable.
    pub project_id: Option<i64>,
    pub key: String,
    /// Sealed with [`variable_aad`].
    pub value: String,
    pub masked: bool,
    pub protected: bool,
    /// `env_var` or `file`.
    pub variable_type: String,
    pub environment_scope: String,
    pub description: String,
    pub created_at: i64,
    pub updated_at: i64,
}

impl std::fmt::Debug for VariableRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VariableRow")
            .field("id", &self.id)
            .field("project_id", &self.project_id)
            .field("key", &self.key)
            .field("environment_scope", &self.environment_scope)
            .finish_non_exhaustive()
    }
}

impl VariableRow {
    fn from_row(r: &AnyRow) -> Result<VariableRow> {
        Ok(VariableRow {
            id: r.try_get("id")?,
            project_id: r.try_get("project_id")?,
            key: r.try_get("key")?,
            value: r.try_get("value")?,
            masked: r.try_get::<i64, _>("masked")? != 0,
            protected: r.try_get::<i64, _>("protected")? != 0,
            variable_type: r.try_get("variable_type")?,
            environment_scope: r.try_get("environment_scope")?,
            description: r.try_get("description")?,
            created_at: r.try_get("created_at")?,
            updated_at: r.try_get("updated_at")?,
        })
    }
}

const VARIABLE_COLS: &str = "id, project_id, key, value, masked, protected, variable_type, \
                             environment_scope, description, created_at, updated_at";

/// What describes a variable besides its value (a new one, or the new state of one).
#[derive(Debug, Clone)]
pub struct VariableFields {
    pub key: String,
    pub masked: bool,
    pub protected: bool,
    pub variable_type: String,
    pub environment_scope: String,
    pub description: String,
}

/// A protected branch or tag pattern of a project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtectedRefRow {
    pub id: i64,
    pub project_id: i64,
    pub pattern: String,
    /// `branch`, `tag` or `any`.
    pub kind: String,
    pub created_at: i64,
}

impl Db {
    /// Stores a new variable (of the instance when `project_id` is None); `seal` seals the
    /// value for the new row's id. A variable with the same key and scope is a conflict.
    pub async fn insert_variable(
        &self,
        project_id: Option<i64>,
        v: &VariableFields,
        seal: impl FnOnce(i64) -> String,
    ) -> Result<i64> {
        let mut tx = self.pool.begin().await?;
        let now = now_ms();
        let rows = sqlx::query(
            "INSERT INTO ci_variables (project_id, key, value, masked, protected, variable_type, \
             environment_scope, description, created_at, updated_at) \
             VALUES ($1, $2, '', $3, $4, $5, $6, $7, $8, $9) RETURNING id",
        )
        .bind(project_id)
        .bind(&v.key)
        .bind(v.masked as i64)
        .bind(v.protected as i64)
        .bind(&v.variable_type)
        .bind(&v.environment_scope)
        .bind(&v.description)
        .bind(now)
        .bind(now)
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| {
            unique_to_conflict(
                e,
                &format!(
                    "variable {} with environment scope '{}' exists: change it with PUT",
                    v.key, v.environment_scope
                ),
            )
        })?;
        let id = returned_id(&rows)?;
        sqlx::query("UPDATE ci_variables SET value = $1 WHERE id = $2")
            .bind(seal(id))
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(id)
    }

    /// The variables of a project (or of the instance), by key then scope.
    pub async fn variables(&self, project_id: Option<i64>) -> Result<Vec<VariableRow>> {
        let rows = match project_id {
            Some(p) => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {VARIABLE_COLS} FROM ci_variables WHERE project_id = $1 \
                     ORDER BY key, environment_scope"
                )))
                .bind(p)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {VARIABLE_COLS} FROM ci_variables WHERE project_id IS NULL \
                     ORDER BY key, environment_scope"
                )))
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.iter().map(VariableRow::from_row).collect()
    }

    /// What a job of the project may get: the instance's variables and the project's.
    pub async fn variables_for_project(&self, project_id: i64) -> Result<Vec<VariableRow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {VARIABLE_COLS} FROM ci_variables \
             WHERE project_id IS NULL OR project_id = $1 ORDER BY id"
        )))
        .bind(project_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(VariableRow::from_row).collect()
    }

    /// Changes a variable's fields, and its value when `seal` is given (sealed for its id);
    /// false when there is no such row.
    pub async fn update_variable(
        &self,
        id: i64,
        v: &VariableFields,
        sealed: Option<String>,
    ) -> Result<bool> {
        let conflict = format!(
            "variable {} with environment scope '{}' exists",
            v.key, v.environment_scope
        );
        let done = sqlx::query(
            "UPDATE ci_variables SET key = $1, masked = $2, protected = $3, variable_type = $4, \
             environment_scope = $5, description = $6, updated_at = $7, \
             value = COALESCE($8, value) WHERE id = $9",
        )
        .bind(&v.key)
        .bind(v.masked as i64)
        .bind(v.protected as i64)
        .bind(&v.variable_type)
        .bind(&v.environment_scope)
        .bind(&v.description)
        .bind(now_ms())
        .bind(sealed)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(|e| unique_to_conflict(e, &conflict))?;
        Ok(done.rows_affected() > 0)
    }

    /// Deletes a variable; false when there is no such row.
    pub async fn delete_variable(&self, id: i64) -> Result<bool> {
        let done = sqlx::query("DELETE FROM ci_variables WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Adds a protected pattern to a project; the same pattern and kind twice is a conflict.
    pub async fn insert_protected_ref(
        &self,
        project_id: i64,
        pattern: &str,
        kind: &str,
    ) -> Result<i64> {
        let rows = sqlx::query(
            "INSERT INTO protected_refs (project_id, pattern, kind, created_at) \
             VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(project_id)
        .bind(pattern)
        .bind(kind)
        .bind(now_ms())
        .fetch_all(&self.pool)
        .await
        .map_err(|e| {
            unique_to_conflict(e, &format!("'{pattern}' ({kind}) is protected already"))
        })?;
        returned_id(&rows)
    }

    /// A project's protected patterns, oldest first.
    pub async fn protected_refs(&self, project_id: i64) -> Result<Vec<ProtectedRefRow>> {
        let rows = sqlx::query(
            "SELECT id, project_id, pattern, kind, created_at FROM protected_refs \
             WHERE project_id = $1 ORDER BY id",
        )
        .bind(project_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ProtectedRefRow {
                    id: r.try_get("id")?,
                    project_id: r.try_get("project_id")?,
                    pattern: r.try_get("pattern")?,
                    kind: r.try_get("kind")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect()
    }

    /// Removes a project's protected pattern; false when it has none with this id.
    pub async fn delete_protected_ref(&self, project_id: i64, id: i64) -> Result<bool> {
        let done = sqlx::query("DELETE FROM protected_refs WHERE project_id = $1 AND id = $2")
            .bind(project_id)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}
