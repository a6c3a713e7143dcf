//! The store's database behaviour, on SQLite always and on PostgreSQL when the test command
//! has started one (`GANTRY_TEST_POSTGRES_URL`; `GANTRY_REQUIRE_POSTGRES=1` makes its absence
//! a failure instead of a skip).

use gantry_api::{FailureReason, JobStatus, PipelineStatus};
use gantry_store::db::{
    Backend, DeliveryEnd, JobEnd, NewAgent, NewDelivery, NewJob, NewPipeline, NewProject, PageReq,
    ProjectSecrets, SealedColumn, migrations, now_ms, project_aad,
};
use gantry_store::secrets::ExposeSecret;
use gantry_store::{Db, Keyring, StoreError};
use std::collections::BTreeMap;
use support::backends;

mod support;

fn project(path: &str) -> NewProject {
    NewProject {
        path: path.into(),
        git_url: "/srv/git/app".into(),
        default_branch: "main".into(),
        pipeline_file: None,
    }
}

fn pipeline(project_id: i64, git_ref: &str) -> NewPipeline {
    NewPipeline {
        project_id,
        git_ref: git_ref.into(),
        sha: "a".repeat(40),
        status: PipelineStatus::Created,
        source: "api".into(),
        parent_job_id: None,
        trigger_json: "{}".into(),
        errors: None,
        auto_cancel: None,
    }
}

fn job(pipeline_id: i64, project_id: i64, name: &str, status: JobStatus) -> NewJob {
    NewJob {
        pipeline_id,
        project_id,
        name: name.into(),
        stage: "test".into(),
        stage_index: 1,
        position: 0,
        status,
        attempt: 1,
        definition: "{}".into(),
        tags: vec!["linux".into()],
        resource_group: None,
        allow_failure: false,
        run_at: None,
    }
}

#[tokio::test]
async fn migrations_declare_the_same_tables_columns_and_indexes() {
    fn shape(sql: &str) -> BTreeMap<String, Vec<String>> {
        let mut out = BTreeMap::new();
        let mut current: Option<String> = None;
        for line in sql.lines().map(str::trim) {
            if let Some(rest) = line.strip_prefix("CREATE TABLE ") {
                current = Some(rest.trim_end_matches(" (").trim().to_string());
                out.insert(current.clone().unwrap(), Vec::new());
            } else if let Some(rest) = line.strip_prefix("ALTER TABLE ") {
                // `ALTER TABLE t ADD COLUMN c …`: a column more in t.
                let words: Vec<&str> = rest.split_whitespace().collect();
                if let [table, "ADD", "COLUMN", col, ..] = words.as_slice() {
                    out.entry(format!("{table} (altered)"))
                        .or_insert_with(Vec::new)
                        .push(col.to_string());
                }
            } else if let Some(rest) = line
                .strip_prefix("CREATE INDEX ")
                .or_else(|| line.strip_prefix("CREATE UNIQUE INDEX "))
            {
                // An index: its name, table and columns.
                let name = rest.split_whitespace().next().unwrap_or_default();
                out.insert(format!("index {name}"), vec![rest.to_string()]);
            } else if line.starts_with(')') {
                current = None;
            } else if let Some(t) = &current
                && let Some(col) = line.split_whitespace().next()
            {
                out.get_mut(t).unwrap().push(col.to_string());
            }
        }
        out
    }
    let (s, p) = (migrations(Backend::Sqlite), migrations(Backend::Postgres));
    assert_eq!(s.len(), p.len(), "both backends have the same migrations");
    for (a, b) in s.iter().zip(p) {
        assert_eq!((a.0, a.1), (b.0, b.1), "same numbering and names");
        let (sa, sb) = (shape(a.2), shape(b.2));
        assert!(!sa.is_empty());
        assert_eq!(sa, sb, "migration {} differs between backends", a.0);
    }
}

#[tokio::test]
async fn projects_are_unique_by_path_and_paged() {
    for (db, _dir) in backends("projects").await {
        let a = db.insert_project(&project("group/a")).await.unwrap();
        let err = db.insert_project(&project("group/a")).await.unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err}");
        for i in 0..4 {
            db.insert_project(&project(&format!("group/p{i}")))
                .await
                .unwrap();
        }
        assert_eq!(db.project(a).await.unwrap().unwrap().path, "group/a");
        assert_eq!(
            db.project_by_path("group/p2").await.unwrap().unwrap().path,
            "group/p2"
        );
        assert!(db.project(9999).await.unwrap().is_none());
        let page = PageReq::new(Some(1), Some(2));
        let (items, next) = page.finish(db.projects(page).await.unwrap());
        assert_eq!((items.len(), next), (2, Some(2)));
        let page = PageReq::new(Some(3), Some(2));
        let (items, next) = page.finish(db.projects(page).await.unwrap());
        assert_eq!((items.len(), next), (1, None));
        db.close().await;
    }
}

#[tokio::test]
async fn job_transitions_are_conditional() {
    for (db, _dir) in backends("transitions").await {
        let p = db.insert_project(&project("g/app")).await.unwrap();
        let (pl, ids) = db
            .create_pipeline(
                &pipeline(p, "main"),
                &[
                    job(0, p, "build", JobStatus::Pending),
                    job(0, p, "test", JobStatus::Created),
                ],
            )
            .await
            .unwrap();
        let jobs = db.jobs_of_pipeline(pl).await.unwrap();
        assert_eq!(jobs.len(), 2);
        let (build, test) = (jobs[0].id, jobs[1].id);
        assert_eq!(ids, vec![build, test]);
        assert!(jobs.iter().all(|j| j.pipeline_id == pl));
        assert_eq!(jobs[0].tags, vec!["linux".to_string()]);
        assert!(jobs[0].queued_at.is_some());

        let agent = db
            .insert_agent(&NewAgent {
                name: "a1".into(),
                token_hash: "h1".into(),
                tags: vec!["linux".into()],
                run_untagged: true,
                executor: "shell".into(),
                concurrency: 2,
                version: "0.1".into(),
            })
            .await
            .unwrap();
        // Only a pending job can be assigned, once.
        assert!(
            !db.assign_job(test, agent, "t1", now_ms() + 1000)
                .await
                .unwrap()
        );
        assert!(
            db.assign_job(build, agent, "t2", now_ms() - 1)
                .await
                .unwrap()
        );
        assert!(
            !db.assign_job(build, agent, "t3", now_ms() + 1000)
                .await
                .unwrap()
        );
        assert_eq!(db.job_by_token_hash("t2").await.unwrap().unwrap().id, build);
        assert_eq!(db.running_jobs_of_agent(agent).await.unwrap().len(), 1);
        // The lease ran out; a heartbeat extends it.
        assert_eq!(db.expired_leases(now_ms()).await.unwrap().len(), 1);
        db.extend_leases(agent, now_ms() + 60_000).await.unwrap();
        assert!(db.expired_leases(now_ms()).await.unwrap().is_empty());

        // Cancel wins over a late result: the finish that comes second does nothing.
        assert!(
            db.transition(build, &[JobStatus::Running], JobStatus::Canceled)
                .await
                .unwrap()
        );
        let end = JobEnd {
            exit_code: Some(0),
            log_size: 12,
            dotenv: vec![("A".into(), "1".into())],
            ..JobEnd::status(JobStatus::Success)
        };
        assert!(
            !db.finish_job(build, &[JobStatus::Running], &end)
                .await
                .unwrap()
        );
        let row = db.job(build).await.unwrap().unwrap();
        assert_eq!(row.status, JobStatus::Canceled);
        assert!(row.finished_at.is_some());

        // Retry: the old attempt is marked, the new one is created.
        let mut again = job(pl, p, "build", JobStatus::Pending);
        again.attempt = 2;
        let new = db.retry_job(build, &again).await.unwrap();
        let jobs = db.jobs_of_pipeline(pl).await.unwrap();
        assert!(jobs.iter().find(|j| j.id == build).unwrap().retried);
        assert_eq!(jobs.iter().find(|j| j.id == new).unwrap().attempt, 2);
        assert!(
            db.assign_job(new, agent, "t4", now_ms() + 60_000)
                .await
                .unwrap()
        );
        let fail = JobEnd {
            exit_code: Some(3),
            log_size: 5,
            dotenv: vec![("A".into(), "1".into())],
            ..JobEnd::failed(FailureReason::ScriptFailure)
        };
        assert!(
            db.finish_job(new, &[JobStatus::Running], &fail)
                .await
                .unwrap()
        );
        let row = db.job(new).await.unwrap().unwrap();
        assert_eq!(row.status, JobStatus::Failed);
        assert_eq!(row.failure_reason, Some(FailureReason::ScriptFailure));
        assert_eq!(row.exit_code, Some(3));
        assert_eq!(row.dotenv, vec![("A".to_string(), "1".to_string())]);
        assert_eq!(row.log_size, 5);
        assert!(row.lease_until.is_none());

        let counts: BTreeMap<String, i64> = db.job_counts().await.unwrap().into_iter().collect();
        assert_eq!(counts.get("failed"), Some(&1));
        assert_eq!(counts.get("created"), Some(&1));
        assert_eq!(
            counts.get("canceled"),
            None,
            "retried attempts are not counted"
        );
        db.close().await;
    }
}

#[tokio::test]
async fn manual_delayed_and_pipeline_status() {
    for (db, _dir) in backends("manual").await {
        let p = db.insert_project(&project("g/app")).await.unwrap();
        let pl = db
            .create_pipeline(&pipeline(p, "main"), &[])
            .await
            .unwrap()
            .0;
        let m = db
            .insert_job(&job(pl, p, "deploy", JobStatus::Created))
            .await
            .unwrap();
        let d = db
            .insert_job(&job(pl, p, "later", JobStatus::Created))
            .await
            .unwrap();
        assert!(
            !db.play_job(m, "alice").await.unwrap(),
            "only a manual job is played"
        );
        assert!(
            db.transition(m, &[JobStatus::Created], JobStatus::Manual)
                .await
                .unwrap()
        );
        assert!(db.play_job(m, "alice").await.unwrap());
        let row = db.job(m).await.unwrap().unwrap();
        assert_eq!(
            (row.status, row.played_by.as_deref()),
            (JobStatus::Pending, Some("alice"))
        );

        assert!(db.schedule_job(d, now_ms() + 60_000).await.unwrap());
        assert!(db.due_jobs(now_ms()).await.unwrap().is_empty());
        assert_eq!(db.due_jobs(now_ms() + 120_000).await.unwrap().len(), 1);

        assert!(
            db.set_pipeline_status(pl, PipelineStatus::Running)
                .await
                .unwrap()
        );
        assert!(
            !db.set_pipeline_status(pl, PipelineStatus::Running)
                .await
                .unwrap()
        );
        let row = db.pipeline(pl).await.unwrap().unwrap();
        assert!(row.started_at.is_some() && row.finished_at.is_none());
        assert_eq!(db.unfinished_pipelines().await.unwrap().len(), 1);
        let newer = db
            .create_pipeline(&pipeline(p, "main"), &[])
            .await
            .unwrap()
            .0;
        assert_eq!(
            db.unfinished_pipelines_on_ref(p, "main", newer)
                .await
                .unwrap()
                .len(),
            1
        );
        assert!(
            db.set_pipeline_status(pl, PipelineStatus::Success)
                .await
                .unwrap()
        );
        let row = db.pipeline(pl).await.unwrap().unwrap();
        assert!(row.finished_at.is_some());
        db.set_pipeline_errors(newer, "line 3: bad").await.unwrap();
        let row = db.pipeline(newer).await.unwrap().unwrap();
        assert_eq!(row.status, PipelineStatus::Failed);
        assert_eq!(row.errors.as_deref(), Some("line 3: bad"));
        db.set_setting("k", "v1").await.unwrap();
        db.set_setting("k", "v2").await.unwrap();
        assert_eq!(db.setting("k").await.unwrap().as_deref(), Some("v2"));
        db.close().await;
    }
}

#[tokio::test]
async fn data_survives_reopening_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("gantry.db").display());
    let db = Db::connect(&url).await.unwrap();
    let p = db.insert_project(&project("g/keep")).await.unwrap();
    db.close().await;
    let db = Db::connect(&url).await.unwrap();
    assert_eq!(db.project(p).await.unwrap().unwrap().path, "g/keep");
    db.close().await;
}

#[tokio::test]
async fn a_bad_url_says_what_to_use() {
    let err = Db::connect("mysql://x").await.unwrap_err().to_string();
    assert!(
        err.contains("sqlite://") && err.contains("postgres://"),
        "{err}"
    );
}

fn delivery(project_id: i64, id: Option<&str>, payload: &str, claimed: bool) -> NewDelivery {
    NewDelivery {
        project_id,
        forge: "github".into(),
        event: "push".into(),
        delivery_id: id.map(str::to_string),
        payload_sha256: payload.into(),
        claimed,
        status: if claimed { 202 } else { 403 },
        outcome: if claimed { "accepted" } else { "refused" }.into(),
        pipeline_id: None,
        error: None,
    }
}

#[tokio::test]
async fn a_delivery_is_claimed_once_by_id_and_by_payload() {
    for (db, _dir) in backends("deliveries").await {
        let p = db.insert_project(&project("g/hooks")).await.unwrap();
        let other = db.insert_project(&project("g/other")).await.unwrap();
        // Refusals never claim: the same id and payload may be refused many times.
        for _ in 0..2 {
            db.insert_delivery(&delivery(p, Some("d1"), "aa", false))
                .await
                .unwrap();
        }
        let first = db
            .insert_delivery(&delivery(p, Some("d1"), "aa", true))
            .await
            .unwrap();
        for (id, payload) in [(Some("d1"), "bb"), (Some("d2"), "aa"), (None, "aa")] {
            let err = db
                .insert_delivery(&delivery(p, id, payload, true))
                .await
                .unwrap_err();
            assert!(
                matches!(err, StoreError::Conflict(_)),
                "{id:?} {payload}: {err}"
            );
        }
        // Another project has its own deliveries; deliveries without an id claim by payload.
        db.insert_delivery(&delivery(other, Some("d1"), "aa", true))
            .await
            .unwrap();
        db.insert_delivery(&delivery(p, None, "cc", true))
            .await
            .unwrap();
        db.insert_delivery(&delivery(p, None, "dd", true))
            .await
            .unwrap();

        // A failed delivery gives its claim back; a created one keeps it.
        db.finish_delivery(
            first,
            &DeliveryEnd {
                status: 502,
                outcome: "failed".into(),
                pipeline_id: None,
                error: Some("the remote did not answer".into()),
                keep_claim: false,
            },
        )
        .await
        .unwrap();
        let again = db
            .insert_delivery(&delivery(p, Some("d1"), "aa", true))
            .await
            .unwrap();
        db.finish_delivery(
            again,
            &DeliveryEnd {
                status: 200,
                outcome: "ignored".into(),
                pipeline_id: None,
                error: None,
                keep_claim: true,
            },
        )
        .await
        .unwrap();
        assert!(
            db.insert_delivery(&delivery(p, Some("d1"), "aa", true))
                .await
                .is_err()
        );

        let page = PageReq::new(Some(1), Some(3));
        let (rows, next) = page.finish(db.deliveries(p, page).await.unwrap());
        assert_eq!(next, Some(2));
        assert_eq!(rows[0].id, again, "newest first");
        assert_eq!((rows[0].status, rows[0].outcome.as_str()), (200, "ignored"));
        assert!(rows[0].claimed);
        let all = db
            .deliveries(p, PageReq::new(Some(1), Some(100)))
            .await
            .unwrap();
        let failed = all.iter().find(|d| d.id == first).unwrap();
        assert_eq!((failed.status, failed.claimed), (502, false));
        assert_eq!(failed.error.as_deref(), Some("the remote did not answer"));
        assert_eq!(all.len(), 6);
        db.close().await;
    }
}

#[tokio::test]
async fn reseal_all_moves_every_value_to_the_current_key_and_seals_plaintext() {
    for (db, _dir) in backends("reseal").await {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("secrets.key");
        let old = Keyring::create_file(&keys).unwrap();
        let sealed = |id: i64, col: SealedColumn, v: &str| {
            Some(old.seal(v.as_bytes(), project_aad(id, col).as_bytes()))
        };
        let a = db
            .insert_project_sealed(&project("g/a"), |id| ProjectSecrets {
                credentials: sealed(id, SealedColumn::Credentials, r#"{"password":"pw-a"}"#),
                webhook_secret: sealed(id, SealedColumn::WebhookSecret, "hook-a"),
            })
            .await
            .unwrap();
        let b = db.insert_project(&project("g/b")).await.unwrap();
        // Plaintext credentials, as stored before encryption at rest.
        sqlx::query("UPDATE projects SET credentials = $1 WHERE id = $2")
            .bind(r#"{"password":"pw-b"}"#)
            .bind(b)
            .execute(db.pool())
            .await
            .unwrap();

        // Already current: nothing but the plaintext to write.
        let done = db.reseal_all(&old).await.unwrap();
        assert_eq!((done.written, done.plaintext), (1, 1));
        db.scrub().await.unwrap();
        let row_b = db.project(b).await.unwrap().unwrap();
        let cb = row_b.credentials.unwrap();
        assert!(cb.starts_with("gsec1:k1:"), "{cb}");
        let aad_b = project_aad(b, SealedColumn::Credentials);
        assert_eq!(
            old.open_string(&cb, aad_b.as_bytes())
                .unwrap()
                .expose_secret(),
            r#"{"password":"pw-b"}"#
        );

        // A new key: all three values move to it, and still open.
        Keyring::rotate_file(&keys).unwrap();
        let new = Keyring::load_file(&keys).unwrap();
        let done = db.reseal_all(&new).await.unwrap();
        assert_eq!((done.written, done.plaintext), (3, 0));
        assert_eq!(db.reseal_all(&new).await.unwrap().written, 0);
        let row_a = db.project(a).await.unwrap().unwrap();
        let hook = row_a.webhook_secret.unwrap();
        assert!(hook.starts_with("gsec1:k2:"), "{hook}");
        let aad = project_aad(a, SealedColumn::WebhookSecret);
        assert_eq!(
            new.open_string(&hook, aad.as_bytes())
                .unwrap()
                .expose_secret(),
            "hook-a"
        );

        // A value moved to another row fails the whole sweep, naming the row, and changes
        // nothing.
        sqlx::query("UPDATE projects SET webhook_secret = $1 WHERE id = $2")
            .bind(&hook)
            .bind(b)
            .execute(db.pool())
            .await
            .unwrap();
        Keyring::rotate_file(&keys).unwrap();
        let newer = Keyring::load_file(&keys).unwrap();
        let err = db.reseal_all(&newer).await.unwrap_err();
        assert!(matches!(err, StoreError::Secret { .. }), "{err}");
        assert!(
            err.to_string()
                .starts_with(&format!("project {b}, webhook_secret: cannot decrypt")),
            "{err}"
        );
        let row_a = db.project(a).await.unwrap().unwrap();
        assert!(row_a.credentials.unwrap().starts_with("gsec1:k2:"));
        db.close().await;
    }
}

#[tokio::test]
async fn changes_are_broadcast_and_the_ui_lists_are_one_query_each() {
    use gantry_store::db::Change;
    use gantry_store::db::ui::PipelineFilter;
    for (db, _dir) in backends("ui_lists").await {
        let p = db.insert_project(&project("g/ui")).await.unwrap();
        let mut rx = db.subscribe();
        let (a, ids) = db
            .create_pipeline(
                &pipeline(p, "main"),
                &[job(0, p, "build", JobStatus::Pending)],
            )
            .await
            .unwrap();
        assert_eq!(rx.recv().await.unwrap(), Change::Pipeline(a));
        assert!(
            db.transition(ids[0], &[JobStatus::Pending], JobStatus::Canceled)
                .await
                .unwrap()
        );
        assert_eq!(rx.recv().await.unwrap(), Change::Job(ids[0]));
        // A transition that did not happen says nothing.
        assert!(
            !db.transition(ids[0], &[JobStatus::Pending], JobStatus::Failed)
                .await
                .unwrap()
        );
        db.set_pipeline_status(a, PipelineStatus::Canceled)
            .await
            .unwrap();
        assert_eq!(rx.recv().await.unwrap(), Change::Pipeline(a));

        let mut child = pipeline(p, "main");
        child.parent_job_id = Some(ids[0]);
        child.source = "parent_pipeline".into();
        let (c, _) = db.create_pipeline(&child, &[]).await.unwrap();
        let (b, _) = db
            .create_pipeline(&pipeline(p, "feature"), &[])
            .await
            .unwrap();
        let (d, _) = db.create_pipeline(&pipeline(p, "main"), &[]).await.unwrap();
        db.set_pipeline_status(d, PipelineStatus::Failed)
            .await
            .unwrap();

        // The default branch's newest pipeline, children left out.
        let last = db.last_default_branch_pipelines(&[p]).await.unwrap();
        assert_eq!(last.iter().map(|r| r.id).collect::<Vec<_>>(), vec![d]);
        // Each ref's newest.
        let heads = db.ref_heads(p, 10).await.unwrap();
        assert_eq!(heads.iter().map(|r| r.id).collect::<Vec<_>>(), vec![d, b]);
        // Filters.
        let all = PageReq::new(Some(1), Some(10));
        let ids_of = |rows: Vec<gantry_store::db::PipelineRow>| {
            rows.iter().map(|r| r.id).collect::<Vec<_>>()
        };
        let f = PipelineFilter {
            git_ref: Some("main".into()),
            ..Default::default()
        };
        assert_eq!(
            ids_of(db.pipelines_filtered(p, &f, all).await.unwrap()),
            vec![d, c, a]
        );
        let f = PipelineFilter {
            git_ref: Some("main".into()),
            status: Some("failed".into()),
            source: Some("api".into()),
        };
        assert_eq!(
            ids_of(db.pipelines_filtered(p, &f, all).await.unwrap()),
            vec![d]
        );
        let page2 = PageReq::new(Some(2), Some(2));
        assert_eq!(
            ids_of(
                db.pipelines_filtered(p, &PipelineFilter::default(), page2)
                    .await
                    .unwrap()
            ),
            vec![c, a]
        );
        assert_eq!(ids_of(db.child_pipelines(a).await.unwrap()), vec![c]);
        // The graph's jobs, and their definitions apart.
        let g = db.graph_jobs(a).await.unwrap();
        assert_eq!(
            g.iter()
                .map(|j| (j.id, j.name.as_str(), j.status))
                .collect::<Vec<_>>(),
            vec![(ids[0], "build", JobStatus::Canceled)]
        );
        assert_eq!(
            db.job_definitions(&ids).await.unwrap(),
            vec![(ids[0], "{}".to_string())]
        );
        db.close().await;
    }
}

#[tokio::test]
async fn replication_runs_are_queued_once_claimed_once_and_taken_over_after_their_lease() {
    use gantry_store::db::replication::{
        NewReplicationRun, PasswordChange, ReplicationCounts, ReplicationFields,
        replication_password_aad,
    };
    for (db, _dir) in backends("replication").await {
        let dir = tempfile::tempdir().unwrap();
        let keys = Keyring::create_file(&dir.path().join("secrets.key")).unwrap();
        let p = db.insert_project(&project("g/app")).await.unwrap();
        let fields = ReplicationFields {
            name: "peer".into(),
            url: "https://peer.example.com".into(),
            namespace: String::new(),
            username: "u".into(),
            repositories: "**".into(),
            tags: "*".into(),
            on_push: true,
            schedule: Some("* * * * *".into()),
            time_zone: "UTC".into(),
            next_run_at: Some(1_000),
            enabled: true,
            insecure: false,
        };
        let rule = db
            .insert_replication(
                p,
                &fields,
                "alice",
                now_ms(),
                Some(|id: i64| keys.seal(b"pw", replication_password_aad(id).as_bytes())),
            )
            .await
            .unwrap();
        let err = db
            .insert_replication(p, &fields, "alice", now_ms(), None::<fn(i64) -> String>)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err}");
        let row = db.replication(rule).await.unwrap().unwrap();
        let sealed = row.password.clone().unwrap();
        assert_eq!(
            keys.open_string(&sealed, replication_password_aad(rule).as_bytes())
                .unwrap()
                .expose_secret(),
            "pw"
        );
        assert!(!format!("{row:?}").contains(&sealed), "Debug hides it");
        assert_eq!(db.push_replications(p).await.unwrap().len(), 1);

        // A schedule's slot is claimed once.
        assert_eq!(db.due_replications(999).await.unwrap().len(), 0);
        assert_eq!(db.due_replications(1_000).await.unwrap().len(), 1);
        assert!(
            db.claim_replication_slot(rule, 1_000, Some(61_000))
                .await
                .unwrap()
        );
        assert!(
            !db.claim_replication_slot(rule, 1_000, Some(61_000))
                .await
                .unwrap()
        );

        // Queued once per image, and a run of every tag covers the images.
        let run = |image: Option<(&str, &str)>| NewReplicationRun {
            replication_id: rule,
            project_id: p,
            triggered_by: if image.is_some() { "push" } else { "manual" }.into(),
            image: image.map(|(r, t)| (r.to_string(), t.to_string())),
            actor: "alice".into(),
            now: 10,
        };
        let (a, new) = db
            .queue_replication_run(&run(Some(("g/app", "v1"))))
            .await
            .unwrap();
        assert!(new);
        assert_eq!(
            db.queue_replication_run(&run(Some(("g/app", "v1"))))
                .await
                .unwrap(),
            (a, false)
        );
        let (b, new) = db
            .queue_replication_run(&run(Some(("g/app", "v2"))))
            .await
            .unwrap();
        assert!(new && b != a);
        let (all, new) = db.queue_replication_run(&run(None)).await.unwrap();
        assert!(new, "images do not cover every tag");
        assert_eq!(
            db.queue_replication_run(&run(Some(("g/app", "v3"))))
                .await
                .unwrap(),
            (all, false),
            "a run of every tag covers a new image"
        );

        // Claimed once, one run per rule at a time; a rule busy here is skipped.
        let busy = |id: i64| id == rule;
        assert!(
            db.claim_replication_runs(20, 80, 10, &busy)
                .await
                .unwrap()
                .is_empty()
        );
        let claimed = db
            .claim_replication_runs(20, 80, 10, &|_| false)
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1, "{claimed:?}");
        let first = &claimed[0];
        assert_eq!(
            (first.id, first.attempts, first.status.as_str()),
            (a, 1, "running")
        );
        assert!(
            db.claim_replication_runs(30, 90, 10, &|_| false)
                .await
                .unwrap()
                .iter()
                .all(|r| r.id != a)
        );
        assert!(db.renew_replication_lease(a, 1, 100).await.unwrap());

        // The lease passes (its server died): another claim takes it over; the first
        // attempt can no longer record anything.
        let again = db
            .claim_replication_runs(101, 200, 1, &|_| false)
            .await
            .unwrap();
        assert_eq!((again[0].id, again[0].attempts), (a, 2));
        let counts = ReplicationCounts {
            images_copied: 1,
            blobs_copied: 2,
            bytes_copied: 300,
            ..Default::default()
        };
        assert!(
            !db.end_replication_attempt(a, 1, "succeeded", None, &counts, None, 150)
                .await
                .unwrap()
        );
        // Retried: queued again with the error, the counters kept.
        assert!(
            db.end_replication_attempt(a, 2, "queued", Some(500), &counts, Some("down"), 150)
                .await
                .unwrap()
        );
        let r = db.replication_run(a).await.unwrap().unwrap();
        assert_eq!(
            (
                r.status.as_str(),
                r.next_attempt_at,
                r.error.as_deref(),
                r.counts.bytes_copied
            ),
            ("queued", 500, Some("down"), 300)
        );
        assert_eq!(db.replication_next_due().await.unwrap(), Some(10));
        let c = db
            .claim_replication_runs(600, 700, 10, &|_| false)
            .await
            .unwrap();
        let ours = c.iter().find(|r| r.id == a).expect("due again");
        assert!(
            db.end_replication_attempt(a, ours.attempts, "succeeded", None, &counts, None, 650)
                .await
                .unwrap()
        );
        let r = db.replication_run(a).await.unwrap().unwrap();
        assert_eq!(
            (r.status.as_str(), r.finished_at, r.counts.blobs_copied),
            ("succeeded", Some(650), 4)
        );
        let runs = db
            .replication_runs(rule, PageReq::new(None, None))
            .await
            .unwrap();
        assert_eq!(runs.len(), 3);
        assert_eq!(runs[0].id, all, "newest first");

        // Changes, the password kept, changed or removed; deleting takes the runs along.
        let mut f2 = fields.clone();
        f2.name = "peer2".into();
        assert!(
            db.update_replication(rule, &f2, &PasswordChange::Keep, 1)
                .await
                .unwrap()
        );
        assert_eq!(
            db.replication(rule).await.unwrap().unwrap().password,
            Some(sealed)
        );
        assert!(
            db.update_replication(rule, &f2, &PasswordChange::Clear, 2)
                .await
                .unwrap()
        );
        assert_eq!(db.replication(rule).await.unwrap().unwrap().password, None);
        assert_eq!(db.prune_replication_runs(651).await.unwrap(), 1);
        assert!(
            !db.delete_replication(p + 1, rule).await.unwrap(),
            "another project's"
        );
        assert!(db.delete_replication(p, rule).await.unwrap());
        assert!(db.replication(rule).await.unwrap().is_none());
        assert!(db.replication_run(b).await.unwrap().is_none());
        db.close().await;
    }
}
