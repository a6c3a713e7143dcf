"""Buildbot as a system under test for benches/server/bench.py (see README.md there).

One master (SQLite, REST API on 127.0.0.1, no web UI plugins) and one local worker on
loopback, both daemonised by Buildbot's own `start` commands, which write `twistd.pid` in
their base dirs; stopping uses those pidfiles only. Everything lives in a private dir the
driver gives (under the bench's work dir in /tmp).

Builders (no source step: the jobs never check anything out, like GIT_STRATEGY: none):
  one                  one ShellCommand: sh -c 'date +%s%N >> "$STAMPS"'
  stage1/stage2/stage3 the same step each; stage1 and stage2 end with a Trigger step for the
                       next stage with waitForFinish=True, so stage1's buildset completes
                       only when stage3 has finished: a three-stage pipeline of empty jobs
                       whose completion the API reports on one object.
Schedulers: ForceScheduler `force-one` (builder one) and `force-pipeline` (stage1), forced
through the REST API (JSON-RPC `force` on /api/v2/forceschedulers/NAME); Triggerable
`stage2` and `stage3`. Completion: GET /api/v2/buildsets/ID, `complete` and `results`.

By hand: python3 buildbot_system.py start DIR | stop DIR (needs BUILDBOT_VENV).
"""

import json
import os
import signal
import subprocess
import sys
import time

from bench import System, free_port, http_json

MASTER_CFG = r'''# Written by benches/server/buildbot_system.py
from buildbot.plugins import schedulers, steps, util, worker

STAMPS = {stamps!r}
c = BuildmasterConfig = {{}}
c["title"] = "gantry-bench"
c["buildbotURL"] = "http://127.0.0.1:{http_port}/"
c["buildbotNetUsageData"] = None  # never phone home
# Every trigger is a pipeline of its own: never merge pending requests into one build.
c["collapseRequests"] = False
c["db"] = {{"db_url": "sqlite:///state.sqlite"}}
c["protocols"] = {{"pb": {{"port": "tcp:{pb_port}:interface=127.0.0.1"}}}}
c["workers"] = [worker.Worker("w{{}}".format(i), "pass") for i in range({workers})]
# REST API only: no UI plugins (buildbot-www serves the base app from the package; nothing
# is downloaded).
c["www"] = {{"port": "tcp:{http_port}:interface=127.0.0.1", "plugins": {{}}}}
workernames = [w.name for w in c["workers"]]


def stamp(stage):
    return steps.ShellCommand(
        name="stamp",
        command=["sh", "-c", 'date +%s%N >> "$STAMPS"'],
        env={{"STAMPS": STAMPS[stage]}},
        logEnviron=False,
    )


def factory(stage, next_stage=None):
    f = util.BuildFactory()
    f.addStep(stamp(stage))
    if next_stage:
        f.addStep(steps.Trigger(schedulerNames=[next_stage], waitForFinish=True))
    return f


c["builders"] = [
    util.BuilderConfig(name="one", workernames=workernames, factory=factory("one")),
    util.BuilderConfig(name="stage1", workernames=workernames, factory=factory("stage1", "stage2")),
    util.BuilderConfig(name="stage2", workernames=workernames, factory=factory("stage2", "stage3")),
    util.BuilderConfig(name="stage3", workernames=workernames, factory=factory("stage3")),
]
c["schedulers"] = [
    schedulers.ForceScheduler(name="force-one", builderNames=["one"]),
    schedulers.ForceScheduler(name="force-pipeline", builderNames=["stage1"]),
    schedulers.Triggerable(name="stage2", builderNames=["stage2"]),
    schedulers.Triggerable(name="stage3", builderNames=["stage3"]),
]
'''

SCHEDULER = {"one": "force-one", "pipeline": "force-pipeline"}


def _read_pid(path):
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def _alive(pid):
    """The process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _ours(pid, basedir):
    """PID is a live twistd whose working directory is BASEDIR (so a recycled PID is never
    signalled)."""
    try:
        return _alive(pid) and os.path.realpath(os.readlink(f"/proc/{pid}/cwd")) == os.path.realpath(basedir)
    except OSError:
        return False


class BuildbotSystem(System):
    name = "buildbot"

    def __init__(self, workdir, workers=1):
        self.venv = os.environ.get("BUILDBOT_VENV") or sys.exit("BUILDBOT_VENV is not set")
        self.dir = os.path.join(workdir, "buildbot")
        self.master_dir = os.path.join(self.dir, "master")
        self.worker_dirs = [os.path.join(self.dir, f"worker{i}") for i in range(workers)]
        self.workers = workers
        self.stamps = {
            s: os.path.join(self.dir, f"{s}.stamps") for s in ("one", "stage1", "stage2", "stage3")
        }
        self.base = None

    def version(self):
        out = subprocess.run([self._bin("buildbot"), "--version"], capture_output=True, text=True).stdout
        return " ".join(out.split()[:3]) if out else "buildbot ?"

    def _bin(self, name):
        return os.path.join(self.venv, "bin", name)

    def _run(self, *args):
        log = os.path.join(self.dir, "commands.log")
        with open(log, "a") as f:
            f.write("$ " + " ".join(args) + "\n")
            f.flush()
            subprocess.run(args, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, check=True)

    # --- lifecycle -------------------------------------------------------------------------

    def start(self):
        os.makedirs(self.dir, exist_ok=True)
        http_port, pb_port = free_port(), free_port()
        self.base = f"http://127.0.0.1:{http_port}"
        self._run(self._bin("buildbot"), "create-master", "-r", self.master_dir)
        with open(os.path.join(self.master_dir, "master.cfg"), "w") as f:
            f.write(MASTER_CFG.format(stamps=self.stamps, http_port=http_port, pb_port=pb_port, workers=self.workers))
        # `buildbot start` daemonises (twistd.pid in the base dir) and returns once the master
        # logs that it is running.
        self._run(self._bin("buildbot"), "start", self.master_dir)
        for i, wdir in enumerate(self.worker_dirs):
            self._run(
                self._bin("buildbot-worker"), "create-worker", "--umask=0o22", wdir,
                f"127.0.0.1:{pb_port}", f"w{i}", "pass",
            )
            self._run(self._bin("buildbot-worker"), "start", wdir)
        deadline = time.monotonic() + 60
        while True:
            workers = http_json("GET", f"{self.base}/api/v2/workers")["workers"]
            if sum(1 for w in workers if w.get("connected_to")) == self.workers:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"buildbot: workers did not connect within 60 s (logs in {self.dir})")
            time.sleep(0.1)

    def stop(self):
        """Stops the workers, then the master, through their pidfiles; SIGKILL after 30 s."""
        for d in self.worker_dirs + [self.master_dir]:
            pid = _read_pid(os.path.join(d, "twistd.pid"))
            if pid is None or not _ours(pid, d):
                continue
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 30
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)

    def server_pids(self):
        pid = _read_pid(os.path.join(self.master_dir, "twistd.pid"))
        return [pid] if pid else []

    def helper_pids(self):
        return [p for d in self.worker_dirs if (p := _read_pid(os.path.join(d, "twistd.pid")))]

    # --- pipelines -------------------------------------------------------------------------

    def create_project(self):
        # Builders and schedulers come from master.cfg: nothing to create through the API.
        pass

    def trigger(self, kind):
        body = {"jsonrpc": "2.0", "method": "force", "id": 1, "params": {}}
        res = http_json("POST", f"{self.base}/api/v2/forceschedulers/{SCHEDULER[kind]}", body)
        if "result" not in res:
            raise RuntimeError(f"buildbot: force failed: {res}")
        return res["result"][0]  # the buildset id

    def status(self, run_id):
        bs = http_json("GET", f"{self.base}/api/v2/buildsets/{run_id}")["buildsets"][0]
        if not bs["complete"]:
            return None
        return "success" if bs["results"] == 0 else f"failed (results {bs['results']})"

    def stamp_files(self, kind):
        if kind == "one":
            return [self.stamps["one"]]
        return [self.stamps["stage1"], self.stamps["stage2"], self.stamps["stage3"]]


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("start", "stop"):
        sys.exit("usage: buildbot_system.py start|stop DIR")
    system = BuildbotSystem(sys.argv[2])
    if sys.argv[1] == "start":
        system.start()
        print(json.dumps({"api": system.base, "master_pid": system.server_pids(), "worker_pids": system.helper_pids()}))
    else:
        system.stop()
