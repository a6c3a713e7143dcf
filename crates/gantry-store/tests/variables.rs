//! CI/CD variables and protected refs (migration 0007), on SQLite always
//! and on PostgreSQL when the test command has started one (`GANTRY_TEST_POSTGRES_URL`;
//! `GANTRY_REQUIRE_POSTGRES=1` makes its absence a failure).
//! A key is unique per owner and scope (the instance's NULL project included), a change
//! without a value keeps the sealed one, and a rotation reseals every value.

use gantry_store::db::{NewProject, VariableFields, variable_aad};
use gantry_store::secrets::ExposeSecret;
use gantry_store::{Db, Keyring, StoreError};

async fn backends(test: &str) -> Vec<(Db, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("gantry.db").display());
    let mut out = vec![(Db::connect(&url).await.unwrap(), Some(dir))];
    match std::env::var("GANTRY_TEST_POSTGRES_URL") {
        Ok(base) => {
            use sqlx::Connection;
            sqlx::any::install_default_drivers();
            let name = format!("gantry_vars_{}_{}", test, std::process::id());
            let mut admin = sqlx::AnyConnection::connect(&base).await.unwrap();
            for sql in [
                format!("DROP DATABASE IF EXISTS {name}"),
                format!("CREATE DATABASE {name}"),
            ] {
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .execute(&mut admin)
                    .await
                    .unwrap();
            }
            let (prefix, _) = base.rsplit_once('/').unwrap();
            out.push((
                Db::connect(&format!("{prefix}/{name}")).await.unwrap(),
                None,
            ));
        }
        Err(_) if std::env::var("GANTRY_REQUIRE_POSTGRES").as_deref() == Ok("1") => {
            panic!("GANTRY_REQUIRE_POSTGRES=1 but GANTRY_TEST_POSTGRES_URL is not set")
        }
        Err(_) => eprintln!("skipping PostgreSQL: GANTRY_TEST_POSTGRES_URL is not set"),
    }
    out
}

async fn project(db: &Db, path: &str) -> i64 {
    db.insert_project(&NewProject {
        path: path.into(),
        git_url: "/srv/git/app".into(),
        default_branch: "main".into(),
        pipeline_file: None,
    })
    .await
    .unwrap()
}

fn fields(key: &str, scope: &str) -> VariableFields {
    VariableFields {
        key: key.into(),
        masked: true,
        protected: false,
        variable_type: "env_var".into(),
        environment_scope: scope.into(),
        description: String::new(),
    }
}

#[tokio::test]
async fn variables_are_unique_per_owner_and_scope_and_resealed_by_a_rotation() {
    for (db, _dir) in backends("variables").await {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("secrets.key");
        let old = Keyring::create_file(&keys).unwrap();
        let old = &old;
        let seal =
            |v: &'static str| move |id: i64| old.seal(v.as_bytes(), variable_aad(id).as_bytes());
        let p = project(&db, "g/a").await;
        let q = project(&db, "g/b").await;
        let i = db
            .insert_variable(None, &fields("TOKEN", "*"), seal("instance-1"))
            .await
            .unwrap();
        let err = db
            .insert_variable(None, &fields("TOKEN", "*"), seal("instance-2"))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err}");
        let a = db
            .insert_variable(Some(p), &fields("TOKEN", "*"), seal("project-1"))
            .await
            .unwrap();
        db.insert_variable(Some(p), &fields("TOKEN", "review/*"), seal("review"))
            .await
            .unwrap();
        db.insert_variable(Some(q), &fields("TOKEN", "*"), seal("other"))
            .await
            .unwrap();
        assert_eq!(db.variables(None).await.unwrap().len(), 1);
        assert_eq!(db.variables(Some(p)).await.unwrap().len(), 2);
        // A job of p sees the instance's and p's, not q's.
        assert_eq!(db.variables_for_project(p).await.unwrap().len(), 3);

        // A change without a value keeps the sealed one.
        let before = db.variables(Some(p)).await.unwrap()[0].value.clone();
        let mut f = fields("TOKEN", "*");
        f.description = "deploys".into();
        assert!(db.update_variable(a, &f, None).await.unwrap());
        let row = db.variables(Some(p)).await.unwrap().remove(0);
        assert_eq!(
            (row.value, row.description),
            (before, "deploys".to_string())
        );
        // Moving it onto another definition's key and scope is a conflict.
        let err = db
            .update_variable(a, &fields("TOKEN", "review/*"), None)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err}");

        Keyring::rotate_file(&keys).unwrap();
        let new = Keyring::load_file(&keys).unwrap();
        assert_eq!(db.reseal_all(&new).await.unwrap().written, 4);
        let rows = db.variables_for_project(p).await.unwrap();
        for r in &rows {
            assert!(r.value.starts_with("gsec1:k2:"), "{}", r.value);
        }
        let inst = rows.iter().find(|r| r.id == i).unwrap();
        let v = new
            .open_string(&inst.value, variable_aad(i).as_bytes())
            .unwrap();
        assert_eq!(v.expose_secret(), "instance-1");
        // Bound to its row: another row's id does not open it.
        assert!(
            new.open_string(&inst.value, variable_aad(a).as_bytes())
                .is_err()
        );

        assert!(db.delete_variable(a).await.unwrap());
        assert!(!db.delete_variable(a).await.unwrap());
    }
}

#[tokio::test]
async fn protected_refs_are_unique_per_project_pattern_and_kind() {
    for (db, _dir) in backends("protected").await {
        let p = project(&db, "g/a").await;
        let r = db
            .insert_protected_ref(p, "release/*", "branch")
            .await
            .unwrap();
        db.insert_protected_ref(p, "release/*", "tag")
            .await
            .unwrap();
        let err = db
            .insert_protected_ref(p, "release/*", "branch")
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err}");
        assert_eq!(db.protected_refs(p).await.unwrap().len(), 2);
        assert!(!db.delete_protected_ref(p + 1, r).await.unwrap());
        assert!(db.delete_protected_ref(p, r).await.unwrap());
        assert_eq!(db.protected_refs(p).await.unwrap().len(), 1);
    }
}
