//! The outbox, forge settings and notification channels (migration 0004), on SQLite always
//! and on PostgreSQL when the test command has started one (`GANTRY_TEST_POSTGRES_URL`;
//! `GANTRY_REQUIRE_POSTGRES=1` makes its absence a failure).

use gantry_store::db::outbox::{ForgeRow, NewChannel, NewOutbox, channel_url_aad, forge_token_aad};
use gantry_store::db::{NewProject, PageReq, now_ms};
use gantry_store::secrets::ExposeSecret;
use gantry_store::{Db, Keyring};
use support::backends;

mod support;

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

fn message(project_id: i64, key: &str, group: &str) -> NewOutbox {
    NewOutbox {
        project_id,
        pipeline_id: None,
        job_id: None,
        kind: "chat".into(),
        channel_id: None,
        dedupe_key: key.into(),
        group_key: group.into(),
        payload: "{}".into(),
    }
}

#[tokio::test]
async fn a_key_is_queued_once_and_a_row_is_claimed_once() {
    for (db, _dir) in backends("outbox_once").await {
        let p = project(&db, "g/a").await;
        assert!(
            db.enqueue(&message(p, "notify:1:pipeline:1:failed:5", "a"))
                .await
                .unwrap()
        );
        assert!(
            !db.enqueue(&message(p, "notify:1:pipeline:1:failed:5", "a"))
                .await
                .unwrap()
        );
        assert!(
            db.enqueue(&message(p, "status:pipeline:1:running:7", "g"))
                .await
                .unwrap()
        );
        assert!(
            db.enqueue(&message(p, "status:pipeline:1:success:8", "g"))
                .await
                .unwrap()
        );
        let rows = db
            .outbox_of_project(p, PageReq::new(None, None))
            .await
            .unwrap();
        assert_eq!(rows.len(), 3);

        // Rows of a group being sent are left; the others are claimed once.
        let now = now_ms();
        let claimed = db.claim_due(now, 10, &|g| g == "g").await.unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!(
            (claimed[0].state.as_str(), claimed[0].attempts),
            ("sending", 1)
        );
        assert!(
            db.claim_due(now, 10, &|g| g == "g")
                .await
                .unwrap()
                .is_empty()
        );

        // A retry is due later; a process that died mid-send leaves `sending`, queued again.
        db.outbox_retry(claimed[0].id, now + 60_000, "HTTP 503")
            .await
            .unwrap();
        assert!(
            db.claim_due(now, 10, &|g| g == "g")
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            db.outbox_next_due()
                .await
                .unwrap()
                .is_some_and(|t| t <= now)
        );
        let g = db.claim_due(now, 10, &|_| false).await.unwrap();
        assert_eq!(g.len(), 2);
        assert_eq!(
            db.outbox_newer_in_group("g", g[0].id).await.unwrap(),
            Some(g[1].id)
        );
        assert_eq!(db.outbox_newer_in_group("g", g[1].id).await.unwrap(), None);
        assert_eq!(db.outbox_requeue_sending().await.unwrap(), 2);
        db.outbox_finish(g[0].id, "superseded", Some("superseded"))
            .await
            .unwrap();
        let rows = db
            .outbox_of_project(p, PageReq::new(None, None))
            .await
            .unwrap();
        let states: Vec<&str> = rows.iter().map(|r| r.state.as_str()).collect();
        assert_eq!(states, ["queued", "superseded", "queued"]);
        assert_eq!(rows[2].last_error.as_deref(), Some("HTTP 503"));
    }
}

#[tokio::test]
async fn forge_tokens_and_webhook_urls_are_resealed_by_a_rotation() {
    for (db, _dir) in backends("outbox_reseal").await {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("secrets.key");
        let old = Keyring::create_file(&keys).unwrap();
        let p = project(&db, "g/a").await;
        let token = old.seal(b"glpat-1", forge_token_aad(p).as_bytes());
        db.set_forge(&ForgeRow {
            project_id: p,
            kind: "gitlab".into(),
            api_url: "https://gitlab.example.com".into(),
            repository: "g/a".into(),
            token,
            job_statuses: false,
            updated_at: 0,
        })
        .await
        .unwrap();
        let c = db
            .insert_channel_sealed(
                &NewChannel {
                    project_id: p,
                    kind: "slack".into(),
                    recipients: None,
                    events: "failed".into(),
                },
                |id| Some(old.seal(b"https://hooks/x", channel_url_aad(id).as_bytes())),
            )
            .await
            .unwrap();
        assert_eq!(db.notify_targets(p).await.unwrap(), (true, 1));

        Keyring::rotate_file(&keys).unwrap();
        let new = Keyring::load_file(&keys).unwrap();
        assert_eq!(db.reseal_all(&new).await.unwrap().written, 2);
        let f = db.forge(p).await.unwrap().unwrap();
        assert!(f.token.starts_with("gsec1:k2:"), "{}", f.token);
        let t = new
            .open_string(&f.token, forge_token_aad(p).as_bytes())
            .unwrap();
        assert_eq!(t.expose_secret(), "glpat-1");
        let url = db.channel(c).await.unwrap().unwrap().url.unwrap();
        let u = new
            .open_string(&url, channel_url_aad(c).as_bytes())
            .unwrap();
        assert_eq!(u.expose_secret(), "https://hooks/x");

        assert!(db.delete_channel(p, c).await.unwrap());
        assert!(db.delete_forge(p).await.unwrap());
        assert_eq!(db.notify_targets(p).await.unwrap(), (false, 0));
    }
}
