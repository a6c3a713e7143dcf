//! The server's git mirrors on real repositories made in temp dirs: fetching from a path and
//! a file:// URL, resolving, reading files at commits, diffs, archives, the include fetcher,
//! and credentials that stay out of config files and messages.

use gantry_engine::git::{GitError, Mirror, MirrorFetcher, Remote, Timeouts};
use gantry_pipeline::resolve::{FetchError, Fetcher};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Runs git in `dir` with a fixed identity and no user configuration; returns stdout.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Ada Lovelace")
        .env("GIT_AUTHOR_EMAIL", "ada@example.com")
        .env("GIT_AUTHOR_DATE", "2022-01-31T16:47:55+01:00")
        .env("GIT_COMMITTER_NAME", "Ci Bot")
        .env("GIT_COMMITTER_EMAIL", "bot@example.com")
        .env("GIT_COMMITTER_DATE", "2022-01-31T16:47:55+01:00")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .trim_end()
        .to_string()
}

fn write(dir: &Path, path: &str, text: &str) {
    let p = dir.join(path);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// A working repository with a branch `main` and one commit of `files`; returns its sha.
fn source_repo(dir: &Path, files: &[(&str, &str)]) -> String {
    std::fs::create_dir_all(dir).unwrap();
    git(dir, &["init", "-q", "-b", "main"]);
    commit(dir, files, "first commit")
}

fn commit(dir: &Path, files: &[(&str, &str)], message: &str) -> String {
    for (p, t) in files {
        write(dir, p, t);
    }
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", message]);
    git(dir, &["rev-parse", "HEAD"])
}

fn open(tmp: &Path, name: &str, remote: Remote) -> Mirror {
    Mirror::open(tmp.join("mirrors").join(name), remote).expect("mirror opens")
}

#[test]
fn a_local_path_mirror_resolves_and_reads_at_two_commits() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let a = source_repo(
        &src,
        &[
            (".gitlab-ci.yml", "job:\n  script: echo a\n"),
            ("ci/a.yml", "a: 1\n"),
            ("my dir/file name.txt", "spaces\n"),
        ],
    );
    git(&src, &["tag", "-a", "-m", "release one", "v1"]);
    git(&src, &["tag", "light"]);
    git(&src, &["checkout", "-q", "-b", "feature"]);
    git(&src, &["rm", "-q", "ci/a.yml"]);
    let b = commit(
        &src,
        &[
            (".gitlab-ci.yml", "job:\n  script: echo b\n"),
            ("new.txt", "n\n"),
        ],
        "Second: change things\n\nWith a body.",
    );
    git(&src, &["checkout", "-q", "main"]);

    let m = open(tmp.path(), "p", Remote::new(src.to_str().unwrap()));
    assert_eq!(m.resolve("main").unwrap(), None, "nothing before the fetch");
    assert_eq!(m.default_branch().unwrap(), None);
    m.fetch(&[]).unwrap();

    assert_eq!(m.resolve("main").unwrap().as_deref(), Some(a.as_str()));
    assert_eq!(m.resolve("feature").unwrap().as_deref(), Some(b.as_str()));
    assert_eq!(
        m.resolve("v1").unwrap().as_deref(),
        Some(a.as_str()),
        "annotated tags peel"
    );
    assert_eq!(m.resolve("light").unwrap().as_deref(), Some(a.as_str()));
    assert_eq!(m.resolve(&b).unwrap().as_deref(), Some(b.as_str()));
    assert_eq!(m.resolve(&b[..10]).unwrap().as_deref(), Some(b.as_str()));
    assert_eq!(m.resolve("nope").unwrap(), None);
    assert!(m.resolve("--upload-pack=touch /tmp/x").is_err());
    assert!(m.is_branch("feature").unwrap());
    assert!(!m.is_branch("v1").unwrap());
    assert!(m.is_tag("v1").unwrap() && m.is_tag("light").unwrap());
    assert!(!m.is_tag("main").unwrap());
    assert_eq!(m.default_branch().unwrap().as_deref(), Some("main"));

    let ci = |sha: &str| String::from_utf8(m.read_file(sha, ".gitlab-ci.yml").unwrap().unwrap());
    assert_eq!(ci(&a).unwrap(), "job:\n  script: echo a\n");
    assert_eq!(ci(&b).unwrap(), "job:\n  script: echo b\n");
    assert_eq!(m.read_file(&a, "/ci/a.yml").unwrap().unwrap(), b"a: 1\n");
    assert_eq!(m.read_file(&b, "ci/a.yml").unwrap(), None, "deleted in b");
    assert_eq!(m.read_file(&a, "missing.yml").unwrap(), None);
    assert_eq!(
        m.read_file(&a, "ci").unwrap(),
        None,
        "a directory is not a file"
    );
    assert_eq!(
        m.read_file(&a, "my dir/file name.txt").unwrap().unwrap(),
        b"spaces\n"
    );
    assert!(m.read_file(&a, "../x").is_err());
    match m.read_file_limited(&a, ".gitlab-ci.yml", 5) {
        Err(GitError::TooLarge {
            size: 22, max: 5, ..
        }) => {}
        other => panic!("{other:?}"),
    }
    // The batch process is still in step after skipping that file.
    assert_eq!(m.read_file(&a, "ci/a.yml").unwrap().unwrap(), b"a: 1\n");

    assert_eq!(
        m.list_files(&a).unwrap(),
        [".gitlab-ci.yml", "ci/a.yml", "my dir/file name.txt"]
    );
    assert_eq!(
        m.list_files("feature").unwrap(),
        [".gitlab-ci.yml", "my dir/file name.txt", "new.txt"]
    );
    assert_eq!(
        m.changed_files(&a, &b).unwrap(),
        [".gitlab-ci.yml", "ci/a.yml", "new.txt"]
    );
    assert!(matches!(
        m.changed_files(&"0".repeat(40), &b),
        Err(GitError::UnknownRevision { .. })
    ));

    let c = m.commit_info(&b).unwrap();
    assert_eq!(c.sha, b);
    assert_eq!(c.short_sha, &b[..8]);
    assert_eq!(c.title, "Second: change things");
    assert_eq!(c.message, "Second: change things\n\nWith a body.");
    assert_eq!(c.author_name, "Ada Lovelace");
    assert_eq!(c.author_email, "ada@example.com");
    assert_eq!(c.timestamp, "2022-01-31T15:47:55Z");
    assert_eq!(c.author_date, "2022-01-31T16:47:55+01:00");
    assert_eq!(c.parents, vec![a.clone()]);
    assert!(m.commit_info(&"f".repeat(40)).is_err());
    assert_eq!(
        m.commit_info("v1").unwrap().sha,
        a,
        "a tag peels to its commit"
    );
}

#[test]
fn a_file_url_mirror_follows_new_commits_deleted_branches_and_the_default_branch() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let first = source_repo(&src, &[("f.txt", "1\n")]);
    git(&src, &["branch", "gone"]);
    git(&src, &["branch", "-m", "main", "trunk"]);
    let m = open(
        tmp.path(),
        "p",
        Remote::new(format!("file://{}", src.display())),
    );
    m.fetch(&[]).unwrap();
    assert_eq!(m.default_branch().unwrap().as_deref(), Some("trunk"));
    assert_eq!(m.resolve("trunk").unwrap().as_deref(), Some(first.as_str()));

    let second = commit(&src, &[("f.txt", "2\n")], "second");
    assert_eq!(m.resolve("trunk").unwrap().as_deref(), Some(first.as_str()));
    m.fetch(&["trunk"]).unwrap();
    assert_eq!(
        m.resolve("trunk").unwrap().as_deref(),
        Some(second.as_str())
    );
    assert_eq!(m.read_file("trunk", "f.txt").unwrap().unwrap(), b"2\n");
    assert_eq!(m.read_file(&first, "f.txt").unwrap().unwrap(), b"1\n");

    git(&src, &["tag", "v2"]);
    m.fetch(&["refs/tags/v2"]).unwrap();
    assert!(m.is_tag("v2").unwrap());
    match m.fetch(&["no-such-branch"]) {
        Err(e @ GitError::RefNotFound { .. }) => {
            assert!(e.to_string().contains("no-such-branch"), "{e}")
        }
        other => panic!("{other:?}"),
    }

    git(&src, &["branch", "-D", "gone"]);
    assert!(m.is_branch("gone").unwrap());
    m.fetch(&[]).unwrap();
    assert!(!m.is_branch("gone").unwrap(), "deleted branches are pruned");

    // Opening again keeps everything and changes nothing.
    drop(m);
    let m = open(
        tmp.path(),
        "p",
        Remote::new(format!("file://{}", src.display())),
    );
    assert_eq!(m.resolve("v2").unwrap().as_deref(), Some(second.as_str()));
}

#[test]
fn a_missing_repository_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let m = open(
        tmp.path(),
        "p",
        Remote::new(tmp.path().join("nothing").to_str().unwrap()),
    );
    let e = m.fetch(&[]).unwrap_err();
    assert!(matches!(e, GitError::RepoNotFound { .. }), "{e:?}");
    assert!(e.to_string().contains("check the project's URL"), "{e}");
}

#[test]
fn archives_hold_every_file_of_the_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let a = source_repo(
        &src,
        &[
            ("a.txt", "a\n"),
            ("sub/b.txt", "b\n"),
            ("secret-ish/ignored.txt", "still here\n"),
            (".gitattributes", "secret-ish export-ignore\n"),
        ],
    );
    let m = open(tmp.path(), "p", Remote::new(src.to_str().unwrap()));
    m.fetch(&[]).unwrap();
    let tar = tmp.path().join("out.tar");
    let mut f = std::fs::File::create(&tar).unwrap();
    let n = m.archive(&a, &mut f).unwrap();
    drop(f);
    assert_eq!(n, std::fs::metadata(&tar).unwrap().len());
    let listing = Command::new("tar").arg("-tf").arg(&tar).output().unwrap();
    let mut names: Vec<String> = String::from_utf8(listing.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.ends_with('/'))
        .map(str::to_string)
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            ".gitattributes",
            "a.txt",
            "secret-ish/ignored.txt",
            "sub/b.txt"
        ]
    );
    let x = tmp.path().join("x");
    std::fs::create_dir(&x).unwrap();
    let st = Command::new("tar")
        .arg("-xf")
        .arg(&tar)
        .arg("-C")
        .arg(&x)
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(std::fs::read_to_string(x.join("sub/b.txt")).unwrap(), "b\n");

    // A reader that goes away stops git instead of leaving it behind.
    struct Broken;
    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("client went away"))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let e = m.archive(&a, &mut Broken).unwrap_err();
    assert!(e.to_string().contains("client went away"), "{e}");
    assert!(m.archive("nope", &mut Vec::new()).is_err());
}

#[test]
fn the_fetcher_reads_local_and_project_includes_at_their_commits() {
    let tmp = tempfile::tempdir().unwrap();
    let lib_src = tmp.path().join("lib");
    source_repo(
        &lib_src,
        &[
            (
                "templates/t.yml",
                "include:\n  - local: templates/inner.yml\nfrom_lib_v1:\n  script: echo v1\n",
            ),
            ("templates/inner.yml", "inner_job:\n  script: echo inner\n"),
        ],
    );
    git(&lib_src, &["tag", "v1"]);
    commit(
        &lib_src,
        &[("templates/t.yml", "from_lib_main:\n  script: echo main\n")],
        "main moves on",
    );
    let app_src = tmp.path().join("app");
    let app_sha = source_repo(
        &app_src,
        &[
            (
                ".gitlab-ci.yml",
                "include:\n  - local: ci/*.yml\n  - project: group/lib\n    ref: v1\n    file: /templates/t.yml\n  - project: group/lib\n    file: templates/t.yml\nbuild:\n  script: make\n",
            ),
            ("ci/test.yml", "test:\n  script: make test\n"),
        ],
    );
    commit(
        &app_src,
        &[("ci/later.yml", "later:\n  script: x\n")],
        "later",
    );

    let app = open(tmp.path(), "app", Remote::new(app_src.to_str().unwrap()));
    let lib = Arc::new(open(
        tmp.path(),
        "lib",
        Remote::new(lib_src.to_str().unwrap()),
    ));
    app.fetch(&[]).unwrap();
    lib.fetch(&[]).unwrap();

    let lookup = |p: &str| (p == "group/lib").then(|| lib.clone());
    let fetcher = MirrorFetcher::new(&app, app_sha.clone(), &lookup);
    let text =
        String::from_utf8(app.read_file(&app_sha, ".gitlab-ci.yml").unwrap().unwrap()).unwrap();
    let loaded = gantry_pipeline::load(".gitlab-ci.yml", &text, &fetcher, &|_| None);
    let diags: Vec<_> = loaded
        .diagnostics
        .iter()
        .map(|d| d.message.clone())
        .collect();
    assert!(!loaded.has_errors(), "{diags:?}");
    let jobs: Vec<&str> = loaded
        .pipeline
        .as_ref()
        .unwrap()
        .jobs
        .keys()
        .map(String::as_str)
        .collect();
    for want in ["build", "test", "from_lib_v1", "inner_job", "from_lib_main"] {
        assert!(jobs.contains(&want), "{want} missing from {jobs:?}");
    }
    assert!(
        !jobs.contains(&"later"),
        "a later commit's file leaked in: {jobs:?}"
    );

    assert_eq!(fetcher.local("nope.yml").unwrap_err(), FetchError::NotFound);
    assert_eq!(
        fetcher.local_files().unwrap(),
        [".gitlab-ci.yml", "ci/test.yml"]
    );
    let f = fetcher
        .project("group/lib", Some("v1"), "templates/t.yml")
        .unwrap();
    assert_eq!(f.name, "group/lib:templates/t.yml@v1");
    assert!(f.text.contains("from_lib_v1"));
    match fetcher.project("group/other", None, "x.yml") {
        Err(FetchError::Failed(m)) => assert!(m.contains("not registered"), "{m}"),
        other => panic!("{other:?}"),
    }
    match fetcher.project("group/lib", Some("no-ref"), "templates/t.yml") {
        Err(FetchError::Failed(m)) => {
            assert!(m.contains("no branch, tag or commit 'no-ref'"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        fetcher.project("group/lib", None, "nope.yml").unwrap_err(),
        FetchError::NotFound
    );
    match fetcher.remote("https://u:tok@example.com/x.yml") {
        Err(FetchError::Unsupported(m)) => {
            assert!(m.contains("include: local") && !m.contains("tok"), "{m}")
        }
        other => panic!("{other:?}"),
    }
}

/// A one-request-at-a-time HTTP server that answers 401 and records the requests' headers.
fn unauthorized_server() -> (u16, std::sync::mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut head = String::new();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                head.push_str(&line);
            }
            let _ = tx.send(head);
            let _ = stream.write_all(
                b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    (port, rx)
}

fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn http_credentials_reach_the_server_through_askpass_and_nowhere_else() {
    let tmp = tempfile::tempdir().unwrap();
    let (port, requests) = unauthorized_server();
    let password = "hunter2-s3cret";
    let remote = Remote {
        username: Some("robot".into()),
        password: Some(password.into()),
        ..Remote::new(format!("http://127.0.0.1:{port}/group/app.git"))
    };
    let m = open(tmp.path(), "p", remote);
    let e = m.fetch(&[]).unwrap_err();
    assert!(matches!(e, GitError::Auth { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!(
            "authentication failed for http://127.0.0.1:{port}/group/app.git: check the project's username and password"
        )),
        "{msg}"
    );
    let seen: Vec<String> = requests.try_iter().collect();
    let expected = format!(
        "authorization: basic {}",
        base64(format!("robot:{password}").as_bytes())
    );
    assert!(
        seen.iter().any(|h| h
            .to_ascii_lowercase()
            .contains(&expected.to_ascii_lowercase())),
        "the password was not sent: {seen:?}"
    );
    assert_no_secret(m.dir(), &[password, "robot"]);
    assert!(!format!("{m:?}").contains(password));

    // Credentials written in the URL are taken out of it; none at all is an auth error too.
    let m2 = open(
        tmp.path(),
        "q",
        Remote::new(format!("http://robot:{password}@127.0.0.1:{port}/x.git")),
    );
    assert_eq!(m2.url(), format!("http://127.0.0.1:{port}/x.git"));
    assert!(!m2.fetch(&[]).unwrap_err().to_string().contains(password));
    assert_no_secret(m2.dir(), &[password, "robot"]);
    let m3 = open(
        tmp.path(),
        "r",
        Remote::new(format!("http://127.0.0.1:{port}/x.git")),
    );
    let e = m3.fetch(&[]).unwrap_err();
    assert!(e.to_string().contains("needs credentials"), "{e}");
}

fn assert_no_secret(dir: &Path, secrets: &[&str]) {
    for file in walk(dir) {
        let Ok(text) = std::fs::read(&file) else {
            continue;
        };
        let text = String::from_utf8_lossy(&text);
        for s in secrets {
            assert!(!text.contains(s), "{} contains '{s}'", file.display());
        }
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn an_unreachable_http_remote_names_the_url_without_its_password() {
    let tmp = tempfile::tempdir().unwrap();
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let m = open(
        tmp.path(),
        "p",
        Remote::new(format!("https://alice:pa55word@127.0.0.1:{port}/g/r.git")),
    );
    let e = m.fetch(&[]).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, GitError::Unreachable { .. }), "{e:?}");
    assert!(
        msg.contains(&format!("https://127.0.0.1:{port}/g/r.git")),
        "{msg}"
    );
    assert!(!msg.contains("pa55word") && !msg.contains("alice"), "{msg}");
    let config = std::fs::read_to_string(m.dir().join("config")).unwrap();
    assert!(
        config.contains(&format!("url = https://127.0.0.1:{port}/g/r.git")),
        "{config}"
    );
    assert_no_secret(m.dir(), &["pa55word", "alice"]);
}

#[test]
fn an_ssh_key_stays_out_of_the_mirror_and_the_message() {
    let tmp = tempfile::tempdir().unwrap();
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let key = "-----BEGIN OPENSSH PRIVATE KEY-----\nNOTAREALKEYMATERIAL\n-----END OPENSSH PRIVATE KEY-----";
    let m = open(
        tmp.path(),
        "p",
        Remote {
            ssh_key: Some(key.into()),
            ..Remote::new(format!("ssh://git@127.0.0.1:{port}/g/r.git"))
        },
    );
    let e = m.fetch(&[]).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains(&format!("127.0.0.1:{port}/g/r.git")), "{msg}");
    assert!(!msg.contains("NOTAREALKEYMATERIAL"), "{msg}");
    assert_no_secret(m.dir(), &["NOTAREALKEYMATERIAL"]);
}

#[test]
fn a_hanging_remote_is_stopped_at_the_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let hold = std::thread::spawn(move || {
        // Accept and say nothing.
        let conn = listener.accept();
        std::thread::sleep(Duration::from_secs(5));
        drop(conn);
    });
    let m = open(
        tmp.path(),
        "p",
        Remote::new(format!("http://127.0.0.1:{port}/x.git")),
    )
    .with_timeouts(Timeouts {
        network: Duration::from_millis(800),
        local: Duration::from_secs(30),
    });
    let t = Instant::now();
    let e = m.fetch(&[]).unwrap_err();
    assert!(matches!(e, GitError::Timeout { op: "fetch", .. }), "{e:?}");
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    drop(hold);
}

#[test]
fn reads_are_in_process_and_survive_a_repack_under_them() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let files: Vec<(String, String)> = (0..50)
        .map(|i| (format!("dir{}/f{i}.yml", i % 5), format!("n: {i}\n")))
        .collect();
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let sha = source_repo(&src, &refs);
    let m = Arc::new(open(tmp.path(), "p", Remote::new(src.to_str().unwrap())));
    m.fetch(&[]).unwrap();
    m.resolve("main").unwrap();
    assert!(m.reader_open());

    let n = 2000;
    let t = Instant::now();
    for i in 0..n {
        let (path, text) = &files[i % files.len()];
        assert_eq!(m.read_file(&sha, path).unwrap().unwrap(), text.as_bytes());
    }
    let read = t.elapsed() / n as u32;
    let t = Instant::now();
    for _ in 0..n {
        assert_eq!(m.resolve("main").unwrap().as_deref(), Some(sha.as_str()));
    }
    let resolve = t.elapsed() / n as u32;
    let t = Instant::now();
    for _ in 0..20 {
        assert_eq!(m.list_files(&sha).unwrap().len(), 50);
    }
    let list = t.elapsed() / 20;
    let t = Instant::now();
    for _ in 0..20 {
        m.commit_info(&sha).unwrap();
    }
    let info = t.elapsed() / 20;
    // The same question asked of a process per call, for comparison in the same run.
    let t = Instant::now();
    for _ in 0..20 {
        let o = Command::new("git")
            .arg("--git-dir")
            .arg(m.dir())
            .args(["rev-parse", "--verify", "--quiet", "main^{commit}"])
            .output()
            .unwrap();
        assert!(o.status.success());
    }
    let spawn = t.elapsed() / 20;
    eprintln!(
        "per call: read_file {read:?}, resolve {resolve:?}, commit_info {info:?}, \
         list_files (50 files in 6 trees) {list:?}; a `git rev-parse` process {spawn:?}"
    );

    // Several threads at once share the one reader.
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let m = m.clone();
            let sha = sha.clone();
            std::thread::spawn(move || {
                for _ in 0..200 {
                    assert_eq!(
                        m.read_file(&sha, "dir0/f0.yml").unwrap().unwrap(),
                        b"n: 0\n"
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }

    // The packs replaced under the open reader (what `git gc` does): reads still succeed.
    let st = Command::new("git")
        .arg("--git-dir")
        .arg(m.dir())
        .args(["repack", "-a", "-d", "-q"])
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(
        m.read_file(&sha, "dir1/f1.yml").unwrap().unwrap(),
        b"n: 1\n"
    );
    assert_eq!(m.list_files(&sha).unwrap().len(), 50);
}

#[test]
fn an_idle_reader_is_released_and_comes_back_on_the_next_read() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let sha = source_repo(&src, &[("a.yml", "a: 1\n")]);
    let m = open(tmp.path(), "p", Remote::new(src.to_str().unwrap()));
    m.fetch(&[]).unwrap();
    assert!(m.read_file(&sha, "a.yml").unwrap().is_some());
    assert!(m.reader_open());
    assert!(!m.release_idle(Duration::from_secs(60)), "just used: kept");
    assert!(m.release_idle(Duration::ZERO));
    assert!(!m.reader_open());
    assert_eq!(m.read_file(&sha, "a.yml").unwrap().unwrap(), b"a: 1\n");
    assert!(m.reader_open(), "opened again");
}
