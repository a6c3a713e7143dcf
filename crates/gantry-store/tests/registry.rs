//! The registry's listings for the web UI (migration 0008's tables and the audit log) on
//! SQLite and, when the test command started one, PostgreSQL: repositories with their tag
//! count and last push, tags with their manifest's kind and the bytes of their image (an
//! index's images' blobs each once, manifests not counted), pages of them, and a project's
//! registry history.

use gantry_store::Db;
use gantry_store::db::{AuditEntry, ManifestRow, NewManifest, NewProject, PageReq};
use support::backends;

mod support;

async fn project(db: &Db, path: &str) -> i64 {
    db.insert_project(&NewProject {
        path: path.into(),
        git_url: String::new(),
        default_branch: "main".into(),
        pipeline_file: None,
    })
    .await
    .unwrap()
}

fn digest(c: char) -> String {
    format!("sha256:{}", c.to_string().repeat(64))
}

fn manifest(d: &str, media_type: &str, size: i64, artifact_type: Option<&str>) -> ManifestRow {
    ManifestRow {
        digest: d.to_string(),
        media_type: media_type.into(),
        size,
        artifact_type: artifact_type.map(String::from),
        subject: None,
        annotations: None,
        pushed_by: "alice".into(),
        created_at: 0,
    }
}

const IMAGE: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX: &str = "application/vnd.oci.image.index.v1+json";
const CONFIG: &str = "application/vnd.oci.image.config.v1+json";

#[tokio::test]
async fn repositories_and_tags_are_listed_with_their_sizes() {
    for (db, _dir) in backends("registry_lists").await {
        let p = project(&db, "team").await;
        let other = project(&db, "other").await;
        let web = db.ensure_repository(p, "team/web").await.unwrap();
        db.ensure_repository(p, "team/api").await.unwrap();
        db.ensure_repository(other, "other/x").await.unwrap();
        // Two images sharing a config and a layer, and an index over both.
        for (d, size) in [('c', 100), ('s', 1000), ('a', 10), ('b', 20)] {
            db.link_new_blob(web.id, &digest(d), size).await.unwrap();
        }
        let amd = [digest('c'), digest('s'), digest('a')];
        let arm = [digest('c'), digest('s'), digest('b')];
        db.put_manifest(
            web.id,
            &NewManifest {
                row: manifest(&digest('1'), IMAGE, 400, Some(CONFIG)),
                children: &amd,
            },
            Some("1.0"),
        )
        .await
        .unwrap();
        db.put_manifest(
            web.id,
            &NewManifest {
                row: manifest(&digest('2'), IMAGE, 400, Some(CONFIG)),
                children: &arm,
            },
            Some("1.0-arm"),
        )
        .await
        .unwrap();
        db.put_manifest(
            web.id,
            &NewManifest {
                row: manifest(&digest('3'), INDEX, 300, None),
                children: &[digest('1'), digest('2')],
            },
            Some("multi"),
        )
        .await
        .unwrap();

        let repos = db
            .repository_summaries(p, PageReq::new(Some(1), Some(50)))
            .await
            .unwrap();
        let names: Vec<_> = repos.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            ["team/api", "team/web"],
            "by name, this project's only"
        );
        assert_eq!((repos[0].tags, repos[0].last_push), (0, None));
        assert_eq!(repos[1].tags, 3);
        assert!(repos[1].last_push.is_some());
        let first = db
            .repository_summaries(p, PageReq::new(Some(1), Some(1)))
            .await
            .unwrap();
        assert_eq!(
            first.len(),
            2,
            "one more than the page: there is a next one"
        );

        let tags = db
            .tag_summaries(web.id, PageReq::new(Some(1), Some(50)))
            .await
            .unwrap();
        let by = |name: &str| tags.iter().find(|t| t.tag.name == name).unwrap().clone();
        assert_eq!(by("1.0").size, 1110, "config and layers");
        assert_eq!(by("1.0-arm").size, 1120);
        assert_eq!(
            by("multi").size,
            1130,
            "the images' blobs, shared ones once, no manifest"
        );
        assert_eq!(by("multi").media_type, INDEX);
        assert_eq!(by("1.0").artifact_type.as_deref(), Some(CONFIG));
        assert_eq!(by("1.0").tag.digest, digest('1'));
        // The most recently pushed first (not by name).
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        db.set_tag(web.id, "multi", &digest('3'), "bob")
            .await
            .unwrap();
        let tags = db
            .tag_summaries(web.id, PageReq::new(Some(1), Some(1)))
            .await
            .unwrap();
        assert_eq!(tags.len(), 2);
        assert_eq!(
            (tags[0].tag.name.as_str(), tags[0].tag.pushed_by.as_str()),
            ("multi", "bob")
        );
        let page2 = db
            .tag_summaries(web.id, PageReq::new(Some(3), Some(1)))
            .await
            .unwrap();
        assert_eq!(page2.len(), 1, "the last page");
    }
}

#[tokio::test]
async fn the_registry_history_is_the_projects_promotions_and_deletions() {
    for (db, _dir) in backends("registry_history").await {
        let p = project(&db, "team").await;
        let other = project(&db, "other").await;
        let entry = |action: &str, project: i64, target: &str| AuditEntry {
            actor: "maya".into(),
            action: action.into(),
            project_id: Some(project),
            target: target.into(),
            details: Some(r#"{"digest":"sha256:ab"}"#.into()),
            ip: None,
        };
        for e in [
            entry("registry.promote", p, "team/web:1.0"),
            entry("robot.create", p, "deployer"),
            entry("registry.delete", other, "other/x:1"),
            entry("registry.delete", p, "team/web:old"),
            entry("registry.retention", p, "team/web:build-1"),
        ] {
            db.audit(&e).await.unwrap();
        }
        let h = db
            .registry_history(p, PageReq::new(Some(1), Some(50)))
            .await
            .unwrap();
        let got: Vec<_> = h
            .iter()
            .map(|r| (r.entry.action.as_str(), r.entry.target.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("registry.retention", "team/web:build-1"),
                ("registry.delete", "team/web:old"),
                ("registry.promote", "team/web:1.0"),
            ],
            "newest first, this project's, registry actions only"
        );
        assert_eq!(
            h[0].entry.details.as_deref(),
            Some(r#"{"digest":"sha256:ab"}"#)
        );
        let page = db
            .registry_history(p, PageReq::new(Some(2), Some(2)))
            .await
            .unwrap();
        assert_eq!(page.len(), 1);
    }
}
