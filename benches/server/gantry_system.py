"""Gantry as a system under test for benches/server/bench.py (see README.md there).

One `gantry server` process (SQLite in its data dir, the HTTP API on 127.0.0.1) with its
embedded agent (shell executor, `--local-agent-concurrency` = the driver's `--workers`), so
the agent's memory is part of the server's. Everything lives in a private dir the driver
gives (under the bench's work dir in /tmp); the server's PID is kept in `server.pid` there and
stopping uses that file only (after checking that the PID is our binary running in that dir).

Projects (one git repository each, made here, with a `.gantry.yml`; no checkout in the jobs:
`GIT_STRATEGY: none`, like Buildbot's builders without a source step):
  bench/one        one job:   date +%s%N >> "$STAMPS"
  bench/pipeline   stages stage1 → stage2 → stage3, one such job each (each stage starts
                   when the one before has finished, by stage order)
Triggers: POST /api/v1/projects/{id}/pipelines {"ref": "main", "sha": SHA}, with the commit
resolved once when the repository is made, as a push webhook carries it: without `sha` the
server first fetches the ref from the remote (right for a manual API call, but not what a
push trigger does). Completion: GET /api/v1/pipelines/{id} → `status`.

By hand: GANTRY=… python3 gantry_system.py start DIR | stop DIR.
"""

import json
import os
import signal
import subprocess
import sys
import time

from bench import System, http_json

FINAL = {"success", "failed", "canceled", "skipped"}

# Every trigger must run, as in Buildbot: without this, a pipeline triggered while an older one
# on the same ref has not started yet cancels it (GitLab's "auto-cancel redundant pipelines",
# on by default), and the throughput run would count canceled pipelines.
WORKFLOW = """\
workflow:
  auto_cancel:
    on_new_commit: none
"""

ONE_YML = """\
# Written by benches/server/gantry_system.py
{workflow}one:
  variables:
    GIT_STRATEGY: none
    STAMPS: {one}
  script:
    - 'date +%s%N >> "$STAMPS"'
"""

PIPELINE_YML = """\
# Written by benches/server/gantry_system.py
{workflow}stages: [stage1, stage2, stage3]
"""

STAGE_JOB = """\
{stage}:
  stage: {stage}
  variables:
    GIT_STRATEGY: none
    STAMPS: {stamps}
  script:
    - 'date +%s%N >> "$STAMPS"'
"""


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _ours(pid, binary, data_dir):
    """PID is a live `BINARY server --data-dir DATA_DIR` (so a recycled PID is never
    signalled)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
        return (
            _alive(pid)
            and os.path.realpath(os.readlink(f"/proc/{pid}/exe")) == os.path.realpath(binary)
            and data_dir.encode() in argv
        )
    except OSError:
        return False


class GantrySystem(System):
    name = "gantry"

    def __init__(self, workdir, workers=1):
        self.binary = os.environ.get("GANTRY") or sys.exit("GANTRY (the binary) is not set")
        self.dir = os.path.join(workdir, "gantry")
        self.data = os.path.join(self.dir, "data")
        self.pidfile = os.path.join(self.dir, "server.pid")
        self.workers = workers
        self.stamps = {
            s: os.path.join(self.dir, f"{s}.stamps") for s in ("one", "stage1", "stage2", "stage3")
        }
        self.base = None
        self.token = None
        self.proc = None
        self.projects = {}  # kind -> (project id, sha)

    def version(self):
        out = subprocess.run([self.binary, "--version"], capture_output=True, text=True).stdout
        return out.strip() or "gantry ?"

    def _auth(self):
        return {"Authorization": f"Bearer {self.token}"}

    # --- lifecycle -------------------------------------------------------------------------

    def start(self):
        os.makedirs(self.data, exist_ok=True)
        out_path = os.path.join(self.dir, "server.out")
        # Port 0: the server picks a free port and says which on its first line.
        args = [
            self.binary, "server", "--data-dir", self.data, "--listen", "127.0.0.1:0",
            "--local-agent-concurrency", str(self.workers),
        ]
        env = dict(os.environ)
        env.setdefault("GANTRY_LOG", "warn")
        with open(out_path, "w") as out, open(os.path.join(self.dir, "server.log"), "w") as err:
            self.proc = subprocess.Popen(
                args, stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=self.dir, env=env,
            )
        with open(self.pidfile, "w") as f:
            f.write(f"{self.proc.pid}\n")
        deadline = time.monotonic() + 60
        while self.base is None:
            with open(out_path) as f:
                first = f.readline()
            if first.startswith("listening on ") and first.endswith("\n"):
                self.base = first.split()[-1]
            elif self.proc.poll() is not None:
                raise RuntimeError(f"gantry server exited with {self.proc.returncode} (logs in {self.dir})")
            elif time.monotonic() > deadline:
                raise RuntimeError(f"gantry server did not listen within 60 s (logs in {self.dir})")
            else:
                time.sleep(0.01)
        with open(os.path.join(self.data, "admin-token")) as f:
            self.token = f.read().strip()
        # Ready once the embedded agent is online.
        while True:
            agents = http_json("GET", f"{self.base}/api/v1/agents", headers=self._auth())["items"]
            if any(a.get("online") for a in agents):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"gantry: the local agent did not come online within 60 s (logs in {self.dir})")
            time.sleep(0.01)

    def stop(self):
        """SIGTERM to the server (through its pidfile), SIGKILL after 30 s."""
        try:
            with open(self.pidfile) as f:
                pid = int(f.read().strip())
        except (OSError, ValueError):
            return
        if not _ours(pid, self.binary, self.data):
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while _alive(pid) and time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                break
            time.sleep(0.05)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()

    def server_pids(self):
        try:
            with open(self.pidfile) as f:
                return [int(f.read().strip())]
        except (OSError, ValueError):
            return []

    def helper_pids(self):
        return []  # the agent runs inside the server process

    # --- pipelines -------------------------------------------------------------------------

    def _repo(self, kind, text):
        repo = os.path.join(self.dir, f"repo-{kind}")
        os.makedirs(repo, exist_ok=True)
        with open(os.path.join(repo, ".gantry.yml"), "w") as f:
            f.write(text)
        git = ["git", "-C", repo, "-c", "user.name=bench", "-c", "user.email=bench@localhost",
               "-c", "commit.gpgsign=false"]
        subprocess.run(["git", "init", "-q", "-b", "main", repo], check=True)
        subprocess.run(git + ["add", ".gantry.yml"], check=True)
        subprocess.run(git + ["commit", "-q", "-m", f"bench: {kind}"], check=True)
        sha = subprocess.run(git + ["rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
        return repo, sha

    def create_project(self):
        texts = {
            "one": ONE_YML.format(workflow=WORKFLOW, one=json.dumps(self.stamps["one"])),
            "pipeline": PIPELINE_YML.format(workflow=WORKFLOW) + "".join(
                STAGE_JOB.format(stage=s, stamps=json.dumps(self.stamps[s])) for s in ("stage1", "stage2", "stage3")
            ),
        }
        for kind, text in texts.items():
            repo, sha = self._repo(kind, text)
            p = http_json("POST", f"{self.base}/api/v1/projects",
                          {"path": f"bench/{kind}", "git_url": repo}, self._auth())
            self.projects[kind] = (p["id"], sha)

    def trigger(self, kind):
        pid, sha = self.projects[kind]
        p = http_json("POST", f"{self.base}/api/v1/projects/{pid}/pipelines",
                      {"ref": "main", "sha": sha}, self._auth())
        return p["id"]

    def status(self, run_id):
        st = http_json("GET", f"{self.base}/api/v1/pipelines/{run_id}", headers=self._auth())["status"]
        return st if st in FINAL else None

    def stamp_files(self, kind):
        if kind == "one":
            return [self.stamps["one"]]
        return [self.stamps["stage1"], self.stamps["stage2"], self.stamps["stage3"]]


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("start", "stop"):
        sys.exit("usage: gantry_system.py start|stop DIR")
    system = GantrySystem(sys.argv[2])
    if sys.argv[1] == "start":
        system.start()
        system.proc = None  # leave it running; `stop DIR` ends it
        print(json.dumps({"api": system.base, "server_pid": system.server_pids()}))
    else:
        system.stop()
