//! A project's registry, as Harbor's and GitLab's container registry pages show one:
//!
//! - the registry page: its repositories (tag count, last push), the `docker pull` command
//!   on the server's external address, the registry settings (public pulls, push and promote
//!   roles, immutable and mutable tags, retention), changed here by maintainers;
//! - a repository's tags (digest, kind, size, pushed, last pulled), a page of 50 at a time;
//! - an image by tag or digest: its layers, config, platforms (an index), referrers
//!   (signatures, SBOMs), the tags naming its digest; delete a tag (maintainers; the
//!   checks of `DELETE /v2/…/manifests/TAG`), promote it (the checks of
//!   `POST /api/v1/registry/promote`, the refusal's reason shown beside the form);
//! - robot accounts (maintainers): made (the secret shown once) and revoked;
//! - the registry's history: promotions, deletions and API-run retention, from the
//!   audit log.
//!
//! Who sees what is decided as the registry decides it: the page's role in the route table,
//! then `Engine::registry_actions` for the caller (pull as a reporter, or as any member
//! when the project's registry is public; delete as a maintainer).

use super::projects::PER_PAGE;
use super::{Chrome, Error, PageResult, Pager, Viewer, at_least, html, see_other, when, when_opt};
use crate::AppState;
use crate::error::HttpError;
use crate::routes::registry::{dto, promote_image, save_settings};
use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use gantry_api::Role;
use gantry_api::rest::{
    ImagePromote, Project, RegistryPolicy, RegistrySettings, RetentionRule, Robot, RobotCreate,
};
use gantry_engine::engine::registry::{RegistryActions, RegistryPrincipal};
use gantry_registry::ImageRef;
use gantry_registry::browse::{Descriptor, Kind};
use gantry_store::db::{PageReq, RepositoryRow};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
pub struct PageOnly {
    #[serde(default)]
    page: Option<u32>,
}

/// What every registry page knows: the project, the caller's role and registry rights.
struct Ctx {
    project: Project,
    role: Option<Role>,
    actions: RegistryActions,
    /// `HOST[:PORT]` of image references.
    host: String,
}

async fn context(s: &AppState, v: &Viewer, key: &str) -> Result<Ctx, Error> {
    let id = s.engine.find_project(key).await?;
    let project = s.engine.project(id).await?;
    let role = v.role(s, id).await?;
    let actions = s
        .engine
        .registry_actions(&RegistryPrincipal::of(&v.caller), id)
        .await?;
    Ok(Ctx {
        project,
        role,
        actions,
        host: s.engine.registry_host(),
    })
}

/// `sha256:0123456789ab`: a digest as lists show it (the whole one in a title and a copy
/// button beside it).
pub fn short_digest(d: &str) -> String {
    match d.split_once(':') {
        Some((alg, hex)) => format!("{alg}:{}", hex.chars().take(12).collect::<String>()),
        None => d.to_string(),
    }
}

/// `0 B`, `512 B`, `1.5 KiB`, `23.4 MiB`, `1.02 GiB`.
pub fn size(bytes: i64) -> String {
    let b = bytes.max(0) as f64;
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if b < 1024.0 {
        return format!("{bytes} B");
    }
    let mut v = b / 1024.0;
    let mut unit = UNITS[0];
    for u in &UNITS[1..] {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    if v < 10.0 {
        format!("{v:.2} {unit}")
    } else {
        format!("{v:.1} {unit}")
    }
}

/// The repository `name` of project `project`; 404 for one that does not exist or belongs
/// to another project.
async fn repository(s: &AppState, project: &Project, name: &str) -> Result<RepositoryRow, Error> {
    match s.engine.db().repository(name).await? {
        Some(r) if r.project_id == project.id => Ok(r),
        _ => Err(Error(HttpError::not_found(format!(
            "no repository {name} in project {}: see its registry page for the ones it has",
            project.path
        )))),
    }
}

/// The page shown instead of images to someone who may see the project but not pull from
/// it (a guest of a project whose registry is not public).
#[derive(Debug, Template)]
#[template(path = "registry_closed.html")]
struct ClosedPage {
    chrome: Chrome,
    title: String,
    project: Project,
    role: String,
}

fn closed(v: Viewer, ctx: Ctx) -> PageResult {
    Ok(html(&ClosedPage {
        chrome: v.chrome,
        title: format!("Registry · {}", ctx.project.path),
        role: ctx.role.map(|r| r.to_string()).unwrap_or_default(),
        project: ctx.project,
    }))
}

// ---- the registry page ---------------------------------------------------------------------

#[derive(Debug)]
pub struct RepoView {
    pub name: String,
    pub tags: i64,
    pub last_push: String,
}

#[derive(Debug, Template)]
#[template(path = "registry.html")]
struct RegistryPage {
    chrome: Chrome,
    title: String,
    project: Project,
    host: String,
    pull: bool,
    push: bool,
    maintainer: bool,
    reporter: bool,
    role: String,
    repos: Vec<RepoView>,
    pager: Pager,
    settings: RegistrySettings,
    roles: Vec<&'static str>,
    immutable: String,
    mutable: String,
    retention: String,
}

/// `PATTERN keep_last=N pulled_within_days=N`, a rule per line.
fn retention_text(rules: &[RetentionRule]) -> String {
    rules
        .iter()
        .map(|r| {
            let mut line = r.tags.clone();
            if let Some(n) = r.keep_last {
                line.push_str(&format!(" keep_last={n}"));
            }
            if let Some(d) = r.pulled_within_days {
                line.push_str(&format!(" pulled_within_days={d}"));
            }
            line
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Reads [`retention_text`]'s lines back; a line that is not a rule says which and why.
fn parse_retention(text: &str) -> Result<Vec<RetentionRule>, HttpError> {
    let mut rules = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let mut words = line.split_whitespace();
        let Some(tags) = words.next() else { continue };
        let mut rule = RetentionRule {
            tags: tags.to_string(),
            keep_last: None,
            pulled_within_days: None,
        };
        for w in words {
            let bad = || {
                HttpError::bad_request(format!(
                    "retention, line {}: '{w}' is not keep_last=N or pulled_within_days=N \
                     (write PATTERN keep_last=10 pulled_within_days=7)",
                    i + 1
                ))
            };
            let (k, n) = w.split_once('=').ok_or_else(bad)?;
            let n: u32 = n.parse().map_err(|_| bad())?;
            match k {
                "keep_last" => rule.keep_last = Some(n),
                "pulled_within_days" => rule.pulled_within_days = Some(n),
                _ => return Err(bad()),
            }
        }
        rules.push(rule);
    }
    Ok(rules)
}

fn globs(text: &str) -> Vec<String> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|g| !g.is_empty())
        .map(String::from)
        .collect()
}

/// `GET /projects/{project}/registry`.
pub async fn page(
    State(s): State<AppState>,
    v: Viewer,
    Path(key): Path<String>,
    Query(q): Query<PageOnly>,
) -> PageResult {
    let ctx = context(&s, &v, &key).await?;
    let id = ctx.project.id;
    let page = PageReq::new(q.page, Some(PER_PAGE));
    let (repos, next) = if ctx.actions.pull {
        page.finish(s.engine.db().repository_summaries(id, page).await?)
    } else {
        (Vec::new(), None)
    };
    let settings = dto(&s.engine.registry_settings(&id.to_string()).await?);
    Ok(html(&RegistryPage {
        chrome: v.chrome,
        title: format!("Registry · {}", ctx.project.path),
        host: ctx.host,
        pull: ctx.actions.pull,
        push: ctx.actions.push,
        maintainer: at_least(ctx.role, Role::Maintainer),
        reporter: at_least(ctx.role, Role::Reporter),
        role: ctx.role.map(|r| r.to_string()).unwrap_or_default(),
        repos: repos
            .into_iter()
            .map(|r| RepoView {
                name: r.name,
                tags: r.tags,
                last_push: when_opt(r.last_push),
            })
            .collect(),
        pager: Pager::new(
            &format!("/projects/{id}/registry"),
            &[],
            page.page,
            next.is_some(),
        ),
        roles: Role::ALL.iter().map(|r| r.as_str()).collect(),
        immutable: settings.policy.immutable_tags.join(", "),
        mutable: settings.policy.mutable_tags.join(", "),
        retention: retention_text(&settings.policy.retention),
        settings,
        project: ctx.project,
    }))
}

#[derive(Debug, Deserialize)]
pub struct SettingsForm {
    #[serde(default)]
    public: Option<String>,
    #[serde(default)]
    push_role: String,
    #[serde(default)]
    promote_role: String,
    #[serde(default)]
    immutable_tags: String,
    #[serde(default)]
    mutable_tags: String,
    #[serde(default)]
    retention: String,
}

/// `POST /projects/{project}/registry/settings` (maintainers): what `PUT
/// /api/v1/projects/{p}/registry` does.
pub async fn set_settings(
    State(s): State<AppState>,
    v: Viewer,
    Path(key): Path<String>,
    Form(f): Form<SettingsForm>,
) -> PageResult {
    let id = s.engine.find_project(&key).await?;
    let role = |what: &str, r: &str| -> Result<Role, HttpError> {
        r.trim()
            .parse()
            .map_err(|e| HttpError::bad_request(format!("{what}: {e}")))
    };
    let body = RegistrySettings {
        public: f.public.is_some(),
        push_role: role("the push role", &f.push_role)?,
        promote_role: role("the promote role", &f.promote_role)?,
        policy: RegistryPolicy {
            immutable_tags: globs(&f.immutable_tags),
            mutable_tags: globs(&f.mutable_tags),
            retention: parse_retention(&f.retention)?,
        },
    };
    save_settings(&s, &v.caller, &id.to_string(), &body).await?;
    Ok(see_other(&format!("/projects/{id}/registry#settings")))
}

// ---- a repository --------------------------------------------------------------------------

#[derive(Debug)]
pub struct TagView {
    pub name: String,
    pub digest: String,
    pub short: String,
    pub kind: &'static str,
    pub size: String,
    pub bytes: i64,
    pub pushed: String,
    pub pushed_by: String,
    pub pulled: String,
}

#[derive(Debug, Template)]
#[template(path = "registry_repository.html")]
struct RepositoryPage {
    chrome: Chrome,
    title: String,
    project: Project,
    name: String,
    host: String,
    tags: Vec<TagView>,
    pager: Pager,
}

/// `GET /projects/{project}/registry/repositories/{*name}`.
pub async fn repository_page(
    State(s): State<AppState>,
    v: Viewer,
    Path((key, name)): Path<(String, String)>,
    Query(q): Query<PageOnly>,
) -> PageResult {
    let ctx = context(&s, &v, &key).await?;
    if !ctx.actions.pull {
        return closed(v, ctx);
    }
    let repo = repository(&s, &ctx.project, &name).await?;
    let page = PageReq::new(q.page, Some(PER_PAGE));
    let (rows, next) = page.finish(s.engine.db().tag_summaries(repo.id, page).await?);
    let tags = rows
        .into_iter()
        .map(|t| TagView {
            short: short_digest(&t.tag.digest),
            kind: Kind::of(&t.media_type, t.artifact_type.as_deref()).as_str(),
            size: size(t.size),
            bytes: t.size,
            pushed: when(t.tag.updated_at),
            pulled: when_opt(t.tag.pulled_at),
            name: t.tag.name,
            digest: t.tag.digest,
            pushed_by: t.tag.pushed_by,
        })
        .collect();
    Ok(html(&RepositoryPage {
        chrome: v.chrome,
        title: format!("{} · Registry", repo.name),
        pager: Pager::new(
            &format!(
                "/projects/{}/registry/repositories/{}",
                ctx.project.id, repo.name
            ),
            &[],
            page.page,
            next.is_some(),
        ),
        project: ctx.project,
        host: ctx.host,
        name: repo.name,
        tags,
    }))
}

// ---- an image ------------------------------------------------------------------------------

#[derive(Debug)]
pub struct DescView {
    pub digest: String,
    pub short: String,
    pub media_type: String,
    pub size: String,
    pub platform: String,
    pub image_size: String,
    pub foreign: bool,
}

fn desc_view(d: &Descriptor) -> DescView {
    DescView {
        short: short_digest(&d.digest),
        digest: d.digest.clone(),
        media_type: d.media_type.clone(),
        size: size(d.size),
        platform: d.platform.clone().unwrap_or_default(),
        image_size: d.image_size.map(size).unwrap_or_default(),
        foreign: d.foreign,
    }
}

#[derive(Debug)]
pub struct ReferrerView {
    pub digest: String,
    pub short: String,
    pub artifact_type: String,
    pub size: String,
    pub pushed: String,
}

#[derive(Debug, Template)]
#[template(path = "registry_image.html")]
struct ImagePage {
    chrome: Chrome,
    title: String,
    project: Project,
    host: String,
    name: String,
    /// The tag the page was opened by, if any.
    tag: Option<String>,
    /// `NAME:TAG` or `NAME@DIGEST`: what the page shows, as promotion's source.
    reference: String,
    digest: String,
    kind: &'static str,
    media_type: String,
    artifact_type: String,
    size: String,
    manifest_size: String,
    pushed_by: String,
    pushed: String,
    pulled: String,
    subject: Option<String>,
    config: Option<DescView>,
    layers: Vec<DescView>,
    platforms: Vec<DescView>,
    annotations: Vec<(String, String)>,
    referrers: Vec<ReferrerView>,
    tags: Vec<String>,
    immutable: bool,
    delete: bool,
    /// Promotion: the caller may promote into at least one project (suggested
    /// destinations); or why not.
    promote_targets: Vec<String>,
    promote_error: Option<String>,
    destination: String,
}

/// What the promote form sends back to the page when it is refused.
struct PromoteAttempt {
    error: HttpError,
    destination: String,
}

/// `GET /projects/{project}/registry/images/{*reference}`: `NAME:TAG` or `NAME@DIGEST`.
pub async fn image_page(
    State(s): State<AppState>,
    v: Viewer,
    Path((key, reference)): Path<(String, String)>,
) -> PageResult {
    render_image(&s, v, &key, &reference, None).await
}

async fn render_image(
    s: &AppState,
    v: Viewer,
    key: &str,
    reference: &str,
    attempt: Option<PromoteAttempt>,
) -> PageResult {
    let ctx = context(s, &v, key).await?;
    if !ctx.actions.pull {
        // A refused promotion by someone who may not see the image: the refusal alone.
        if let Some(a) = attempt {
            return Err(Error(a.error));
        }
        return closed(v, ctx);
    }
    let image = ImageRef::parse(reference).map_err(|e| {
        HttpError::not_found(format!(
            "{reference} is not an image: {e} (open NAME:TAG or NAME@sha256:…)"
        ))
    })?;
    let repo = repository(s, &ctx.project, &image.name).await?;
    if image.tag.is_none() && image.digest.is_none() {
        return Ok(see_other(&format!(
            "/projects/{}/registry/repositories/{}",
            ctx.project.id, repo.name
        )));
    }
    let db = s.engine.db();
    let unknown = || {
        Error(HttpError::not_found(format!(
            "{reference} is not in the registry (it may have been deleted)"
        )))
    };
    let tag_row = match &image.tag {
        Some(t) => Some(db.tag(repo.id, t).await?.ok_or_else(unknown)?),
        None => None,
    };
    let digest = match (&image.digest, &tag_row) {
        (Some(d), Some(t)) if d.to_string() != t.digest => return Err(unknown()),
        (Some(d), _) => d.to_string(),
        (None, Some(t)) => t.digest.clone(),
        (None, None) => unreachable!("a tag or a digest, checked above"),
    };
    let view = s
        .registry
        .manifest_view(&repo, &digest)
        .await?
        .ok_or_else(unknown)?;
    let (tags, referrers) = tokio::try_join!(
        db.tags_of_manifest(repo.id, &digest),
        db.referrers(repo.id, &digest),
    )?;
    let immutable = match &image.tag {
        Some(t) => s.registry.tag_is_immutable(repo.project_id, t).await?,
        None => false,
    };
    let promote_targets = s.engine.registry_promote_targets(&v.caller, 100).await?;
    // Suggested destinations: the same repository and tag under each project one may
    // promote into (`dev/app:1.4` → `test/app:1.4`).
    let rest = repo
        .name
        .strip_prefix(&format!("{}/", ctx.project.path))
        .unwrap_or(&repo.name)
        .to_string();
    let tag_part = image.tag.clone().unwrap_or_else(|| "TAG".into());
    let status = attempt.as_ref().map(|a| a.error.status);
    let page = ImagePage {
        chrome: v.chrome,
        title: format!("{reference} · Registry"),
        host: ctx.host,
        name: repo.name.clone(),
        reference: image.to_string(),
        tag: image.tag.clone(),
        kind: view.kind.as_str(),
        media_type: view.row.media_type.clone(),
        artifact_type: view
            .row
            .artifact_type
            .clone()
            .filter(|_| view.kind == Kind::Artifact)
            .unwrap_or_default(),
        size: size(view.size),
        manifest_size: size(view.row.size),
        pushed_by: tag_row
            .as_ref()
            .map_or_else(|| view.row.pushed_by.clone(), |t| t.pushed_by.clone()),
        pushed: when(
            tag_row
                .as_ref()
                .map_or(view.row.created_at, |t| t.updated_at),
        ),
        pulled: when_opt(tag_row.as_ref().and_then(|t| t.pulled_at)),
        subject: view.row.subject.clone(),
        config: view.config.as_ref().map(desc_view),
        layers: view.layers.iter().map(desc_view).collect(),
        platforms: view.manifests.iter().map(desc_view).collect(),
        annotations: view.annotations.clone(),
        referrers: referrers
            .into_iter()
            .map(|m| ReferrerView {
                short: short_digest(&m.digest),
                artifact_type: m.artifact_type.unwrap_or(m.media_type),
                size: size(m.size),
                pushed: when(m.created_at),
                digest: m.digest,
            })
            .collect(),
        tags,
        immutable,
        delete: ctx.actions.delete,
        destination: attempt
            .as_ref()
            .map(|a| a.destination.clone())
            .unwrap_or_default(),
        promote_error: attempt.map(|a| a.error.message),
        promote_targets: promote_targets
            .iter()
            .map(|p| format!("{p}/{rest}:{tag_part}"))
            .collect(),
        digest,
        project: ctx.project,
    };
    let mut resp = html(&page);
    if let Some(st) = status {
        *resp.status_mut() = st;
    }
    Ok(resp)
}

#[derive(Debug, Deserialize)]
pub struct TagForm {
    #[serde(default)]
    repository: String,
    #[serde(default)]
    tag: String,
}

/// `POST /projects/{project}/registry/tags/delete` (maintainers): deletes a tag as `DELETE
/// /v2/NAME/manifests/TAG` does (the caller's delete right, the tag's immutability); the
/// image stays by digest.
pub async fn delete_tag(
    State(s): State<AppState>,
    v: Viewer,
    Path(key): Path<String>,
    Form(f): Form<TagForm>,
) -> PageResult {
    let ctx = context(&s, &v, &key).await?;
    let repo = repository(&s, &ctx.project, f.repository.trim()).await?;
    if !ctx.actions.delete {
        return Err(Error(HttpError::forbidden(
            "deleting a tag needs the maintainer role (and, with a personal access token, \
             the api or write_registry scope)",
        )));
    }
    s.registry
        .delete_tag(&repo.name, f.tag.trim(), &v.caller.name())
        .await?;
    Ok(see_other(&format!(
        "/projects/{}/registry/repositories/{}",
        ctx.project.id, repo.name
    )))
}

#[derive(Debug, Deserialize)]
pub struct PromoteForm {
    #[serde(default)]
    source: String,
    #[serde(default)]
    destination: String,
}

/// `POST /projects/{project}/registry/promote`: promotes an image of the project as `POST
/// /api/v1/registry/promote` does; refused, the image's page again with the reason beside
/// the form.
pub async fn promote(
    State(s): State<AppState>,
    v: Viewer,
    Path(key): Path<String>,
    Form(f): Form<PromoteForm>,
) -> PageResult {
    let id = s.engine.find_project(&key).await?;
    let source = f.source.trim().to_string();
    let image =
        ImageRef::parse(&source).map_err(|e| HttpError::bad_request(format!("the source: {e}")))?;
    let owner = s.registry.project_of(&image.name).await?;
    if owner != Some(id) {
        return Err(Error(HttpError::not_found(format!(
            "{} is not a repository of this project",
            image.name
        ))));
    }
    let body = ImagePromote {
        source: source.clone(),
        destination: f.destination.trim().to_string(),
    };
    match promote_image(&s, &v.caller, &body).await {
        Ok(done) => {
            let (name, _) = done
                .destination
                .rsplit_once(':')
                .unwrap_or((done.destination.as_str(), ""));
            let to = s.registry.project_of(name).await?.unwrap_or(id);
            Ok(see_other(&format!(
                "/projects/{to}/registry/images/{}",
                done.destination
            )))
        }
        Err(error) => {
            render_image(
                &s,
                v,
                &key,
                &source,
                Some(PromoteAttempt {
                    error,
                    destination: body.destination,
                }),
            )
            .await
        }
    }
}

// ---- robot accounts ------------------------------------------------------------------------

#[derive(Debug)]
pub struct RobotView {
    pub r: Robot,
    pub expires: String,
    pub created: String,
    pub used: String,
}

#[derive(Debug, Template)]
#[template(path = "registry_robots.html")]
struct RobotsPage {
    chrome: Chrome,
    title: String,
    project: Project,
    host: String,
    robots: Vec<RobotView>,
    /// A robot account just made: its name and secret, shown this once.
    new_robot: Option<NewRobot>,
}

#[derive(Debug)]
pub struct NewRobot {
    pub username: String,
    pub secret: String,
}

/// `GET /projects/{project}/registry/robots` (maintainers).
pub async fn robots(State(s): State<AppState>, v: Viewer, Path(key): Path<String>) -> PageResult {
    render_robots(&s, v, &key, None).await
}

async fn render_robots(
    s: &AppState,
    v: Viewer,
    key: &str,
    new_robot: Option<NewRobot>,
) -> PageResult {
    let id = s.engine.find_project(key).await?;
    let project = s.engine.project(id).await?;
    let robots = s.engine.robots(&id.to_string()).await?;
    Ok(html(&RobotsPage {
        chrome: v.chrome,
        title: format!("Robot accounts · {}", project.path),
        project,
        host: s.engine.registry_host(),
        robots: robots
            .into_iter()
            .map(|r| RobotView {
                expires: when_opt(r.expires_at),
                created: when(r.created_at),
                used: when_opt(r.last_used_at),
                r,
            })
            .collect(),
        new_robot,
    }))
}

#[derive(Debug, Deserialize)]
pub struct RobotForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    push: Option<String>,
    /// Days until it stops working; never when empty.
    #[serde(default)]
    expires_days: String,
}

/// `POST /projects/{project}/registry/robots` (maintainers): makes a robot account and shows
/// its secret, this once.
pub async fn create_robot(
    State(s): State<AppState>,
    v: Viewer,
    Path(key): Path<String>,
    Form(f): Form<RobotForm>,
) -> PageResult {
    let id = s.engine.find_project(&key).await?;
    let days = f.expires_days.trim();
    let expires_at = if days.is_empty() {
        None
    } else {
        let n: i64 = days.parse().ok().filter(|n| (1..=3650).contains(n)).ok_or_else(|| {
            HttpError::bad_request(format!(
                "expires in '{days}' days: give a number of days from 1 to 3650, or nothing for never"
            ))
        })?;
        Some(gantry_store::db::now_ms() + n * 86_400_000)
    };
    let mut actions = vec!["pull".to_string()];
    if f.push.is_some() {
        actions.push("push".into());
    }
    let made = s
        .engine
        .create_robot(
            &id.to_string(),
            &RobotCreate {
                name: f.name.trim().to_string(),
                actions,
                expires_at,
            },
            &v.caller.name(),
        )
        .await?;
    let token = made.token.unwrap_or_default();
    render_robots(
        &s,
        v,
        &id.to_string(),
        Some(NewRobot {
            username: made.username,
            secret: token,
        }),
    )
    .await
}

#[derive(Debug, Deserialize)]
pub struct IdForm {
    #[serde(default)]
    id: i64,
}

/// `POST /projects/{project}/registry/robots/revoke` (maintainers).
pub async fn revoke_robot(
    State(s): State<AppState>,
    v: Viewer,
    Path(key): Path<String>,
    Form(f): Form<IdForm>,
) -> PageResult {
    let id = s.engine.find_project(&key).await?;
    s.engine
        .revoke_robot(&id.to_string(), f.id, &v.caller.name())
        .await?;
    Ok(see_other(&format!("/projects/{id}/registry/robots")))
}

// ---- history -------------------------------------------------------------------------------

#[derive(Debug)]
pub struct HistoryView {
    pub at: String,
    pub actor: String,
    /// `promoted`, `deleted`, `retention`.
    pub what: &'static str,
    pub digest: String,
    pub short: String,
    pub from: String,
    pub to: String,
}

#[derive(Debug, Template)]
#[template(path = "registry_history.html")]
struct HistoryPage {
    chrome: Chrome,
    title: String,
    project: Project,
    events: Vec<HistoryView>,
    pager: Pager,
}

/// `GET /projects/{project}/registry/history` (reporters).
pub async fn history(
    State(s): State<AppState>,
    v: Viewer,
    Path(key): Path<String>,
    Query(q): Query<PageOnly>,
) -> PageResult {
    let id = s.engine.find_project(&key).await?;
    let project = s.engine.project(id).await?;
    let page = PageReq::new(q.page, Some(PER_PAGE));
    let list = s.engine.registry_history(id, page).await?;
    let events = list
        .items
        .into_iter()
        .map(|e| {
            let detail = |k: &str| {
                e.details
                    .as_ref()
                    .and_then(|d| d[k].as_str())
                    .unwrap_or_default()
                    .to_string()
            };
            let digest = detail("digest");
            let (what, from, to) = match e.action.as_str() {
                "registry.promote" => ("promoted", detail("source"), e.target.clone()),
                "registry.delete" => ("deleted", e.target.clone(), String::new()),
                _ => ("retention", e.target.clone(), String::new()),
            };
            HistoryView {
                at: when(e.at),
                actor: e.actor,
                what,
                short: short_digest(&digest),
                digest,
                from,
                to,
            }
        })
        .collect();
    Ok(html(&HistoryPage {
        chrome: v.chrome,
        title: format!("Registry history · {}", project.path),
        pager: Pager::new(
            &format!("/projects/{id}/registry/history"),
            &[],
            page.page,
            list.next_page.is_some(),
        ),
        project,
        events,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_digests_read_well() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(512), "512 B");
        assert_eq!(size(1536), "1.50 KiB");
        assert_eq!(size(24_536_000), "23.4 MiB");
        assert_eq!(size(1_100_000_000), "1.02 GiB");
        let d = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(short_digest(&d), "sha256:abababababab");
    }

    #[test]
    fn retention_rules_read_back_what_the_page_writes() {
        let rules = vec![
            RetentionRule {
                tags: "build-*".into(),
                keep_last: Some(10),
                pulled_within_days: None,
            },
            RetentionRule {
                tags: "nightly-*".into(),
                keep_last: Some(2),
                pulled_within_days: Some(7),
            },
        ];
        let text = retention_text(&rules);
        assert_eq!(
            text,
            "build-* keep_last=10\nnightly-* keep_last=2 pulled_within_days=7"
        );
        assert_eq!(parse_retention(&format!("{text}\n\n")).unwrap(), rules);
        let e = parse_retention("ok keep_last=1\nbad keep=3").unwrap_err();
        assert!(
            e.message.contains("line 2") && e.message.contains("keep=3"),
            "{}",
            e.message
        );
        assert!(parse_retention("x keep_last=-1").is_err());
        assert_eq!(globs("v*, 1.*\nrelease-*"), vec!["v*", "1.*", "release-*"]);
    }
}
