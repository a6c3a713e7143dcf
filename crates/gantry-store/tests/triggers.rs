//! The rows of schedules and polling (migration 0003) on SQLite and, when the test command
//! started one, PostgreSQL: a slot or a poll is claimed by one caller only, due rows are
//! found by the time given, and turning polling off forgets the recorded heads.

use gantry_store::Db;
use gantry_store::db::{NewProject, NewSchedule, PageReq, ScheduleUpdate};
use support::backends;

mod support;

async fn project(db: &Db) -> i64 {
    db.insert_project(&NewProject {
        path: "team/app".into(),
        git_url: "/srv/git/app.git".into(),
        default_branch: "main".into(),
        pipeline_file: None,
    })
    .await
    .unwrap()
}

fn schedule(project_id: i64, next: Option<i64>) -> NewSchedule {
    NewSchedule {
        project_id,
        description: "nightly".into(),
        cron: "0 3 * * *".into(),
        time_zone: "UTC".into(),
        git_ref: "main".into(),
        variables: r#"[{"key":"A","value":"1"}]"#.into(),
        active: next.is_some(),
        next_run_at: next,
        now: 1,
    }
}

#[tokio::test]
async fn a_schedule_slot_is_claimed_once() {
    for (db, _dir) in backends("slot").await {
        let p = project(&db).await;
        let id = db.insert_schedule(&schedule(p, Some(1000))).await.unwrap();
        let off = db.insert_schedule(&schedule(p, None)).await.unwrap();
        assert!(db.due_schedules(999).await.unwrap().is_empty());
        let due = db.due_schedules(1000).await.unwrap();
        assert_eq!(due.iter().map(|s| s.id).collect::<Vec<_>>(), vec![id]);

        assert!(db.claim_schedule(id, 1000, Some(2000), 1001).await.unwrap());
        assert!(
            !db.claim_schedule(id, 1000, Some(3000), 1002).await.unwrap(),
            "claimed twice"
        );
        let s = db.schedule(id).await.unwrap().unwrap();
        assert_eq!((s.next_run_at, s.last_run_at), (Some(2000), Some(1001)));
        assert!(db.due_schedules(1500).await.unwrap().is_empty());

        db.set_schedule_outcome(id, None, Some("the remote is down"))
            .await
            .unwrap();
        let s = db.schedule(id).await.unwrap().unwrap();
        assert_eq!(s.last_error.as_deref(), Some("the remote is down"));

        // Inactive: never due, never claimed.
        assert!(!db.claim_schedule(off, 0, Some(5), 5).await.unwrap());
        let upd = ScheduleUpdate {
            description: "weekly".into(),
            cron: "0 3 * * 1".into(),
            time_zone: "Europe/Paris".into(),
            git_ref: "release".into(),
            variables: "[]".into(),
            active: false,
            next_run_at: None,
            now: 7,
        };
        assert!(db.update_schedule(id, &upd).await.unwrap());
        assert!(db.due_schedules(i64::MAX).await.unwrap().is_empty());
        let listed = db
            .schedules_of_project(p, PageReq::new(None, None))
            .await
            .unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[0].time_zone, "Europe/Paris");
        assert!(db.delete_schedule(id).await.unwrap());
        assert!(!db.delete_schedule(id).await.unwrap());
    }
}

#[tokio::test]
async fn polls_are_claimed_once_and_off_forgets_the_heads() {
    for (db, _dir) in backends("poll").await {
        let p = project(&db).await;
        db.set_polling(p, Some(60), 100, 100).await.unwrap();
        let row = db.polling(p).await.unwrap().unwrap();
        assert!(!row.primed);
        assert_eq!(db.due_polls(100).await.unwrap().len(), 1);
        assert!(db.claim_poll(p, 100, 160_100).await.unwrap());
        assert!(
            !db.claim_poll(p, 100, 160_200).await.unwrap(),
            "claimed twice"
        );
        assert!(db.due_polls(100).await.unwrap().is_empty());

        let heads = vec![
            ("refs/heads/main".to_string(), "a".repeat(40)),
            ("refs/tags/v1".to_string(), "b".repeat(40)),
        ];
        db.prime_polling(p, &heads, 200).await.unwrap();
        assert!(db.polling(p).await.unwrap().unwrap().primed);
        assert_eq!(db.polled_refs(p).await.unwrap(), heads);
        db.set_polled_ref(p, "refs/heads/main", Some(&"c".repeat(40)))
            .await
            .unwrap();
        db.set_polled_ref(p, "refs/tags/v1", None).await.unwrap();
        assert_eq!(
            db.polled_refs(p).await.unwrap(),
            vec![("refs/heads/main".to_string(), "c".repeat(40))]
        );

        // A move is claimed once; a claim given back can be claimed again.
        let (c, d) = ("c".repeat(40), "d".repeat(40));
        assert!(
            db.claim_polled_ref(p, "refs/heads/main", Some(&c), &d)
                .await
                .unwrap()
        );
        assert!(
            !db.claim_polled_ref(p, "refs/heads/main", Some(&c), &d)
                .await
                .unwrap()
        );
        db.release_polled_ref(p, "refs/heads/main", Some(&c), &d)
            .await
            .unwrap();
        assert!(
            db.claim_polled_ref(p, "refs/heads/main", Some(&c), &d)
                .await
                .unwrap()
        );
        assert!(
            db.claim_polled_ref(p, "refs/heads/new", None, &c)
                .await
                .unwrap()
        );
        assert!(
            !db.claim_polled_ref(p, "refs/heads/new", None, &c)
                .await
                .unwrap()
        );
        db.release_polled_ref(p, "refs/heads/new", None, &c)
            .await
            .unwrap();
        assert_eq!(
            db.polled_refs(p).await.unwrap(),
            vec![("refs/heads/main".to_string(), d.clone())]
        );

        db.finish_poll(p, 300, Some("unreachable")).await.unwrap();
        let row = db.polling(p).await.unwrap().unwrap();
        assert_eq!(
            (row.last_error.as_deref(), row.last_error_at),
            (Some("unreachable"), Some(300))
        );
        db.finish_poll(p, 400, None).await.unwrap();
        let row = db.polling(p).await.unwrap().unwrap();
        assert_eq!((row.last_error, row.last_poll_at), (None, Some(400)));

        // A new interval keeps the heads; off forgets them.
        db.set_polling(p, Some(5), 500, 500).await.unwrap();
        let row = db.polling(p).await.unwrap().unwrap();
        assert_eq!((row.interval_secs, row.primed), (5, true));
        db.set_polling(p, None, 0, 600).await.unwrap();
        assert!(db.polling(p).await.unwrap().is_none());
        assert!(db.polled_refs(p).await.unwrap().is_empty());
    }
}
