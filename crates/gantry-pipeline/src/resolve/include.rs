//! `include:` — local files (with globs), files of other projects, remote URLs; `rules` on
//! includes; `inputs` passed to files with a `spec:` header. All I/O goes through [`Fetcher`],
//! so this stays pure: the server fetches from its git mirrors, `gantry run` from the working
//! tree, tests from a map in memory.

use super::{VarLookup, header_and_body};
use crate::diag::{Diagnostics, did_you_mean};
use crate::source::{FileId, SourceMap, Span};
use crate::yaml::{self, Map, Node, Value};
use std::collections::HashMap;

/// At most this many files may be included, as in GitLab.
pub const MAX_INCLUDES: usize = 150;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    NotFound,
    /// The source exists but this fetcher cannot reach it (e.g. remote includes offline).
    Unsupported(String),
    Failed(String),
}

/// What a fetch returns: the file's display name and text.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub name: String,
    pub text: String,
}

/// Where include files come from.
pub trait Fetcher {
    /// A file of this project at the pipeline's commit; `path` has no leading `/`.
    fn local(&self, path: &str) -> Result<Fetched, FetchError>;
    /// Every file of this project at that commit (for globs and `rules:exists`).
    fn local_files(&self) -> Result<Vec<String>, FetchError>;
    /// A file of another project, at `git_ref` or that project's default branch.
    fn project(
        &self,
        project: &str,
        git_ref: Option<&str>,
        path: &str,
    ) -> Result<Fetched, FetchError>;
    /// A file over HTTP(S); implementations apply a timeout and a size limit.
    fn remote(&self, url: &str) -> Result<Fetched, FetchError>;
}

/// A fetcher for a lone file: every include fails with a clear error.
#[derive(Debug, Default)]
pub struct NoFetcher;

impl Fetcher for NoFetcher {
    fn local(&self, _: &str) -> Result<Fetched, FetchError> {
        Err(FetchError::Unsupported(
            "no repository to read includes from".into(),
        ))
    }
    fn local_files(&self) -> Result<Vec<String>, FetchError> {
        Ok(Vec::new())
    }
    fn project(&self, _: &str, _: Option<&str>, _: &str) -> Result<Fetched, FetchError> {
        Err(FetchError::Unsupported(
            "no server to read other projects from".into(),
        ))
    }
    fn remote(&self, _: &str) -> Result<Fetched, FetchError> {
        Err(FetchError::Unsupported(
            "remote includes are not available here".into(),
        ))
    }
}

/// The kinds of include, for messages and `config --explain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IncludeKind {
    Local(String),
    Project {
        project: String,
        git_ref: Option<String>,
        file: String,
    },
    Remote(String),
}

pub(super) struct Ctx<'a> {
    fetcher: &'a dyn Fetcher,
    vars: VarLookup<'a>,
    pub(super) files: Vec<FileId>,
    count: usize,
    chain: Vec<String>,
    local_files: Option<Vec<String>>,
    over_limit_reported: bool,
    /// The project (and ref) of the file being expanded, when it is another project's: its
    /// `include: local` entries name files of that project.
    project: Vec<Option<(String, Option<String>)>>,
    /// `include:integrity` of remote includes: URL, expected `sha256-<base64>`, its place.
    integrity: Vec<(String, String, Span)>,
}

const INCLUDE_KEYS: &[&str] = &[
    "local",
    "project",
    "file",
    "ref",
    "remote",
    "template",
    "component",
    "inputs",
    "rules",
    "integrity",
];

impl<'a> Ctx<'a> {
    pub(super) fn new(fetcher: &'a dyn Fetcher, vars: VarLookup<'a>) -> Self {
        Ctx {
            fetcher,
            vars,
            files: Vec::new(),
            count: 0,
            chain: Vec::new(),
            local_files: None,
            over_limit_reported: false,
            project: vec![None],
            integrity: Vec::new(),
        }
    }

    /// Expands the `include:` of `body` (read from `file`) and returns the merged tree:
    /// included files in order, each later one over the earlier, and `body` over them all.
    pub(super) fn expand(
        &mut self,
        sources: &mut SourceMap,
        file: FileId,
        mut body: Node,
        diags: &mut Diagnostics,
    ) -> Node {
        self.files.push(file);
        self.chain.push(sources.name(file).to_string());
        let Some(map) = body.as_map_mut() else {
            self.chain.pop();
            return body;
        };
        let Some(inc) = map.remove("include").map(|e| e.value) else {
            self.chain.pop();
            return body;
        };
        let mut acc: Option<Node> = None;
        let items: Vec<Node> = match inc.value {
            Value::Seq(items) => items,
            Value::Null => Vec::new(),
            other => vec![Node {
                value: other,
                span: inc.span,
                tag: inc.tag,
            }],
        };
        for item in items {
            for (kind, span, given_inputs) in self.entries(item, diags) {
                if let Some(included) =
                    self.include_one(sources, kind, span, given_inputs.as_ref(), diags)
                {
                    match &mut acc {
                        None => acc = Some(included),
                        Some(a) => deep_merge(a, included),
                    }
                }
            }
        }
        self.chain.pop();
        match acc {
            None => body,
            Some(mut a) => {
                deep_merge(&mut a, body);
                a
            }
        }
    }

    /// The includes one `include:` item stands for (a glob may stand for several).
    fn entries(
        &mut self,
        item: Node,
        diags: &mut Diagnostics,
    ) -> Vec<(IncludeKind, Span, Option<Node>)> {
        let span = item.span;
        match &item.value {
            Value::Scalar(s, _) => {
                let s = self.expand_vars(s.trim());
                if s.starts_with("http://") || s.starts_with("https://") {
                    vec![(IncludeKind::Remote(s), span, None)]
                } else {
                    self.locals(&s, span, diags)
                        .into_iter()
                        .map(|k| (k, span, None))
                        .collect()
                }
            }
            Value::Map(m) => {
                for e in &m.entries {
                    if !INCLUDE_KEYS.contains(&e.key.as_str()) {
                        let mut d = crate::diag::Diagnostic::error(
                            "E0201",
                            format!("unknown include key '{}'", e.key),
                            Some(e.key_span),
                        );
                        if let Some(s) = did_you_mean(&e.key, INCLUDE_KEYS.iter().copied()) {
                            d = d.with_help(format!("did you mean '{s}'?"));
                        }
                        diags.push(d);
                    }
                }
                if let Some(e) = m.entry("integrity")
                    && !m.contains("remote")
                {
                    diags.warning(
                        "W0301",
                        "`integrity` has an effect only with `include:remote`",
                        Some(e.key_span),
                    );
                }
                let kinds: Vec<&str> = ["local", "project", "remote", "template", "component"]
                    .into_iter()
                    .filter(|k| m.contains(k))
                    .collect();
                if kinds.len() > 1 {
                    diags.error_help(
                        "E0202",
                        format!("an include uses {}; each include must use only one of local, project, remote, template or component", kinds.join(" and ")),
                        Some(span),
                        "split it into one include per file",
                    );
                    return Vec::new();
                }
                if let Some(rules) = m.get("rules")
                    && !self.rules_allow(rules, diags)
                {
                    return Vec::new();
                }
                let inputs = m.get("inputs").cloned();
                if let Some(local) = m.get("local") {
                    let Some(path) = str_of(local, "include:local", diags) else {
                        return Vec::new();
                    };
                    let path = self.expand_vars(path);
                    return self
                        .locals(&path, local.span, diags)
                        .into_iter()
                        .map(|k| (k, span, inputs.clone()))
                        .collect();
                }
                if let Some(remote) = m.get("remote") {
                    let Some(url) = str_of(remote, "include:remote", diags) else {
                        return Vec::new();
                    };
                    let url = self.expand_vars(url);
                    if !(url.starts_with("https://") || url.starts_with("http://")) {
                        diags.error(
                            "E0301",
                            format!("include:remote must be an http(s) URL, found '{url}'"),
                            Some(remote.span),
                        );
                        return Vec::new();
                    }
                    if let Some(i) = m.get("integrity").and_then(Node::as_str) {
                        self.integrity.push((
                            url.clone(),
                            i.to_string(),
                            m.get("integrity").map(|n| n.span).unwrap_or(span),
                        ));
                    }
                    return vec![(IncludeKind::Remote(url), span, inputs)];
                }
                if let Some(project) = m.get("project") {
                    let Some(project_name) = str_of(project, "include:project", diags) else {
                        return Vec::new();
                    };
                    let project_name = self.expand_vars(project_name);
                    let git_ref = m
                        .get("ref")
                        .and_then(|r| str_of(r, "include:ref", diags))
                        .map(|r| self.expand_vars(r));
                    let files: Vec<&Node> = match m.get("file") {
                        None => {
                            diags.error_help("E0202", "include:project needs `file:`", Some(project.span), "name the file(s) to include from that project, e.g. `file: /templates/ci.yml`");
                            return Vec::new();
                        }
                        Some(n) => match &n.value {
                            Value::Seq(items) => items.iter().collect(),
                            _ => vec![n],
                        },
                    };
                    return files
                        .into_iter()
                        .filter_map(|f| str_of(f, "include:file", diags).map(|p| (p, f.span)))
                        .map(|(p, s)| {
                            (
                                IncludeKind::Project {
                                    project: project_name.clone(),
                                    git_ref: git_ref.clone(),
                                    file: self.expand_vars(p).trim_start_matches('/').to_string(),
                                },
                                s,
                                inputs.clone(),
                            )
                        })
                        .collect();
                }
                if let Some(t) = m.get("template") {
                    diags.error_help(
                        "E0303",
                        format!("include:template '{}' is GitLab's template library, which Gantry does not ship", t.as_str().unwrap_or("?")),
                        Some(t.span),
                        "vendor the template into your repository and use `include: local: path/to/template.yml`",
                    );
                    return Vec::new();
                }
                if let Some(c) = m.get("component") {
                    diags.error_help("E0208", "include:component is not supported yet", Some(c.span), "vendor the component's template and include it with `include: local:` and `inputs:`");
                    return Vec::new();
                }
                diags.error_help(
                    "E0202",
                    "an include needs one of `local`, `project`, `remote` or `template`",
                    Some(span),
                    "for example `include: {local: ci/build.yml}`",
                );
                Vec::new()
            }
            _ => {
                diags.error(
                    "E0202",
                    format!(
                        "an include must be a string or a map, found {}",
                        item.a_kind()
                    ),
                    Some(span),
                );
                Vec::new()
            }
        }
    }

    /// Include paths may use the variables known before the pipeline (project, predefined
    /// `CI_PROJECT_*`, `CI_COMMIT_REF_NAME`, `CI_PIPELINE_SOURCE`, trigger variables); other
    /// references are left as written.
    fn expand_vars(&self, s: &str) -> String {
        let keep = crate::vars::ExpandOptions {
            keep_undefined: true,
            ..crate::vars::ExpandOptions::default()
        };
        crate::vars::expand_with(s, self.vars, keep)
    }

    fn locals(&mut self, path: &str, span: Span, diags: &mut Diagnostics) -> Vec<IncludeKind> {
        let path = path.trim().trim_start_matches('/');
        if let Some(Some((project, git_ref))) = self.project.last() {
            // "include: local checks that other project for the file."
            return vec![IncludeKind::Project {
                project: project.clone(),
                git_ref: git_ref.clone(),
                file: path.to_string(),
            }];
        }
        if !path.contains('*') {
            return vec![IncludeKind::Local(path.to_string())];
        }
        // GitLab's wildcard paths: `*` matches within one directory, `**` across directories
        // (`configs/**.yml` is every .yml file under configs/, `configs/**/*.yml` only those in
        // its subfolders); everything else is literal.
        let mut re = String::from("^");
        let mut rest = path;
        while let Some(i) = rest.find('*') {
            re.push_str(&regex::escape(&rest[..i]));
            if rest[i..].starts_with("**") {
                re.push_str(".*");
                rest = rest[i..].trim_start_matches('*');
            } else {
                re.push_str("[^/]*");
                rest = &rest[i + 1..];
            }
        }
        re.push_str(&regex::escape(rest));
        re.push('$');
        let Ok(glob) = regex::Regex::new(&re) else {
            diags.error("E0301", "invalid wildcard in include:local", Some(span));
            return Vec::new();
        };
        let files = self.local_files_cached();
        let mut hits: Vec<String> = files
            .iter()
            .filter(|f| glob.is_match(f))
            .filter(|f| f.ends_with(".yml") || f.ends_with(".yaml"))
            .cloned()
            .collect();
        hits.sort();
        if hits.is_empty() {
            diags.error_help(
                "E0301",
                format!("include:local '{path}' matches no file"),
                Some(span),
                "check the pattern: `*` stays in one directory, `**` crosses directories",
            );
        }
        hits.into_iter().map(IncludeKind::Local).collect()
    }

    fn local_files_cached(&mut self) -> &[String] {
        if self.local_files.is_none() {
            self.local_files = Some(self.fetcher.local_files().unwrap_or_default());
        }
        self.local_files.as_deref().unwrap_or_default()
    }

    fn rules_allow(&mut self, rules: &Node, diags: &mut Diagnostics) -> bool {
        let Some(items) = rules.as_seq() else {
            diags.error("E0202", "include:rules must be a list", Some(rules.span));
            return false;
        };
        for rule in items {
            let Some(m) = rule.as_map() else {
                diags.error("E0202", "an include rule must be a map", Some(rule.span));
                continue;
            };
            for e in &m.entries {
                match e.key.as_str() {
                    "if" | "exists" | "when" => {}
                    "changes" => diags.error_help(
                        "E0208",
                        "`include:rules:changes` is not supported yet",
                        Some(e.key_span),
                        "Gantry resolves includes before it knows the changed files; use `rules:changes` on the jobs",
                    ),
                    other => {
                        let mut d = crate::diag::Diagnostic::error(
                            "E0201",
                            format!("unknown key '{other}' in include:rules"),
                            Some(e.key_span),
                        );
                        if let Some(s) = did_you_mean(other, ["if", "exists", "changes", "when"]) {
                            d = d.with_help(format!("did you mean '{s}'?"));
                        }
                        diags.push(d);
                    }
                }
            }
            if let Some(w) = m.get("when")
                && !matches!(w.as_str(), Some("never" | "always"))
            {
                diags.error_help(
                    "E0202",
                    format!(
                        "include:rules:when cannot be '{}'",
                        w.as_str().unwrap_or(w.kind())
                    ),
                    Some(w.span),
                    "use never or always",
                );
            }
            let mut matched = true;
            if let Some(cond) = m.get("if") {
                matched &= match cond.as_str().map(crate::expr::parse) {
                    Some(Ok(e)) => e.evaluate(self.vars),
                    Some(Err(err)) => {
                        diags.error(
                            "E0501",
                            format!("invalid expression in include rules:if: {}", err.message),
                            Some(cond.span),
                        );
                        false
                    }
                    None => false,
                };
            }
            if let Some(ex) = m.get("exists") {
                let pats: Vec<String> = string_list(ex);
                let files = self.local_files_cached().to_vec();
                matched &= pats.iter().any(|p| {
                    crate::plan::fnmatch_glob(p.trim_start_matches('/'))
                        .is_some_and(|g| files.iter().any(|f| g.is_match(f)))
                });
            }
            if matched {
                return !matches!(m.get("when").and_then(Node::as_str), Some("never"));
            }
        }
        false
    }

    fn include_one(
        &mut self,
        sources: &mut SourceMap,
        kind: IncludeKind,
        span: Span,
        given_inputs: Option<&Node>,
        diags: &mut Diagnostics,
    ) -> Option<Node> {
        let file_name = match &kind {
            IncludeKind::Local(p) => p.as_str(),
            IncludeKind::Project { file, .. } => file.as_str(),
            IncludeKind::Remote(u) => u.split(['?', '#']).next().unwrap_or(u),
        };
        if !(file_name.ends_with(".yml") || file_name.ends_with(".yaml")) {
            diags.error_help(
                "E0301",
                format!("included file '{file_name}' does not have a YAML extension"),
                Some(span),
                "included files must end in .yml or .yaml",
            );
            return None;
        }
        self.count += 1;
        if self.count > MAX_INCLUDES {
            if !self.over_limit_reported {
                self.over_limit_reported = true;
                diags.error_help(
                    "E0302",
                    format!("more than {MAX_INCLUDES} files are included"),
                    Some(span),
                    "merge small include files, or remove includes that are included twice",
                );
            }
            return None;
        }
        let fetched = match &kind {
            IncludeKind::Local(p) => self.fetcher.local(p),
            IncludeKind::Project {
                project,
                git_ref,
                file,
            } => self.fetcher.project(project, git_ref.as_deref(), file),
            IncludeKind::Remote(url) => self.fetcher.remote(url),
        };
        let what = match &kind {
            IncludeKind::Local(p) => format!("local file '{p}'"),
            IncludeKind::Project {
                project,
                git_ref,
                file,
            } => format!(
                "file '{file}' of project '{project}'{}",
                git_ref
                    .as_deref()
                    .map(|r| format!(" at '{r}'"))
                    .unwrap_or_default()
            ),
            IncludeKind::Remote(u) => format!("remote file '{u}'"),
        };
        let fetched = match fetched {
            Ok(f) => f,
            Err(FetchError::NotFound) => {
                let help = match &kind {
                    IncludeKind::Local(_) => {
                        "check the path: local includes are relative to the repository root"
                    }
                    IncludeKind::Project { .. } => "check the project's path, the ref and the file",
                    IncludeKind::Remote(_) => {
                        "check the URL: it must be readable without authentication"
                    }
                };
                diags.error_help(
                    "E0301",
                    format!("included {what} does not exist"),
                    Some(span),
                    help,
                );
                return None;
            }
            Err(FetchError::Unsupported(why) | FetchError::Failed(why)) => {
                diags.error(
                    "E0301",
                    format!("included {what} could not be read: {why}"),
                    Some(span),
                );
                return None;
            }
        };
        if let IncludeKind::Remote(url) = &kind
            && let Some((_, want, ispan)) = self.integrity.iter().find(|(u, _, _)| u == url)
        {
            let got = format!(
                "sha256-{}",
                base64(&crate::vars::sha256_digest(fetched.text.as_bytes()))
            );
            if &got != want {
                diags.error_help(
                    "E0301",
                    format!(
                        "the integrity of remote file '{url}' does not match: its content is {got}"
                    ),
                    Some(*ispan),
                    "the file changed since the hash was written: check it and update `integrity`",
                );
                return None;
            }
        }
        if self.chain.contains(&fetched.name) {
            diags.error_help(
                "E0304",
                format!(
                    "include cycle: {} includes itself through {}",
                    fetched.name,
                    self.chain.join(" → ")
                ),
                Some(span),
                "remove one of the includes in the cycle",
            );
            return None;
        }
        let id = match sources.find(&fetched.name) {
            Some(id) if sources.get(id).text == fetched.text => id,
            _ => sources.add(fetched.name, fetched.text),
        };
        let docs = yaml::load_with_limits(sources, id, diags, yaml::Limits::default())?;
        let body = header_and_body(docs, diags, given_inputs)?;
        if !body.is_null() && body.as_map().is_none() {
            diags.error(
                "E0202",
                format!("the included {what} must contain a map of jobs and keywords"),
                Some(body.span),
            );
            return None;
        }
        let context = match &kind {
            IncludeKind::Project {
                project, git_ref, ..
            } => Some((project.clone(), git_ref.clone())),
            _ => self.project.last().cloned().flatten(),
        };
        self.project.push(context);
        let expanded = self.expand(sources, id, body, diags);
        self.project.pop();
        Some(expanded)
    }
}

/// Standard base64 with padding (for `include:integrity`).
fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(A[((n >> shift) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn str_of<'n>(n: &'n Node, what: &str, diags: &mut Diagnostics) -> Option<&'n str> {
    match n.as_str() {
        Some(s) => Some(s),
        None => {
            diags.error(
                "E0202",
                format!("{what} must be a string, found {}", n.a_kind()),
                Some(n.span),
            );
            None
        }
    }
}

pub(crate) fn string_list(n: &Node) -> Vec<String> {
    match &n.value {
        Value::Seq(items) => items
            .iter()
            .filter_map(|i| i.as_str().map(str::to_string))
            .collect(),
        Value::Scalar(s, _) => vec![s.clone()],
        _ => Vec::new(),
    }
}

/// GitLab's deep merge: maps merge key by key, recursively; anything else is replaced.
pub(crate) fn deep_merge(base: &mut Node, over: Node) {
    match (&mut base.value, over.value) {
        (Value::Map(b), Value::Map(o)) => merge_maps(b, o),
        (_, v) => {
            base.value = v;
            base.span = over.span;
            base.tag = over.tag;
        }
    }
}

pub(crate) fn merge_maps(base: &mut Map, over: Map) {
    // Top-level maps of large pipelines hold thousands of jobs: index them instead of
    // scanning the base for every key merged in.
    let mut index: Option<HashMap<String, usize>> = (base.entries.len() > 32).then(|| {
        base.entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.key.clone(), i))
            .collect()
    });
    for e in over.entries {
        let found = match &index {
            Some(ix) => ix.get(&e.key).copied(),
            None => base.entries.iter().position(|b| b.key == e.key),
        };
        match found.map(|i| &mut base.entries[i]) {
            Some(b)
                if b.value.as_map().is_some()
                    && e.value.as_map().is_some()
                    && e.value.tag.is_none() =>
            {
                deep_merge(&mut b.value, e.value);
            }
            Some(b) => {
                b.value = e.value;
                b.key_span = e.key_span;
            }
            None => {
                if let Some(ix) = &mut index {
                    ix.insert(e.key.clone(), base.entries.len());
                }
                base.entries.push(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_known_answers() {
        assert_eq!(super::base64(b""), "");
        assert_eq!(super::base64(b"f"), "Zg==");
        assert_eq!(super::base64(b"fo"), "Zm8=");
        assert_eq!(super::base64(b"foo"), "Zm9v");
        assert_eq!(super::base64(b"foobar"), "Zm9vYmFy");
    }
}
