#!/usr/bin/env python3
"""The web UI's pages, timed on a large project: 10,000 pipelines in one project, one of them
with 500 jobs (10 stages, each job needing two of the stage before), 30 more projects.

Seeding goes straight into the SQLite database (the server stopped meanwhile), not through
10,000 real pipelines. Then each page is fetched many times in a row by one keep-alive HTTP
client on 127.0.0.1, signed in with a session cookie as a browser is, and the time from
request to the last byte of the answer is reported per page: p50, p95 and max. That time is
the server's plus a loopback round trip (well under 0.1 ms).

Usage: bench.py GANTRY_BINARY WORKDIR OUT_JSON [--runs N]
"""

import argparse
import http.client
import json
import os
import random
import sqlite3
import statistics
import subprocess
import time
import urllib.parse

PIPELINES = 10_000
BIG_JOBS = 500
STAGES = 10
OTHER_PROJECTS = 30
PASSWORD = "correct horse battery"


class Server:
    def __init__(self, binary, workdir):
        self.binary = binary
        self.dir = workdir
        self.data = os.path.join(workdir, "data")
        self.proc = None
        self.base = None

    def start(self):
        os.makedirs(self.data, exist_ok=True)
        out_path = os.path.join(self.dir, "server.out")
        env = dict(os.environ, GANTRY_LOG="warn")
        with open(out_path, "w") as out, open(os.path.join(self.dir, "server.log"), "a") as err:
            self.proc = subprocess.Popen(
                [self.binary, "server", "--data-dir", self.data, "--listen", "127.0.0.1:0",
                 "--no-local-agent"],
                stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + 60
        while True:
            with open(out_path) as f:
                first = f.readline()
            if first.startswith("listening on ") and first.endswith("\n"):
                self.base = first.split()[-1]
                break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gantry server did not start (logs in {self.dir})")
            time.sleep(0.02)
        with open(os.path.join(self.data, "admin-token")) as f:
            self.token = f.read().strip()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def api(self, method, path, body=None):
        u = urllib.parse.urlsplit(self.base)
        c = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
        c.request(method, path, body=json.dumps(body) if body is not None else None,
                  headers={"Authorization": f"Bearer {self.token}",
                           "Content-Type": "application/json"})
        r = c.getresponse()
        data = r.read()
        c.close()
        if r.status >= 300:
            raise RuntimeError(f"{method} {path}: {r.status} {data[:300]!r}")
        return json.loads(data) if data else None


def make_repo(workdir):
    repo = os.path.join(workdir, "repo")
    os.makedirs(repo, exist_ok=True)
    with open(os.path.join(repo, ".gantry.yml"), "w") as f:
        f.write("build:\n  script: [make]\ntest:\n  needs: [build]\n  script: [make test]\n")
    git = ["git", "-C", repo, "-c", "user.name=bench", "-c", "user.email=bench@example.invalid"]
    subprocess.run(["git", "init", "-q", "-b", "main", repo], check=True)
    subprocess.run(git + ["add", "."], check=True)
    subprocess.run(git + ["commit", "-q", "-m", "bench: the UI's project"], check=True)
    return repo


def trigger_json(rng, n):
    user = rng.choice(["alice", "bob", "carol", "dave", "schedule-bot"])
    msg = f"Change {n}: {rng.choice(['fix the parser', 'add a cache', 'bump deps', 'refactor the engine'])}\n\nDetails of change {n}."
    return json.dumps({"source": "push", "ref_name": "main",
                       "user": {"id": 1, "login": user, "name": user, "email": ""},
                       "commit": {"sha": "%040x" % n, "message": msg, "author_name": user}})


def definition(name, stage, stage_index, needs):
    return json.dumps({
        "name": name, "stage": stage, "stage_index": stage_index, "when": "on_success",
        "allow_failure": False, "needs": [{"job": n} for n in needs],
        "variables": [{"name": "GOFLAGS", "value": "-mod=vendor"}, {"name": "TARGET", "value": name}],
        "tags": ["linux"], "script": [f"make {name}", "make check", "echo done"],
        "image": {"name": "debian:bookworm"}, "reason": "no rules: always",
    })


def seed(db_path, project, rng):
    """10,000 pipelines of `project`, the last but one with 500 jobs. Returns (big, a job)."""
    now = int(time.time() * 1000)
    db = sqlite3.connect(db_path)
    cur = db.cursor()
    statuses = ["success"] * 14 + ["failed"] * 3 + ["canceled", "skipped"]
    sources = ["push"] * 8 + ["web", "schedule", "api", "merge_request_event"]
    rows = []
    for n in range(PIPELINES):
        ref = "main" if rng.random() < 0.6 else f"feature-{rng.randrange(200)}"
        created = now - (PIPELINES - n) * 60_000
        rows.append((project, ref, "%040x" % n, rng.choice(statuses), rng.choice(sources), None,
                     trigger_json(rng, n), None, None, created, created + 1000,
                     created + 1000 + rng.randrange(30_000, 600_000)))
    cur.executemany(
        "INSERT INTO pipelines (project_id, git_ref, sha, status, source, parent_job_id, trigger_json, "
        "errors, auto_cancel, created_at, started_at, finished_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", rows)
    big = cur.execute("SELECT MAX(id) FROM pipelines WHERE project_id = ?", (project,)).fetchone()[0]
    cur.execute("UPDATE pipelines SET status = 'failed', git_ref = 'main' WHERE id = ?", (big,))
    per = BIG_JOBS // STAGES
    jobs = []
    for s in range(STAGES):
        for k in range(per):
            name = f"s{s}-job{k}"
            needs = [f"s{s-1}-job{k}", f"s{s-1}-job{(k + 1) % per}"] if s else []
            status = rng.choice(["success"] * 8 + ["failed", "skipped", "canceled", "manual"])
            t = now - 3_600_000 + s * 60_000
            jobs.append((big, project, name, f"stage-{s}", s, s * per + k, status, 1, 0,
                         definition(name, f"stage-{s}", s, needs), '["linux"]',
                         1 if k % 7 == 0 else 0, 1 if status == "success" else None,
                         1000, t, t, t + 1000, t + 1000 + rng.randrange(1000, 90_000)))
    cur.executemany(
        "INSERT INTO jobs (pipeline_id, project_id, name, stage, stage_index, position, status, attempt, "
        "retried, definition, tags, allow_failure, agent_id, log_size, created_at, queued_at, started_at, "
        "finished_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", jobs)
    db.commit()
    job = cur.execute("SELECT MIN(id) FROM jobs WHERE pipeline_id = ?", (big,)).fetchone()[0]
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return big, job


def sign_in(base):
    u = urllib.parse.urlsplit(base)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    body = urllib.parse.urlencode({"username": "bench", "password": PASSWORD, "next": "/"})
    c.request("POST", "/login", body=body, headers={"Content-Type": "application/x-www-form-urlencoded"})
    r = c.getresponse()
    r.read()
    cookie = r.getheader("Set-Cookie").split(";")[0]
    c.close()
    return cookie


def measure(base, cookie, path, runs):
    u = urllib.parse.urlsplit(base)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    times, size = [], 0
    for i in range(runs + 5):
        t0 = time.perf_counter()
        c.request("GET", path, headers={"Cookie": cookie})
        r = c.getresponse()
        data = r.read()
        dt = (time.perf_counter() - t0) * 1000
        if r.status != 200:
            raise RuntimeError(f"GET {path}: {r.status} {data[:300]!r}")
        size = len(data)
        if i >= 5:  # the first few warm caches
            times.append(dt)
    c.close()
    times.sort()
    return {"path": path, "runs": runs, "bytes": size,
            "p50": statistics.median(times),
            "p95": times[min(len(times) - 1, int(round(0.95 * len(times))) - 1)],
            "max": times[-1]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("workdir")
    ap.add_argument("out")
    ap.add_argument("--runs", type=int, default=200)
    a = ap.parse_args()
    rng = random.Random(8)
    s = Server(a.binary, a.workdir)
    repo = make_repo(a.workdir)
    s.start()
    try:
        project = s.api("POST", "/api/v1/projects", {"path": "big/app", "git_url": repo})["id"]
        for i in range(OTHER_PROJECTS):
            s.api("POST", "/api/v1/projects", {"path": f"other/p{i}", "git_url": repo})
        s.api("POST", "/api/v1/users", {"username": "bench", "password": PASSWORD, "admin": True})
    finally:
        s.stop()
    t0 = time.monotonic()
    big, job = seed(os.path.join(s.data, "gantry.db"), project, rng)
    seeded = time.monotonic() - t0
    s.start()
    try:
        cookie = sign_in(s.base)
        pages = [
            ("projects", "/"),
            ("project (refs)", f"/projects/{project}"),
            ("pipelines, page 1", f"/projects/{project}/pipelines"),
            ("pipelines, page 150", f"/projects/{project}/pipelines?page=150"),
            ("pipelines ?status=failed", f"/projects/{project}/pipelines?status=failed"),
            ("pipelines ?ref=feature-7", f"/projects/{project}/pipelines?ref=feature-7"),
            ("pipelines ?source=web&status=success",
             f"/projects/{project}/pipelines?source=web&status=success"),
            ("pipeline graph (500 jobs)", f"/pipelines/{big}"),
            ("job", f"/jobs/{job}"),
            ("run pipeline form", f"/projects/{project}/pipelines/new"),
            ("lint", f"/projects/{project}/lint"),
            ("settings", f"/projects/{project}/settings"),
            ("agents", "/agents"),
            ("audit log", "/admin/audit"),
        ]
        results = []
        for name, path in pages:
            r = measure(s.base, cookie, path, a.runs)
            r["page"] = name
            results.append(r)
            print(f"{name:40} p50 {r['p50']:7.2f} ms  p95 {r['p95']:7.2f} ms  max {r['max']:7.2f} ms  {r['bytes']:>8} B",
                  flush=True)
        with open(a.out, "w") as f:
            json.dump({"pipelines": PIPELINES, "big_jobs": BIG_JOBS, "seed_seconds": seeded,
                       "results": results}, f, indent=1)
    finally:
        s.stop()


if __name__ == "__main__":
    main()
