//! Deliveries as the forges send them: the fixtures under `tests/fixtures/webhooks/` follow the
//! forges' documented examples; headers and signatures are made here, as the forge makes them.

use std::path::Path;

use gantry_pipeline::trigger::{ProjectInfo, Source, Trigger};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use super::*;

const SECRET: &[u8] = b"It's a Secret to Everybody";

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/webhooks")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn hmac_hex(secret: &[u8], body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// One webhook request, signed the way its forge signs it.
#[derive(Debug, Clone)]
struct Delivery {
    forge: Forge,
    /// Whose header names: the forge's path segment, or `forgejo`.
    flavour: &'static str,
    event: String,
    id: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Delivery {
    fn new(forge: Forge, event: &str, body: Vec<u8>) -> Delivery {
        Delivery {
            forge,
            flavour: forge.as_str(),
            event: event.to_string(),
            id: "f6266f16-1bf3-46a5-9ea4-602e06ead473".to_string(),
            headers: Vec::new(),
            body,
        }
        .signed()
    }

    fn gitlab(event: &str, fixture_name: &str) -> Delivery {
        Delivery::new(Forge::Gitlab, event, fixture(fixture_name))
    }

    fn github(event: &str, fixture_name: &str) -> Delivery {
        Delivery::new(Forge::Github, event, fixture(fixture_name))
    }

    fn gitea(event: &str, fixture_name: &str) -> Delivery {
        Delivery::new(Forge::Gitea, event, fixture(fixture_name))
    }

    /// The same payload, with Forgejo's headers only.
    fn forgejo(event: &str, fixture_name: &str) -> Delivery {
        Delivery {
            flavour: "forgejo",
            ..Delivery::gitea(event, fixture_name)
        }
        .signed()
    }

    /// Sets the headers the forge sends for this body.
    fn signed(mut self) -> Delivery {
        let sig = hmac_hex(SECRET, &self.body);
        let (event, id) = (self.event.clone(), self.id.clone());
        let pairs: Vec<(&str, String)> = match self.flavour {
            "gitlab" => vec![
                ("X-Gitlab-Event", event),
                (
                    "X-Gitlab-Token",
                    String::from_utf8(SECRET.to_vec()).unwrap(),
                ),
                ("X-Gitlab-Event-UUID", id),
                ("X-Gitlab-Instance", "http://example.com".into()),
            ],
            "github" => vec![
                ("X-GitHub-Event", event),
                ("X-GitHub-Delivery", id),
                ("X-Hub-Signature-256", format!("sha256={sig}")),
                ("User-Agent", "GitHub-Hookshot/044aadd".into()),
            ],
            // What Gitea's addDefaultHeaders sends.
            "gitea" => vec![
                ("X-Gitea-Delivery", id.clone()),
                ("X-Gitea-Event", event.clone()),
                ("X-Gitea-Event-Type", event.clone()),
                ("X-Gitea-Signature", sig.clone()),
                ("X-Gogs-Delivery", id.clone()),
                ("X-Gogs-Event", event.clone()),
                ("X-Gogs-Signature", sig.clone()),
                ("X-Hub-Signature-256", format!("sha256={sig}")),
                ("X-GitHub-Delivery", id),
                ("X-GitHub-Event", event),
            ],
            "forgejo" => vec![
                ("X-Forgejo-Delivery", id),
                ("X-Forgejo-Event", event),
                ("X-Forgejo-Signature", sig),
            ],
            other => unreachable!("{other}"),
        };
        self.headers = pairs
            .into_iter()
            .map(|(n, v)| (n.to_string(), v))
            .chain([("Content-Type".to_string(), "application/json".to_string())])
            .collect();
        self
    }

    /// Edits the JSON payload, then signs the new body.
    fn edit(mut self, change: impl FnOnce(&mut Value)) -> Delivery {
        let mut value: Value = serde_json::from_slice(&self.body).unwrap();
        change(&mut value);
        self.body = serde_json::to_vec_pretty(&value).unwrap();
        self.signed()
    }

    /// Replaces the body without signing it again.
    fn tampered(mut self, body: Vec<u8>) -> Delivery {
        self.body = body;
        self
    }

    fn with_body(mut self, body: &[u8]) -> Delivery {
        self.body = body.to_vec();
        self.signed()
    }

    fn set_header(mut self, name: &str, value: &str) -> Delivery {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    fn without_header(mut self, name: &str) -> Delivery {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self
    }

    fn headers(&self) -> Headers<'_> {
        self.headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect()
    }

    fn receive(&self) -> Result<Received, HookError> {
        receive(self.forge, SECRET, &self.headers(), &self.body)
    }

    fn event(&self) -> HookEvent {
        match self.receive() {
            Ok(r) => r.event,
            Err(e) => panic!("{} {} refused: {e}", self.forge, self.event),
        }
    }

    fn push(&self) -> PushEvent {
        match self.event() {
            HookEvent::Push(p) => p,
            other => panic!("not a push: {other:?}"),
        }
    }

    fn merge_request(&self) -> MergeRequestEvent {
        match self.event() {
            HookEvent::MergeRequest(mr) => mr,
            other => panic!("not a merge request: {other:?}"),
        }
    }

    fn ignored(&self) -> String {
        match self.event() {
            HookEvent::Ignored { reason } => reason,
            other => panic!("not ignored: {other:?}"),
        }
    }

    /// The merge request a close or merge event closes.
    fn closed(&self) -> u64 {
        match self.event() {
            HookEvent::MergeRequestClosed { iid, .. } => iid,
            other => panic!("not a closed merge request: {other:?}"),
        }
    }

    fn error(&self) -> HookError {
        match self.receive() {
            Ok(r) => panic!("accepted: {:?}", r.event),
            Err(e) => e,
        }
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

// ---- GitLab ----------------------------------------------------------------------------

#[test]
fn gitlab_push_is_a_branch_push_with_its_head_commit_pusher_and_paths() {
    let push = Delivery::gitlab("Push Hook", "gitlab/push.json").push();
    assert_eq!(push.ref_kind, RefKind::Branch);
    assert_eq!(push.ref_name, "master");
    assert_eq!(push.git_ref(), "refs/heads/master");
    assert_eq!(push.before, "95790bf891e76fee5e1747ab589903a6a1f80f22");
    assert_eq!(push.after, "da1560886d4f094c3e6c9ef40349f7d38b5d27d7");
    assert!(!push.created());
    let head = push
        .head_commit
        .as_ref()
        .expect("the head commit is listed");
    assert_eq!(head.sha, push.after);
    assert_eq!(head.message, "fixed readme");
    assert_eq!(head.author_name, "GitLab dev user");
    assert_eq!(head.timestamp, "2012-01-03T23:36:29+02:00");
    assert_eq!(
        push.pusher,
        User {
            username: "jsmith".into(),
            name: "John Smith".into(),
            email: "john@example.com".into()
        }
    );
    assert_eq!(push.commit_count, 2);
    assert!(!push.skip_ci);
    assert_eq!(
        push.changed_paths,
        Some(strings(&[
            "CHANGELOG",
            "README.md",
            "app/controller/application.rb",
            "doc/old.md"
        ]))
    );
    assert_eq!(push.repository.id, 15);
    assert_eq!(push.repository.path, "mike/diaspora");
    assert_eq!(
        push.repository.http_url,
        "http://example.com/mike/diaspora.git"
    );
    assert_eq!(push.repository.ssh_url, "git@example.com:mike/diaspora.git");
    assert_eq!(push.repository.default_branch, "master");
}

#[test]
fn gitlab_tag_push_is_recognised_as_a_tag() {
    let push = Delivery::gitlab("Tag Push Hook", "gitlab/tag-push.json").push();
    assert_eq!(push.ref_kind, RefKind::Tag);
    assert_eq!(push.ref_name, "v1.0.0");
    assert_eq!(push.git_ref(), "refs/tags/v1.0.0");
    assert!(push.created());
    assert_eq!(push.after, "82b3d5ae55f7080f1e6022629cdb57bfae7cccc7");
    assert_eq!(push.head_commit, None, "a tag push lists no commit");
    assert_eq!(push.changed_paths, None);
    assert_eq!(push.pusher.email, "", "[REDACTED] is no address");
}

#[test]
fn gitlab_lists_at_most_20_commits_so_a_longer_push_has_no_paths() {
    let push = Delivery::gitlab("Push Hook", "gitlab/push.json")
        .edit(|v| v["total_commits_count"] = json!(25))
        .push();
    assert_eq!(push.commit_count, 25);
    assert_eq!(push.changed_paths, None);
}

#[test]
fn gitlab_merge_request_opened_in_one_project() {
    let mr =
        Delivery::gitlab("Merge Request Hook", "gitlab/merge-request-open.json").merge_request();
    assert_eq!(mr.action, MergeRequestAction::Opened);
    assert_eq!((mr.id, mr.iid), (99, 1));
    assert_eq!(mr.title, "MS-Viewport");
    assert_eq!(mr.description, "Makes the viewport work on MS browsers.");
    assert_eq!(mr.source_branch, "ms-viewport");
    assert_eq!(mr.source_sha, "da1560886d4f094c3e6c9ef40349f7d38b5d27d7");
    assert_eq!(mr.target_branch, "master");
    assert_eq!(
        mr.target_sha, None,
        "GitLab does not send the target's head"
    );
    assert_eq!(mr.head_ref, "refs/merge-requests/1/head");
    assert_eq!(mr.target.path, "awesome_space/awesome_project");
    assert_eq!(
        mr.source.as_ref().map(|s| s.path.as_str()),
        Some("awesome_space/awesome_project")
    );
    assert!(!mr.is_fork);
    assert!(!mr.draft);
    assert_eq!(mr.labels, strings(&["API"]));
    assert_eq!(mr.assignees, strings(&["user1"]));
    assert_eq!(mr.user.username, "root");
    assert_eq!(mr.author, None);
    assert_eq!(mr.head_commit_message.as_deref(), Some("fixed readme"));
    assert!(!mr.skip_ci);
    assert_eq!(
        mr.url,
        "http://example.com/awesome_space/awesome_project/-/merge_requests/1"
    );
}

#[test]
fn gitlab_merge_request_updated_from_a_fork_with_skip_ci() {
    let mr = Delivery::gitlab(
        "Merge Request Hook",
        "gitlab/merge-request-update-fork.json",
    )
    .merge_request();
    assert_eq!(mr.action, MergeRequestAction::Updated);
    assert!(mr.is_fork);
    assert_eq!(
        mr.source.as_ref().map(|s| (s.id, s.path.as_str())),
        Some((22, "jdoe/awesome_project"))
    );
    assert_eq!(mr.target.id, 14);
    assert_eq!(
        mr.previous_source_sha.as_deref(),
        Some("c4c4c5d1d7b1a2e3f4a5b6c7d8e9f0a1b2c3d4e5")
    );
    assert!(mr.draft);
    assert_eq!(mr.description, "", "null reads as empty");
    assert!(mr.skip_ci, "[CI SKIP] in the last commit's message");
    assert_eq!(mr.user.email, "");
}

#[test]
fn gitlab_merge_request_edits_without_new_commits_start_nothing() {
    let reason = Delivery::gitlab(
        "Merge Request Hook",
        "gitlab/merge-request-update-fork.json",
    )
    .edit(|v| {
        v["object_attributes"]
            .as_object_mut()
            .unwrap()
            .remove("oldrev");
    })
    .ignored();
    assert!(
        reason.contains("!2 was edited without new commits"),
        "{reason}"
    );
}

#[test]
fn gitlab_branch_deletion_is_ignored() {
    let reason = Delivery::gitlab("Push Hook", "gitlab/push-branch-deleted.json").ignored();
    assert_eq!(
        reason,
        "branch 'feature/old-viewport' was deleted: a deletion starts no pipeline"
    );
}

#[test]
fn gitlab_tag_deletion_is_ignored() {
    let reason = Delivery::gitlab("Tag Push Hook", "gitlab/tag-push.json")
        .edit(|v| {
            v["before"] = v["after"].clone();
            v["after"] = json!("0000000000000000000000000000000000000000");
            v["checkout_sha"] = Value::Null;
        })
        .ignored();
    assert!(reason.starts_with("tag 'v1.0.0' was deleted"), "{reason}");
}

#[test]
fn gitlab_events_that_run_no_pipeline_are_ignored() {
    let reason = Delivery::gitlab("Issue Hook", "gitlab/push.json").ignored();
    assert_eq!(reason, "GitLab 'Issue Hook' events start no pipeline");
    let reason = Delivery::gitlab("System Hook", "gitlab/push.json").ignored();
    assert!(
        reason.contains("add the webhook to the project"),
        "{reason}"
    );
}

// ---- GitHub ----------------------------------------------------------------------------

#[test]
fn github_push_is_a_branch_push_with_its_head_commit_pusher_and_paths() {
    let push = Delivery::github("push", "github/push.json").push();
    assert_eq!(push.ref_kind, RefKind::Branch);
    assert_eq!(push.ref_name, "main");
    assert_eq!(push.before, "6113728f27ae82c7b1a177c8d03f9e96e0adf246");
    assert_eq!(push.after, "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c");
    let head = push.head_commit.as_ref().unwrap();
    assert_eq!(head.message, "Update README\n\nMention the guide.");
    assert_eq!(head.author_email, "octocat@github.com");
    assert_eq!(push.pusher.username, "octocat");
    assert_eq!(push.pusher.email, "octocat@github.com");
    assert_eq!(push.commit_count, 2);
    assert_eq!(
        push.changed_paths,
        Some(strings(&["CONTRIBUTING.md", "README", "docs/old-guide.md"]))
    );
    assert_eq!(push.repository.id, 1296269);
    assert_eq!(push.repository.path, "octocat/Hello-World");
    assert_eq!(
        push.repository.http_url,
        "https://github.com/octocat/Hello-World.git"
    );
    assert_eq!(
        push.repository.ssh_url,
        "git@github.com:octocat/Hello-World.git"
    );
}

#[test]
fn github_force_push_has_no_paths() {
    let push = Delivery::github("push", "github/push.json")
        .edit(|v| v["forced"] = json!(true))
        .push();
    assert_eq!(push.changed_paths, None);
}

#[test]
fn github_tag_push_is_recognised_as_a_tag_with_its_commit() {
    let push = Delivery::github("push", "github/push-tag.json").push();
    assert_eq!(push.ref_kind, RefKind::Tag);
    assert_eq!(push.ref_name, "v1.2.0");
    assert!(push.created());
    assert_eq!(push.changed_paths, None, "a new ref has no diff");
    assert_eq!(
        push.head_commit.map(|c| c.sha).as_deref(),
        Some("0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c")
    );
}

#[test]
fn github_branch_deletion_is_ignored() {
    let reason = Delivery::github("push", "github/push-branch-deleted.json").ignored();
    assert_eq!(
        reason,
        "branch 'feature/login' was deleted: a deletion starts no pipeline"
    );
}

#[test]
fn github_pull_request_opened_in_one_repository() {
    let mr = Delivery::github("pull_request", "github/pull-request-opened.json").merge_request();
    assert_eq!(mr.action, MergeRequestAction::Opened);
    assert_eq!((mr.id, mr.iid), (1, 1347));
    assert_eq!(mr.title, "Amazing new feature");
    assert_eq!(mr.description, "Please pull these awesome changes in!");
    assert_eq!(mr.source_branch, "new-topic");
    assert_eq!(mr.source_sha, "6dcb09b5b57875f334f61aebed695e2e4193db5e");
    assert_eq!(mr.target_branch, "main");
    assert_eq!(
        mr.target_sha.as_deref(),
        Some("0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c")
    );
    assert_eq!(mr.head_ref, "refs/pull/1347/head");
    assert!(!mr.is_fork);
    assert_eq!(mr.author.as_deref(), Some("octocat"));
    assert_eq!(mr.labels, strings(&["bug"]));
    assert_eq!(mr.assignees, strings(&["hubot"]));
    assert_eq!(mr.url, "https://github.com/octocat/Hello-World/pull/1347");
    assert_eq!(mr.previous_source_sha, None);
}

#[test]
fn github_pull_request_synchronized_from_a_fork() {
    let mr = Delivery::github("pull_request", "github/pull-request-synchronize-fork.json")
        .merge_request();
    assert_eq!(mr.action, MergeRequestAction::Updated);
    assert!(mr.is_fork);
    let source = mr.source.as_ref().unwrap();
    assert_eq!(source.path, "monalisa/Hello-World");
    assert_eq!(
        source.http_url,
        "https://github.com/monalisa/Hello-World.git"
    );
    assert_eq!(mr.target.path, "octocat/Hello-World");
    assert_eq!(
        mr.previous_source_sha.as_deref(),
        Some("7e8f1a9b2c3d4e5f60718293a4b5c6d7e8f90a1b")
    );
    assert!(mr.draft);
    assert_eq!(mr.description, "");
    assert_eq!(mr.user.username, "monalisa");
}

#[test]
fn github_pull_request_from_a_deleted_fork_counts_as_a_fork() {
    let mr = Delivery::github("pull_request", "github/pull-request-synchronize-fork.json")
        .edit(|v| v["pull_request"]["head"]["repo"] = Value::Null)
        .merge_request();
    assert!(mr.is_fork);
    assert_eq!(mr.source, None);
    assert_eq!(mr.head_ref, "refs/pull/1348/head");
}

#[test]
fn github_ping_is_ignored() {
    let reason = Delivery::github("ping", "github/ping.json").ignored();
    assert!(
        reason.starts_with("GitHub ping for webhook 12345678"),
        "{reason}"
    );
}

#[test]
fn github_create_and_delete_events_are_ignored() {
    // The push event GitHub sends for the same tag starts the pipeline.
    let reason = Delivery::github("create", "github/ping.json").ignored();
    assert!(reason.contains("the 'push' event"), "{reason}");
    let reason = Delivery::github("delete", "github/ping.json").ignored();
    assert_eq!(reason, "GitHub 'delete' events start no pipeline");
}

// ---- Gitea and Forgejo -----------------------------------------------------------------

#[test]
fn gitea_push_is_a_branch_push_with_its_head_commit_pusher_and_paths() {
    let push = Delivery::gitea("push", "gitea/push.json").push();
    assert_eq!(push.ref_kind, RefKind::Branch);
    assert_eq!(push.ref_name, "develop");
    assert_eq!(push.after, "bffeb74224043ba2feb48d137756c8a9331c449a");
    assert_eq!(
        push.head_commit.as_ref().map(|c| c.message.as_str()),
        Some("Webhooks Yay!\n")
    );
    assert_eq!(
        push.pusher,
        User {
            username: "gitea".into(),
            name: "Gitea".into(),
            email: "someone@gitea.io".into()
        }
    );
    assert_eq!(push.commit_count, 1);
    assert_eq!(
        push.changed_paths,
        Some(strings(&["README.md", "hooks/receive.go"]))
    );
    assert_eq!(push.repository.path, "gitea/webhooks");
    assert_eq!(
        push.repository.ssh_url,
        "ssh://gitea@localhost:2222/gitea/webhooks.git"
    );
}

#[test]
fn gitea_tag_push_is_recognised_as_a_tag_and_its_create_event_is_ignored() {
    let push = Delivery::gitea("push", "gitea/push-tag.json").push();
    assert_eq!(
        (push.ref_kind, push.ref_name.as_str()),
        (RefKind::Tag, "v0.3.0")
    );
    assert!(push.created());
    let reason = Delivery::gitea("create", "gitea/create-tag.json").ignored();
    assert!(reason.contains("the 'push' event"), "{reason}");
}

#[test]
fn gitea_branch_deletion_is_ignored() {
    let reason = Delivery::gitea("push", "gitea/push.json")
        .edit(|v| v["after"] = json!("0000000000000000000000000000000000000000"))
        .ignored();
    assert!(
        reason.starts_with("branch 'develop' was deleted"),
        "{reason}"
    );
    let reason = Delivery::gitea("delete", "gitea/create-tag.json").ignored();
    assert_eq!(reason, "Gitea 'delete' events start no pipeline");
}

#[test]
fn gitea_pull_request_opened_in_one_repository() {
    let mr = Delivery::gitea("pull_request", "gitea/pull-request-opened.json").merge_request();
    assert_eq!(mr.action, MergeRequestAction::Opened);
    assert_eq!((mr.id, mr.iid), (31, 7));
    assert_eq!(mr.source_branch, "receiver");
    assert_eq!(mr.source_sha, "bffeb74224043ba2feb48d137756c8a9331c449a");
    assert_eq!(mr.target_branch, "main");
    assert_eq!(
        mr.target_sha.as_deref(),
        Some("28e1879d029cb852e4844d9c718537df08844e03")
    );
    assert_eq!(
        mr.merge_base.as_deref(),
        Some("28e1879d029cb852e4844d9c718537df08844e03")
    );
    assert_eq!(mr.head_ref, "refs/pull/7/head");
    assert!(!mr.is_fork);
    assert_eq!(mr.labels, strings(&["kind/feature"]));
    assert!(mr.assignees.is_empty(), "assignees: null");
    assert_eq!(mr.author.as_deref(), Some("gitea"));
    assert_eq!(mr.description, "Adds the receiver.\n\nCloses #5");
}

#[test]
fn forgejo_headers_alone_are_accepted_and_forks_detected() {
    let delivery = Delivery::forgejo("pull_request", "gitea/pull-request-synchronized-fork.json");
    assert!(
        delivery
            .headers
            .iter()
            .all(|(n, _)| !n.starts_with("X-Gitea") && !n.starts_with("X-Gogs")),
        "only Forgejo's names: {:?}",
        delivery.headers
    );
    let received = delivery.receive().unwrap();
    assert_eq!(received.delivery_id.as_deref(), Some(delivery.id.as_str()));
    let HookEvent::MergeRequest(mr) = received.event else {
        panic!("{:?}", received.event)
    };
    assert_eq!(mr.action, MergeRequestAction::Updated);
    assert!(mr.is_fork);
    assert_eq!(mr.source.as_ref().unwrap().path, "alice/webhooks");
    assert_eq!(mr.target.path, "gitea/webhooks");
    assert_eq!(mr.user.name, "alice", "no full name: the login");
    assert_eq!(mr.assignees, strings(&["gitea"]));
    assert_eq!("forgejo".parse::<Forge>(), Ok(Forge::Gitea));
}

// ---- Merge request actions -------------------------------------------------------------

#[test]
fn closing_merging_and_labelling_start_no_pipeline() {
    for action in ["approved", "unapproved"] {
        Delivery::gitlab("Merge Request Hook", "gitlab/merge-request-open.json")
            .edit(|v| v["object_attributes"]["action"] = json!(action))
            .ignored();
    }
    for action in ["edited", "labeled", "ready_for_review"] {
        let reason = Delivery::github("pull_request", "github/pull-request-opened.json")
            .edit(|v| v["action"] = json!(action))
            .ignored();
        assert!(reason.contains(&format!("action '{action}'")), "{reason}");
    }
    for action in ["label_updated", "assigned", "edited"] {
        Delivery::gitea("pull_request", "gitea/pull-request-opened.json")
            .edit(|v| v["action"] = json!(action))
            .ignored();
    }
}

#[test]
fn closing_and_merging_close_the_merge_request_on_every_forge() {
    for action in ["close", "merge"] {
        let d = Delivery::gitlab("Merge Request Hook", "gitlab/merge-request-open.json");
        let iid = d.merge_request().iid;
        let closed = d.edit(|v| v["object_attributes"]["action"] = json!(action));
        assert_eq!(closed.closed(), iid);
    }
    let gh = Delivery::github("pull_request", "github/pull-request-opened.json");
    let iid = gh.merge_request().iid;
    assert_eq!(gh.edit(|v| v["action"] = json!("closed")).closed(), iid);
    let gitea = Delivery::gitea("pull_request", "gitea/pull-request-opened.json");
    let iid = gitea.merge_request().iid;
    assert_eq!(gitea.edit(|v| v["action"] = json!("closed")).closed(), iid);
}

#[test]
fn reopening_starts_a_pipeline_on_every_forge() {
    let reopened = [
        Delivery::gitlab("Merge Request Hook", "gitlab/merge-request-open.json")
            .edit(|v| v["object_attributes"]["action"] = json!("reopen")),
        Delivery::github("pull_request", "github/pull-request-opened.json")
            .edit(|v| v["action"] = json!("reopened")),
        Delivery::gitea("pull_request", "gitea/pull-request-opened.json")
            .edit(|v| v["action"] = json!("reopened")),
    ];
    for d in reopened {
        assert_eq!(d.merge_request().action, MergeRequestAction::Reopened);
    }
}

// ---- [skip ci] -------------------------------------------------------------------------

#[test]
fn skip_ci_follows_gitlab_pattern() {
    for yes in [
        "[skip ci]",
        "[ci skip]",
        "[CI SKIP]",
        "[Skip CI] docs only",
        "fix typo [skip-ci]",
        "fix typo\n\n[ci_skip]",
        "[SKIP_CI]",
    ] {
        assert!(skips_ci(yes), "{yes:?}");
    }
    for no in [
        "skip ci",
        "[skip ci",
        "[ci  skip]",
        "[skipci]",
        "(skip ci)",
        "[ci skip please]",
        "",
    ] {
        assert!(!skips_ci(no), "{no:?}");
    }
}

#[test]
fn skip_ci_in_the_head_commit_of_a_push_is_detected_on_every_forge() {
    let gitlab = Delivery::gitlab("Push Hook", "gitlab/push.json")
        .edit(|v| v["commits"][1]["message"] = json!("Bump version [skip ci]"));
    let github = Delivery::github("push", "github/push.json")
        .edit(|v| v["head_commit"]["message"] = json!("Bump version\n\n[CI SKIP]"));
    let gitea = Delivery::gitea("push", "gitea/push.json")
        .edit(|v| v["head_commit"]["message"] = json!("[Skip CI] Bump version"));
    for d in [gitlab, github, gitea] {
        assert!(d.push().skip_ci, "{}", d.forge);
    }
    // Only the head commit counts, as in GitLab.
    let older = Delivery::gitlab("Push Hook", "gitlab/push.json")
        .edit(|v| v["commits"][0]["message"] = json!("WIP [skip ci]"));
    assert!(!older.push().skip_ci);
}

// ---- Authentication --------------------------------------------------------------------

fn all_forges() -> Vec<Delivery> {
    vec![
        Delivery::gitlab("Push Hook", "gitlab/push.json"),
        Delivery::github("push", "github/push.json"),
        Delivery::gitea("push", "gitea/push.json"),
        Delivery::forgejo("push", "gitea/push.json"),
    ]
}

#[test]
fn signed_deliveries_verify() {
    for d in all_forges() {
        verify(d.forge, SECRET, &d.headers(), &d.body)
            .unwrap_or_else(|e| panic!("{}: {e}", d.flavour));
    }
}

#[test]
fn one_flipped_byte_fails_the_signature() {
    for d in all_forges().into_iter().skip(1) {
        let mut body = d.body.clone();
        body[10] ^= 0x01;
        let err = d.clone().tampered(body).error();
        assert_eq!(err.status(), 403, "{}: {err}", d.flavour);
        assert_eq!(err.code(), "bad_signature");
        assert!(err.to_string().contains("does not match the body"), "{err}");
    }
    // GitLab's token does not sign the body; a flipped byte of the token fails.
    let d = Delivery::gitlab("Push Hook", "gitlab/push.json")
        .set_header("X-Gitlab-Token", "It's a Secret to Everybodz");
    let err = d.error();
    assert_eq!(err.status(), 403);
    assert!(
        err.to_string()
            .starts_with("X-Gitlab-Token is not the project's webhook secret")
    );
}

#[test]
fn a_signature_made_with_another_secret_fails() {
    let body = fixture("github/push.json");
    let d = Delivery::github("push", "github/push.json").set_header(
        "X-Hub-Signature-256",
        &format!("sha256={}", hmac_hex(b"another secret", &body)),
    );
    let err = d.error();
    assert_eq!(err.status(), 403);
    assert_eq!(
        err.to_string(),
        "X-Hub-Signature-256 does not match the body: check the webhook secret configured in \
         GitHub against the project's webhook secret in Gantry"
    );
}

#[test]
fn missing_authentication_is_unsigned() {
    let cases = [
        (
            "X-Gitlab-Token",
            Delivery::gitlab("Push Hook", "gitlab/push.json"),
        ),
        (
            "X-Hub-Signature-256",
            Delivery::github("push", "github/push.json"),
        ),
        (
            "X-Gitea-Signature",
            Delivery::gitea("push", "gitea/push.json"),
        ),
        (
            "X-Forgejo-Signature",
            Delivery::forgejo("push", "gitea/push.json"),
        ),
    ];
    for (header, d) in cases {
        let err = d.without_header(header).error();
        assert_eq!(err.status(), 401, "{header}: {err}");
        assert_eq!(err.code(), "unsigned");
        assert!(err.to_string().contains("set a secret"), "{err}");
    }
    // Gitea sends the header empty when its webhook has no secret.
    let err = Delivery::gitea("push", "gitea/push.json")
        .set_header("X-Gitea-Signature", "")
        .error();
    assert_eq!(err.status(), 401);
    // GitHub's SHA-1 signature alone is not enough.
    let d = Delivery::github("push", "github/push.json");
    let sha1 = format!("sha1={}", "0".repeat(40));
    let err = d
        .without_header("X-Hub-Signature-256")
        .set_header("X-Hub-Signature", &sha1)
        .error();
    assert_eq!(err.status(), 401);
}

#[test]
fn unreadable_signatures_are_bad_signatures() {
    let sig = hmac_hex(SECRET, &fixture("github/push.json"));
    let err = Delivery::github("push", "github/push.json")
        .set_header("X-Hub-Signature-256", &sig)
        .error();
    assert_eq!(err.status(), 403);
    assert!(
        err.to_string().contains("does not start with 'sha256='"),
        "{err}"
    );
    let err = Delivery::gitea("push", "gitea/push.json")
        .set_header("X-Gitea-Signature", "not-hex")
        .error();
    assert_eq!(err.status(), 403);
    assert!(err.to_string().contains("is not 64 hex digits"), "{err}");
}

#[test]
fn a_project_without_a_secret_accepts_nothing() {
    for d in all_forges() {
        let err = receive(d.forge, b"", &d.headers(), &d.body).unwrap_err();
        assert_eq!(err, HookError::NoSecret { forge: d.forge });
        assert_eq!(err.status(), 403);
    }
}

#[test]
fn gitlab_compares_the_token_without_the_secrets_line_breaks() {
    let d = Delivery::gitlab("Push Hook", "gitlab/push.json");
    let mut secret = SECRET.to_vec();
    secret.extend_from_slice(b"\n");
    verify(Forge::Gitlab, &secret, &d.headers(), &d.body).unwrap();
}

#[test]
fn nothing_is_parsed_before_the_signature_is_checked() {
    let err = Delivery::github("push", "github/push.json")
        .tampered(b"{not json".to_vec())
        .error();
    assert_eq!(err.code(), "bad_signature");
}

// ---- Malformed requests ----------------------------------------------------------------

#[test]
fn malformed_json_is_a_400_that_says_where() {
    let err = Delivery::github("push", "github/push.json")
        .with_body(b"{\"ref\": \"refs/heads/main\",")
        .error();
    assert_eq!(err.status(), 400);
    assert_eq!(err.code(), "malformed");
    let message = err.to_string();
    assert!(
        message.starts_with("the GitHub 'push' payload cannot be read: "),
        "{message}"
    );
    assert!(message.contains("line 1 column"), "{message}");
}

#[test]
fn missing_required_fields_name_their_json_path() {
    let err = Delivery::github("pull_request", "github/pull-request-opened.json")
        .edit(|v| {
            v["pull_request"]["head"]
                .as_object_mut()
                .unwrap()
                .remove("sha");
        })
        .error();
    assert_eq!(err.status(), 400);
    assert!(
        err.to_string()
            .contains("at `pull_request.head`: missing field `sha`"),
        "{err}"
    );

    let err = Delivery::gitlab("Merge Request Hook", "gitlab/merge-request-open.json")
        .edit(|v| v["object_attributes"]["iid"] = json!("one"))
        .error();
    assert!(
        err.to_string()
            .contains("at `object_attributes.iid`: invalid type"),
        "{err}"
    );

    let err = Delivery::gitea("push", "gitea/push.json")
        .edit(|v| {
            v.as_object_mut().unwrap().remove("ref");
        })
        .error();
    assert_eq!(err.status(), 400);
    assert!(err.to_string().contains("missing field `ref`"), "{err}");
}

#[test]
fn shas_and_ref_names_that_git_would_not_accept_are_malformed() {
    let err = Delivery::github("push", "github/push.json")
        .edit(|v| v["after"] = json!("--upload-pack=touch /tmp/x"))
        .error();
    assert_eq!(err.status(), 400);
    assert!(err.to_string().contains("at `after`"), "{err}");
    let err = Delivery::gitea("pull_request", "gitea/pull-request-opened.json")
        .edit(|v| v["pull_request"]["head"]["ref"] = json!("-x"))
        .error();
    assert!(
        err.to_string()
            .contains("at `pull_request.head.ref`: '-x' is not a valid branch or tag name"),
        "{err}"
    );
    let err = Delivery::gitlab("Push Hook", "gitlab/push.json")
        .edit(|v| v["ref"] = json!("refs/heads/a..b"))
        .error();
    assert!(err.to_string().contains("at `ref`"), "{err}");
}

#[test]
fn refs_that_are_neither_branch_nor_tag_are_ignored() {
    let reason = Delivery::github("push", "github/push.json")
        .edit(|v| v["ref"] = json!("refs/notes/commits"))
        .ignored();
    assert!(reason.contains("neither a branch nor a tag"), "{reason}");
}

#[test]
fn form_encoded_bodies_get_a_hint() {
    let err = Delivery::github("push", "github/push.json")
        .with_body(b"payload=%7B%22ref%22%3A%22refs%2Fheads%2Fmain%22%7D")
        .error();
    assert_eq!(err.status(), 400);
    assert!(
        err.to_string()
            .contains("set the webhook's content type to application/json"),
        "{err}"
    );
}

#[test]
fn a_missing_event_header_is_a_400() {
    let cases = [
        (
            "X-Gitlab-Event",
            Delivery::gitlab("Push Hook", "gitlab/push.json"),
        ),
        (
            "X-GitHub-Event",
            Delivery::github("push", "github/push.json"),
        ),
        (
            "X-Forgejo-Event",
            Delivery::forgejo("push", "gitea/push.json"),
        ),
    ];
    for (header, d) in cases {
        let err = d.without_header(header).error();
        assert_eq!(err.status(), 400, "{err}");
        assert_eq!(err.code(), "missing_event");
        assert!(err.to_string().contains("/api/v1/hooks/"), "{err}");
    }
}

#[test]
fn oversized_bodies_are_refused_before_anything_else() {
    let body = vec![b' '; MAX_BODY + 1];
    let d = Delivery::github("push", "github/push.json");
    let err = receive(Forge::Github, SECRET, &d.headers(), &body).unwrap_err();
    assert_eq!(err, HookError::TooLarge { size: MAX_BODY + 1 });
    assert_eq!(err.status(), 413);
    assert_eq!(
        parse(Forge::Github, &d.headers(), &body)
            .unwrap_err()
            .status(),
        413
    );
}

#[test]
fn unknown_forges_are_a_404() {
    assert_eq!("GitLab".parse::<Forge>(), Ok(Forge::Gitlab));
    assert_eq!("github".parse::<Forge>(), Ok(Forge::Github));
    assert_eq!("gitea".parse::<Forge>(), Ok(Forge::Gitea));
    let err = "bitbucket".parse::<Forge>().unwrap_err();
    assert_eq!(err.status(), 404);
    assert!(err.to_string().contains("/api/v1/hooks/forgejo"), "{err}");
}

// ---- Delivery ids ----------------------------------------------------------------------

#[test]
fn delivery_ids_come_from_the_forges_headers() {
    let github = Delivery::github("push", "github/push.json");
    assert_eq!(
        github.receive().unwrap().delivery_id.as_deref(),
        Some("f6266f16-1bf3-46a5-9ea4-602e06ead473")
    );
    let gitea = Delivery::gitea("push", "gitea/push.json");
    assert_eq!(
        delivery_id(Forge::Gitea, &gitea.headers(), &gitea.body).as_deref(),
        Some("f6266f16-1bf3-46a5-9ea4-602e06ead473")
    );
    let none = github.without_header("X-GitHub-Delivery");
    assert_eq!(
        delivery_id(Forge::Github, &none.headers(), &none.body),
        None
    );
}

#[test]
fn gitlab_delivery_ids_tell_apart_deliveries_that_share_an_event_uuid() {
    let main = Delivery::gitlab("Push Hook", "gitlab/push.json");
    let other_branch = main.clone().edit(|v| v["ref"] = json!("refs/heads/stable"));
    let id = |d: &Delivery| delivery_id(Forge::Gitlab, &d.headers(), &d.body).unwrap();
    assert!(id(&main).starts_with("f6266f16-1bf3-46a5-9ea4-602e06ead473:"));
    assert_eq!(id(&main), id(&main.clone()), "a replay has the same id");
    assert_ne!(id(&main), id(&other_branch));
    let keyed = main.set_header("Idempotency-Key", "908a6d9e-45fd-46c8-97e6-c4f350f219dd");
    assert_eq!(id(&keyed), "908a6d9e-45fd-46c8-97e6-c4f350f219dd");
}

#[test]
fn a_replay_is_a_409() {
    let err = HookError::Replayed {
        delivery_id: "f6266f16".into(),
    };
    assert_eq!(err.status(), 409);
    assert_eq!(err.code(), "replayed");
}

#[test]
fn headers_are_found_whatever_their_case() {
    let d = Delivery::github("push", "github/push.json");
    let lower: Vec<(String, String)> = d
        .headers
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
        .collect();
    let headers: Headers = lower
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    assert!(matches!(
        receive(Forge::Github, SECRET, &headers, &d.body),
        Ok(Received {
            event: HookEvent::Push(_),
            ..
        })
    ));
}

// ---- Into a pipeline's trigger ---------------------------------------------------------

fn project() -> ProjectInfo {
    ProjectInfo {
        id: 7,
        path: "apps/awesome".into(),
        url: "https://gantry.example.com/apps/awesome".into(),
        ..ProjectInfo::default()
    }
}

#[test]
fn a_push_sets_the_triggers_ref_commit_user_and_changes() {
    let push = Delivery::gitlab("Push Hook", "gitlab/push.json").push();
    let mut trigger = Trigger {
        project: project(),
        ..Trigger::default()
    };
    push.apply_to(&mut trigger);
    assert_eq!(trigger.source, Source::Push);
    assert_eq!(trigger.ref_name, "master");
    assert!(!trigger.is_tag);
    assert_eq!(trigger.commit.sha, push.after);
    assert_eq!(trigger.commit.before_sha, push.before);
    assert_eq!(trigger.commit.message, "fixed readme");
    assert_eq!(trigger.user.login, "jsmith");
    assert_eq!(trigger.changed_files, push.changed_paths);

    let tag = Delivery::github("push", "github/push-tag.json").push();
    tag.apply_to(&mut trigger);
    assert!(trigger.is_tag);
    assert_eq!(trigger.ref_name, "v1.2.0");
    assert_eq!(trigger.changed_files, None);
}

#[test]
fn a_merge_request_from_a_fork_is_never_protected() {
    let mr = Delivery::github("pull_request", "github/pull-request-synchronize-fork.json")
        .merge_request();
    let mut trigger = Trigger {
        protected: true,
        project: project(),
        ..Trigger::default()
    };
    mr.apply_to(&mut trigger);
    assert_eq!(trigger.source, Source::MergeRequestEvent);
    assert!(!trigger.protected);
    assert_eq!(trigger.ref_name, "fix-greeting");
    assert_eq!(trigger.commit.sha, mr.source_sha);
    let model = trigger.merge_request.as_ref().unwrap();
    assert_eq!(model.source_project_path, "monalisa/Hello-World");
    assert_eq!(model.source_project_id, 5829611);
    assert_eq!(model.target_branch_sha, mr.target_sha.clone().unwrap());

    // Within one repository the caller's protection stands.
    let same = Delivery::github("pull_request", "github/pull-request-opened.json").merge_request();
    let mut trigger = Trigger {
        protected: true,
        ..Trigger::default()
    };
    same.apply_to(&mut trigger);
    assert!(trigger.protected);
    assert_eq!(trigger.merge_request.unwrap().source_project_path, "");
}

#[test]
fn merge_request_variables_are_gitlabs() {
    let mr =
        Delivery::gitlab("Merge Request Hook", "gitlab/merge-request-open.json").merge_request();
    let vars = mr.variables(&project());
    let get = |name: &str| {
        vars.iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no {name} in {vars:?}"))
    };
    assert!(vars.iter().all(|(n, _)| n.starts_with("CI_MERGE_REQUEST_")));
    assert_eq!(get("CI_MERGE_REQUEST_IID"), "1");
    assert_eq!(get("CI_MERGE_REQUEST_ID"), "99");
    assert_eq!(get("CI_MERGE_REQUEST_TITLE"), "MS-Viewport");
    assert_eq!(
        get("CI_MERGE_REQUEST_DESCRIPTION"),
        "Makes the viewport work on MS browsers."
    );
    assert_eq!(get("CI_MERGE_REQUEST_SOURCE_BRANCH_NAME"), "ms-viewport");
    assert_eq!(get("CI_MERGE_REQUEST_TARGET_BRANCH_NAME"), "master");
    assert_eq!(get("CI_MERGE_REQUEST_PROJECT_PATH"), "apps/awesome");
    assert_eq!(get("CI_MERGE_REQUEST_SOURCE_PROJECT_PATH"), "apps/awesome");
    assert_eq!(get("CI_MERGE_REQUEST_LABELS"), "API");
    assert_eq!(get("CI_MERGE_REQUEST_ASSIGNEES"), "user1");
    assert_eq!(get("CI_MERGE_REQUEST_DRAFT"), "false");
    assert_eq!(
        get("CI_MERGE_REQUEST_REF_PATH"),
        "refs/merge-requests/1/head"
    );
    // A pipeline on the source head is what GitLab calls detached.
    assert_eq!(get("CI_MERGE_REQUEST_EVENT_TYPE"), "detached");
    assert_eq!(get("CI_MERGE_REQUEST_SOURCE_BRANCH_SHA"), "");
    assert_eq!(get("CI_MERGE_REQUEST_TARGET_BRANCH_SHA"), "");

    let fork = Delivery::gitea("pull_request", "gitea/pull-request-synchronized-fork.json")
        .merge_request()
        .variables(&project());
    let source = fork
        .iter()
        .find(|(n, _)| n == "CI_MERGE_REQUEST_SOURCE_PROJECT_PATH")
        .map(|(_, v)| v.as_str());
    assert_eq!(source, Some("alice/webhooks"));
}
