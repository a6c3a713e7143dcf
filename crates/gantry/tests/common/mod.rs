//! Drives the built `gantry` binary the way a user does: a git repository in a temporary
//! directory, a pipeline file, a command, and what it prints.

#![allow(dead_code)]

pub mod fake;
pub mod oci;
pub mod registry;
pub mod server;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct Project {
    pub dir: tempfile::TempDir,
    /// XDG_CACHE_HOME for the runs: caches and run directories stay inside the test.
    pub cache: tempfile::TempDir,
    /// A directory jobs can write to (passed as `$OUT`), outside the workspaces.
    pub out: tempfile::TempDir,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

impl Project {
    /// A repository with `.gitlab-ci.yml` = `pipeline`, committed.
    pub fn new(pipeline: &str) -> Project {
        Self::with_files(&[(".gitlab-ci.yml", pipeline)])
    }

    pub fn with_files(files: &[(&str, &str)]) -> Project {
        let p = Project {
            dir: tempfile::tempdir().unwrap(),
            cache: tempfile::tempdir().unwrap(),
            out: tempfile::tempdir().unwrap(),
        };
        git(p.path(), &["init", "-q", "-b", "main"]);
        git(p.path(), &["config", "user.email", "dev@example.com"]);
        git(p.path(), &["config", "user.name", "Dev"]);
        for (name, text) in files {
            p.write(name, text);
        }
        p.commit("initial");
        p
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn out(&self) -> &Path {
        self.out.path()
    }

    pub fn write(&self, name: &str, text: &str) {
        let f = self.path().join(name);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, text).unwrap();
    }

    pub fn commit(&self, msg: &str) {
        git(self.path(), &["add", "-A"]);
        git(self.path(), &["commit", "-q", "--allow-empty", "-m", msg]);
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_gantry"));
        c.args(args)
            .current_dir(self.path())
            .env("XDG_CACHE_HOME", self.cache.path())
            .env_remove("CI")
            .env("NO_COLOR", "1");
        c
    }

    /// `gantry ARGS` in the project; jobs get `OUT` pointing at [`Project::out`].
    pub fn gantry(&self, args: &[&str]) -> Run {
        let out_var = format!("OUT={}", self.out().display());
        let mut all: Vec<&str> = args.to_vec();
        if args.first() == Some(&"run") {
            all.extend(["--plain", "--var", &out_var]);
        }
        let o: Output = self.command(&all).output().expect("running gantry");
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into(),
            stderr: String::from_utf8_lossy(&o.stderr).into(),
        }
    }

    pub fn read_out(&self, name: &str) -> String {
        std::fs::read_to_string(self.out().join(name)).unwrap_or_default()
    }
}

pub fn git(dir: &Path, args: &[&str]) {
    let st = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .status()
        .expect("git");
    assert!(st.success(), "git {args:?} failed");
}

/// The line of a job's final state, e.g. `✔ build passed in 0.1s`.
pub fn state_line<'a>(run: &'a Run, job: &str) -> Option<&'a str> {
    run.stdout.lines().rev().find(|l| {
        let mut parts = l.split_whitespace();
        let _mark = parts.next();
        parts.next() == Some(job)
            && !l.contains('│')
            && !l.contains(" running")
            && !l.contains(" — last lines")
    })
}

pub fn passed(run: &Run, job: &str) -> bool {
    state_line(run, job).is_some_and(|l| l.contains(" passed"))
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}
