"""Driver of the server benchmark (benches/server/README.md): measures CI servers through their
HTTP APIs, the same way for each, and writes one JSON file per system. Python 3.11, standard
library only.

    python3 bench.py --system buildbot|gantry --work DIR --out FILE.json [--latency-runs 50]
                     [--pipeline-runs 5] [--throughput 200] [--workers 1] [--poll-ms 5]

A system is a plugin: a subclass of `System` below, registered in SYSTEMS. The driver calls

    start()                 start the server (and whatever runs its jobs), return when it
                            accepts triggers and can run a job right away
    create_project()        set up what `trigger` needs (a project, a repository, builders)
    trigger(kind) -> id     start one pipeline through the HTTP API and return its id; kind is
                            "one" (one job) or "pipeline" (three stages of one job each,
                            each stage starting when the one before has finished)
    status(id)              None while the pipeline runs; "success" once it finished well,
                            any other string when it finished otherwise
    stamp_files(kind)       the files the jobs append `date +%s%N` to (one per stage, in order)
    server_pids()           the server's processes: their VmRSS is summed (with every
                            descendant) as the server's memory
    helper_pids()           other long-lived processes it needs (workers, agents), reported
                            apart and not in the server's memory
    stop()                  stop everything it started, by its own pids/pidfiles only
    version()               one line for the report

Each job's command must be exactly `sh -c 'date +%s%N >> "$STAMPS"'` (or the same line as a
job script), with no source checkout, so that both systems do the same work per job.

Measurements (all wall clock, time.time_ns() on this machine, the same clock `date` reads):
  latency     `--latency-runs` triggers one after the other: t0 right before the trigger
              request is sent, t1 the job's stamp; t1 - t0, p50 and p99. The next trigger
              goes out once the API says the pipeline finished.
  pipeline    `--pipeline-runs` three-stage pipelines one after the other: trigger to the
              API reporting it finished, polling every `--poll-ms`; also trigger to the
              third stage's stamp, which no polling interval affects.
  throughput  `--throughput` one-job pipelines triggered back to back from one client, then
              polled until all finished: pipelines / (last finished - first trigger).
  memory      VmRSS of the server's processes and their descendants, idle after start
              (after one warm-up pipeline) and after all the runs.
"""

import argparse
import http.client
import json
import os
import socket
import sys
import time
import urllib.parse


# --- helpers shared with the plugins -----------------------------------------------------

_connections = {}


def http_json(method, url, body=None, headers=None):
    """One JSON request over a kept-alive connection per host; returns the decoded body.
    Raises RuntimeError on an HTTP status >= 400."""
    u = urllib.parse.urlsplit(url)
    key = (u.hostname, u.port)
    data = json.dumps(body).encode() if body is not None else None
    hdrs = {"Accept": "application/json"}
    if data is not None:
        hdrs["Content-Type"] = "application/json"
    hdrs.update(headers or {})
    path = u.path + (f"?{u.query}" if u.query else "")
    for attempt in (0, 1):
        conn = _connections.get(key)
        if conn is None:
            conn = _connections[key] = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
        try:
            conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            raw = resp.read()
            break
        except (http.client.HTTPException, ConnectionError):
            # The server closed the kept-alive connection: reconnect once.
            conn.close()
            del _connections[key]
            if attempt:
                raise
    if resp.status >= 400:
        raise RuntimeError(f"{method} {url}: HTTP {resp.status}: {raw[:300]!r}")
    return json.loads(raw) if raw else None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class System:
    """The interface a system under test implements (see the module's docstring)."""

    name = "?"

    def start(self):
        raise NotImplementedError

    def create_project(self):
        raise NotImplementedError

    def trigger(self, kind):
        raise NotImplementedError

    def status(self, run_id):
        raise NotImplementedError

    def stamp_files(self, kind):
        raise NotImplementedError

    def server_pids(self):
        raise NotImplementedError

    def helper_pids(self):
        return []

    def stop(self):
        raise NotImplementedError

    def version(self):
        return self.name


# --- measurement -------------------------------------------------------------------------


def rss_parts_kib(pids):
    """Where the servers' resident memory is (their own processes, not descendants), KiB:
    the pages of files mapped executable or read-only (code and constants, shared with the
    page cache) and the anonymous rest (heap, stacks)."""
    parts = {"file_kib": 0, "anon_kib": 0}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    key, _, value = line.partition(":")
                    if key == "Rss":
                        rss = int(value.split()[0])
                    elif key == "Anonymous":
                        anon = int(value.split()[0])
            parts["anon_kib"] += anon
            parts["file_kib"] += rss - anon
        except (OSError, ValueError, UnboundLocalError):
            pass
    return parts


def rss_kib(pids):
    """VmRSS of PIDS and all their descendants, KiB."""
    children = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    seen, todo, total = set(), list(pids), 0
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        todo.extend(children.get(pid, []))
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def read_stamps(path):
    try:
        with open(path) as f:
            return [int(x) for x in f.read().split()]
    except FileNotFoundError:
        return []


def wait_lines(path, n, timeout=120):
    """Waits until PATH has N stamps (polls the file every 0.5 ms); returns them."""
    deadline = time.monotonic() + timeout
    while True:
        stamps = read_stamps(path)
        if len(stamps) >= n:
            return stamps
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path}: {len(stamps)} stamps after {timeout} s, wanted {n}")
        time.sleep(0.0005)


def wait_finished(system, run_id, poll, timeout=300):
    deadline = time.monotonic() + timeout
    while True:
        st = system.status(run_id)
        if st is not None:
            if st != "success":
                raise RuntimeError(f"{system.name}: pipeline {run_id} finished with {st}")
            return time.time_ns()
        if time.monotonic() > deadline:
            raise RuntimeError(f"{system.name}: pipeline {run_id} not finished after {timeout} s")
        time.sleep(poll)


def percentile(values, p):
    """Nearest-rank percentile."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, -(-p * len(s) // 100) - 1))
    return s[k]


def ms(ns):
    return round(ns / 1e6, 2)


def measure(system, args):
    poll = args.poll_ms / 1000
    res = {"system": system.name, "version": system.version(), "workers": args.workers}
    t = time.monotonic()
    system.start()
    res["start_s"] = round(time.monotonic() - t, 2)
    system.create_project()
    print(f"{system.name}: started in {res['start_s']} s", file=sys.stderr)

    one = system.stamp_files("one")[0]
    stages = system.stamp_files("pipeline")
    # Warm-up: one pipeline of each kind (first-use costs: builder dirs, caches).
    wait_finished(system, system.trigger("one"), poll)
    wait_finished(system, system.trigger("pipeline"), poll)
    # Idle: nothing has happened for a while (both systems wait the same; Gantry gives back
    # a mirror's git process after 10 s unused).
    time.sleep(args.idle_s)
    res["rss_idle_kib"] = rss_kib(system.server_pids())
    res["helper_rss_idle_kib"] = rss_kib(system.helper_pids())

    # (a) trigger-to-job-start latency, sequential.
    lat = []
    for _ in range(args.latency_runs):
        n = len(read_stamps(one))
        t0 = time.time_ns()
        rid = system.trigger("one")
        t1 = wait_lines(one, n + 1)[n]
        lat.append(t1 - t0)
        wait_finished(system, rid, poll)
    res["latency_ms"] = [ms(x) for x in lat]
    res["latency_p50_ms"] = ms(percentile(lat, 50))
    res["latency_p99_ms"] = ms(percentile(lat, 99))
    print(f"{system.name}: latency p50 {res['latency_p50_ms']} ms, p99 {res['latency_p99_ms']} ms", file=sys.stderr)

    # (b) end-to-end time of the three-stage pipeline, sequential.
    e2e, last_stamp, gaps = [], [], []
    for _ in range(args.pipeline_runs):
        n = len(read_stamps(stages[2]))
        t0 = time.time_ns()
        rid = system.trigger("pipeline")
        t_end = wait_finished(system, rid, poll)
        e2e.append(t_end - t0)
        s = [read_stamps(f)[-1] for f in stages]
        if len(read_stamps(stages[2])) != n + 1:
            raise RuntimeError(f"{system.name}: the third stage did not run exactly once")
        last_stamp.append(s[2] - t0)
        gaps.append([s[1] - s[0], s[2] - s[1]])
    res["pipeline_ms"] = [ms(x) for x in e2e]
    res["pipeline_median_ms"] = ms(percentile(e2e, 50))
    res["pipeline_last_stage_start_median_ms"] = ms(percentile(last_stamp, 50))
    res["stage_handoff_median_ms"] = ms(percentile([g for pair in gaps for g in pair], 50))
    print(f"{system.name}: three-stage pipeline {res['pipeline_median_ms']} ms (median)", file=sys.stderr)

    # (c) throughput of one-job pipelines.
    n = len(read_stamps(one))
    t0 = time.time_ns()
    ids = [system.trigger("one") for _ in range(args.throughput)]
    t_sent = time.time_ns()
    # Pipelines finish roughly in order: poll the oldest unfinished one only.
    for rid in ids:
        t_end = wait_finished(system, rid, poll, timeout=1200)
    got = len(read_stamps(one)) - n
    if got != args.throughput:
        raise RuntimeError(f"{system.name}: {got} jobs ran for {args.throughput} pipelines")
    res["throughput_s"] = round((t_end - t0) / 1e9, 3)
    res["throughput_trigger_s"] = round((t_sent - t0) / 1e9, 3)
    res["throughput_per_s"] = round(args.throughput / ((t_end - t0) / 1e9), 2)
    print(f"{system.name}: {args.throughput} pipelines in {res['throughput_s']} s: {res['throughput_per_s']}/s", file=sys.stderr)

    time.sleep(2)
    res["rss_after_kib"] = rss_kib(system.server_pids())
    res["rss_after_parts_kib"] = rss_parts_kib(system.server_pids())
    res["helper_rss_after_kib"] = rss_kib(system.helper_pids())
    return res


def make_system(name, workdir, workers):
    if name == "buildbot":
        from buildbot_system import BuildbotSystem

        return BuildbotSystem(workdir, workers)
    if name == "gantry":
        from gantry_system import GantrySystem

        return GantrySystem(workdir, workers)
    sys.exit(f"unknown system {name!r} (known: buildbot, gantry)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--system", required=True)
    ap.add_argument("--work", required=True, help="private dir for the system's state")
    ap.add_argument("--out", required=True, help="JSON results file")
    ap.add_argument("--latency-runs", type=int, default=50)
    ap.add_argument("--pipeline-runs", type=int, default=5)
    ap.add_argument("--throughput", type=int, default=200)
    ap.add_argument("--workers", type=int, default=1, help="jobs the system may run at once")
    ap.add_argument("--poll-ms", type=float, default=5)
    ap.add_argument("--idle-s", type=float, default=15, help="quiet seconds before the idle memory")
    args = ap.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    system = make_system(args.system, args.work, args.workers)
    try:
        res = measure(system, args)
    finally:
        system.stop()
    left = [p for p in system.server_pids() + system.helper_pids() if os.path.exists(f"/proc/{p}")]
    res["left_running"] = left
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
