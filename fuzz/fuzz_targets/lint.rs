//! The whole lint path, as `gantry lint`, `gantry config` and `gantry plan` run it: load the
//! root file (includes served from memory), resolve, build the model, compile a plan for the
//! default trigger, and render the plan, the merged YAML and every diagnostic.
#![no_main]

use gantry_pipeline::diag::Diagnostics;
use gantry_pipeline::plan;
use gantry_pipeline::resolve::{FetchError, Fetched, Fetcher};
use gantry_pipeline::trigger::Trigger;
use libfuzzer_sys::fuzz_target;

/// A file with a `spec:inputs` header, included with `inputs:`.
const DEPLOY_YML: &str = "\
spec:
  inputs:
    env:
      options: [staging, production]
      default: staging
    stage:
      default: deploy
---
.deploy-base:
  image: alpine:3.20
  variables:
    TARGET: $[[ inputs.env ]]

deploy-$[[ inputs.env ]]:
  extends: .deploy-base
  stage: $[[ inputs.stage ]]
  script: ./deploy --to $[[ inputs.env ]]
  rules:
    - if: $CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH
      when: manual
    - when: never
";

/// A plain include with anchors, hidden jobs and `!reference`.
const BUILD_YML: &str = "\
.defaults: &defaults
  image: rust:1.95
  retry: 1
  before_script:
    - echo setup

.cache:
  cache:
    key: $CI_COMMIT_REF_SLUG
    paths: [target/]

build:
  <<: *defaults
  stage: build
  script:
    - !reference [.defaults, before_script]
    - cargo build
  artifacts:
    paths: [target/release/app]

test:
  extends: [.cache]
  stage: test
  needs: [build]
  parallel:
    matrix:
      - OS: [linux, macos]
  script: cargo test
";

const FILES: &[(&str, &str)] = &[
    ("templates/deploy.yml", DEPLOY_YML),
    ("ci/build.yml", BUILD_YML),
];

/// Serves the two files above as local files, as files of any other project and as remote
/// URLs ending in their path; lists a few more files for globs and `rules:exists`.
struct MemFetcher;

fn find(path: &str) -> Result<Fetched, FetchError> {
    FILES
        .iter()
        .find(|(p, _)| path == *p || path.ends_with(&format!("/{p}")))
        .map(|(p, t)| Fetched {
            name: (*p).to_string(),
            text: (*t).to_string(),
        })
        .ok_or(FetchError::NotFound)
}

impl Fetcher for MemFetcher {
    fn local(&self, path: &str) -> Result<Fetched, FetchError> {
        find(path)
    }
    fn local_files(&self) -> Result<Vec<String>, FetchError> {
        let mut files: Vec<String> = FILES.iter().map(|(p, _)| (*p).to_string()).collect();
        files.extend(["Cargo.toml", "src/main.rs", "README.md"].map(String::from));
        Ok(files)
    }
    fn project(
        &self,
        _project: &str,
        _ref: Option<&str>,
        path: &str,
    ) -> Result<Fetched, FetchError> {
        find(path.trim_start_matches('/'))
    }
    fn remote(&self, url: &str) -> Result<Fetched, FetchError> {
        if url.starts_with("https://") {
            find(url)
        } else {
            Err(FetchError::Unsupported("only https".into()))
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let loaded = gantry_pipeline::load(".gitlab-ci.yml", text, &MemFetcher, &|_| None);
    // `gantry lint`: text and JSON forms of the diagnostics.
    let _ = loaded.diagnostics.render(&loaded.sources);
    let _ = loaded.diagnostics.located(&loaded.sources);
    // `gantry config`: the merged tree.
    if let Some(merged) = &loaded.merged {
        let _ = merged.to_yaml();
    }
    // `gantry plan`.
    if let Some(p) = &loaded.pipeline {
        let mut diags = Diagnostics::new();
        let plan = plan::compile(p, &Trigger::default(), &mut diags);
        let _ = plan::render(&plan);
        for job in &plan.jobs {
            let _ = plan.job_variables(job);
        }
        let _ = diags.render(&loaded.sources);
    }
});
