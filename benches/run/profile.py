#!/usr/bin/env python3
"""Where a containerised job's time goes, for benches/run/run (standard library only).

    profile.py api SOCKET IMAGE RUNS OUT.json
        Times each Engine API call of one short-lived container (`true` in IMAGE), RUNS times
        per variant, the variants interleaved so that drift hits them alike:
          bare      create, start, wait, delete: what `docker run --rm IMAGE true` asks for
                    (on the benches' private daemon, which runs with --bridge=none, such a
                    container gets no network at all, only loopback)
          binds     bare + the two bind mounts Gantry gives a job (workspace, scripts): the
                    calls Gantry's docker executor makes for a job without services (it also
                    inspects the image and follows the logs)
          network   bare on a user-defined bridge network created for it and deleted after:
                    network create, create, start, wait, delete, network delete
          net+binds network + binds: what Gantry does for a job with services (a network of
                    the job's own, for the services' aliases), and did for every job before
                    commit f759f55

    profile.py strace TRACE JOBS OUT.json
        Reads `strace -f -ttt -e trace=sendto,recvfrom,...` of one `gantry run --executor docker`
        of JOBS jobs run one at a time (-j 1) and splits its wall time into Engine API calls
        (per endpoint: count, mean ms; the logs call spans the container's own run) and
        everything between them (process start, planning, git archive of the workspace,
        scripts, exit).

    profile.py exec TRACE JOBS OUT.json
        Reads `strace -f -ttt -e trace=execve,exit_group` of one `gantry run --executor shell`
        of JOBS jobs run one at a time and splits its wall time into the child processes it
        starts (per program: count, mean ms from exec to exit) and the rest (Gantry itself).

    profile.py perf REPORT OUT.json
        Reads `perf report --sort comm --stdio` of a `perf record` of the same shell run and
        prints the share of CPU samples per process name (Gantry's own threads are `gantry`
        and `tokio-rt-worker`).

Each prints a Markdown table and writes the numbers as JSON to OUT.json.
"""

import http.client
import json
import os
import re
import socket
import statistics
import sys
import tempfile
import time

API = "/v1.41"


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=120)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(120)
        self.sock.connect(self.path)


class Engine:
    def __init__(self, path):
        self.conn = UnixConnection(path)

    def call(self, method, url, body=None):
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else {}
        t0 = time.perf_counter()
        self.conn.request(method, API + url, body=data, headers=headers)
        resp = self.conn.getresponse()
        payload = resp.read()
        dt = (time.perf_counter() - t0) * 1000
        if resp.status >= 300:
            raise RuntimeError(f"{method} {url}: {resp.status} {payload[:300]!r}")
        return (json.loads(payload) if payload else None), dt


def one_container(engine, image, variant, run, scratch):
    """Runs `true` in IMAGE the way VARIANT says; returns {step: ms}."""
    t = {}
    name = f"gantry-bench-profile-{os.getpid()}-{variant.replace('+', '-')}-{run}"
    net = None
    host_config = {}
    body = {"Image": image, "Cmd": ["true"], "Labels": {"org.gantry.bench": "profile"}}
    if variant in ("network", "net+binds"):
        net = name + "-net"
        _, t["network create"] = engine.call("POST", "/networks/create", {
            "Name": net, "Driver": "bridge", "Labels": {"org.gantry.bench": "profile"}})
        host_config["NetworkMode"] = net
        body["NetworkingConfig"] = {"EndpointsConfig": {net: {"Aliases": []}}}
    if variant in ("binds", "net+binds"):
        host_config["Binds"] = [f"{scratch}/ws:/builds/bench/run", f"{scratch}/scripts:/gantry/scripts:ro"]
        body["WorkingDir"] = "/builds/bench/run"
    body["HostConfig"] = host_config
    try:
        created, t["container create"] = engine.call("POST", f"/containers/create?name={name}", body)
        cid = created["Id"]
        try:
            _, t["container start"] = engine.call("POST", f"/containers/{cid}/start")
            out, t["container wait (runs `true`)"] = engine.call("POST", f"/containers/{cid}/wait")
            if out.get("StatusCode") != 0:
                raise RuntimeError(f"`true` exited with {out.get('StatusCode')} in {image}")
        finally:
            _, t["container delete"] = engine.call("DELETE", f"/containers/{cid}?v=true&force=true")
    finally:
        if net:
            _, t["network delete"] = engine.call("DELETE", f"/networks/{net}")
    t["total"] = sum(t.values())
    return t


STEPS = ["network create", "container create", "container start", "container wait (runs `true`)",
         "container delete", "network delete", "total"]
VARIANTS = ["bare", "binds", "network", "net+binds"]


def api(sock, image, runs, out):
    engine = Engine(sock)
    scratch = tempfile.mkdtemp(prefix="gantry-bench-profile-")
    os.makedirs(f"{scratch}/ws")
    os.makedirs(f"{scratch}/scripts")
    samples = {v: [] for v in VARIANTS}
    try:
        for v in VARIANTS:  # warm-up, not counted
            one_container(engine, image, v, "warmup", scratch)
        for r in range(runs):
            for v in VARIANTS:
                samples[v].append(one_container(engine, image, v, r, scratch))
    finally:
        os.rmdir(f"{scratch}/ws")
        os.rmdir(f"{scratch}/scripts")
        os.rmdir(scratch)
    med = {v: {s: statistics.median(x[s] for x in samples[v]) for s in STEPS if s in samples[v][0]}
           for v in VARIANTS}
    json.dump({"runs": runs, "median_ms": med}, open(out, "w"), indent=1)
    print(f"Engine API calls for one container running `true`, median ms of {runs} runs per variant "
          f"(bare: as `docker run`; binds: as Gantry for a job without services, on the default "
          f"network; network: on a bridge network of its own, created and deleted around it; "
          f"net+binds: as Gantry for a job with services):")
    print()
    print("| call | " + " | ".join(VARIANTS) + " |")
    print("| --- |" + " ---: |" * len(VARIANTS))
    for s in STEPS:
        cells = [f"{med[v][s]:.0f}" if s in med[v] else "" for v in VARIANTS]
        label = f"**{s}**" if s == "total" else s
        cells = [f"**{c}**" if s == "total" and c else c for c in cells]
        print(f"| {label} | " + " | ".join(cells) + " |")


# --- strace -------------------------------------------------------------------------------

LINE = re.compile(r'^(\d+)\s+(\d+\.\d+)\s+(\w+)\((\d+), "(.*)')


def endpoint(req):
    # strace cuts long strings: the request line may lack its " HTTP/1.1" tail.
    m = re.match(r'(GET|POST|DELETE|PUT|HEAD) (/[^ "\\]+)', req)
    if not m:
        return None
    method, url = m.groups()
    url = url.split("?")[0]
    url = re.sub(r"^/v\d+\.\d+", "", url)
    url = re.sub(r"/containers/[0-9a-f]{12,}", "/containers/{id}", url)
    url = re.sub(r"/networks/gantry-[^/]+", "/networks/{name}", url)
    url = re.sub(r"/images/.+/json", "/images/{name}/json", url)
    return f"{method} {url}"


def strace(trace, jobs, out):
    pending = {}  # fd -> [(t, endpoint)]
    calls = {}
    start = end = None
    busy = []  # (t0, t1) intervals with an API call outstanding
    for line in open(trace, errors="replace"):
        m = LINE.match(line)
        if not m:
            continue
        _, ts, sysc, fd, data = m.groups()
        t = float(ts)
        start = t if start is None else start
        end = t
        if sysc in ("sendto", "write", "writev", "sendmsg"):
            ep = endpoint(data)
            if ep:
                pending.setdefault(fd, []).append((t, ep))
        elif sysc in ("recvfrom", "read", "recvmsg") and data.startswith("HTTP/1.1 "):
            q = pending.get(fd)
            if q:
                t0, ep = q.pop(0)
                calls.setdefault(ep, []).append((t - t0) * 1000)
                busy.append((t0, t))
    if start is None:
        sys.exit(f"no timestamps in {trace}")
    # Gantry asks for the log stream (follow) right after the start call; the daemon answers
    # when the container has output or has exited, so for `true` the logs call spans the
    # container's own run, and the wait call that follows returns at once.
    busy.sort()
    merged = []
    for a, b in busy:
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    in_api = sum(b - a for a, b in merged) * 1000
    wall = (end - start) * 1000
    rows = sorted(((ep, len(v), statistics.mean(v), sum(v)) for ep, v in calls.items()),
                  key=lambda r: -r[3])
    json.dump({"jobs": jobs, "wall_ms": wall, "in_api_ms": in_api,
               "calls": {ep: {"count": n, "mean_ms": m, "total_ms": s} for ep, n, m, s in rows}},
              open(out, "w"), indent=1)
    print(f"`gantry run --executor docker -j 1`, {jobs} jobs of `true`, under strace "
          f"(which slows it down): {wall:,.0f} ms wall, {wall / jobs:,.0f} ms per job.")
    print()
    print("| Engine API call | calls | mean ms | ms per job | share of wall |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for ep, n, m, s in rows:
        print(f"| `{ep}` | {n} | {m:.1f} | {s / jobs:.1f} | {100 * s / wall:.0f}% |")
    outside = wall - in_api
    print(f"| no call outstanding (process start, planning, workspace checkout, scripts, exit) | | "
          f"| {outside / jobs:.1f} | {100 * outside / wall:.0f}% |")


# --- exec ---------------------------------------------------------------------------------

EXEC = re.compile(r'^(\d+)\s+(\d+\.\d+) execve\("([^"]+)", \[([^\]]*)\].* = 0$')
EXIT = re.compile(r'^(\d+)\s+(\d+\.\d+) (?:exit_group\(|\+\+\+ (?:exited|killed))')


def program(path, argv):
    args = re.findall(r'"((?:[^"\\]|\\.)*)"', argv)
    name = os.path.basename(path)
    if name == "git":
        sub = next((a for a in args[1:] if not a.startswith("-") and not a.startswith("/")
                    and a != "."), "")
        flags = [a for a in args[args.index(sub) + 1:] if a.startswith("--")][:1] if sub in args else []
        return " ".join(["git", sub] + flags)
    if name == "kill":
        return "kill (process group)"
    return name


def exec_profile(trace, jobs, out):
    start = end = None
    progs = {}  # pid -> [t_exec, label]
    spans = []  # (t0, t1, label)
    root = None
    for line in open(trace, errors="replace"):
        m = re.match(r"^(\d+)\s+(\d+\.\d+) ", line)
        if not m:
            continue
        pid, t = m.group(1), float(m.group(2))
        start = t if start is None else start
        end = t
        e = EXEC.match(line.rstrip())
        if e:
            if root is None:
                root = pid
                continue
            label = program(e.group(3), e.group(4))
            if pid in progs:  # sh that execs bash: one process, both names
                progs[pid][1] += " → " + label
            else:
                progs[pid] = [t, label]
            continue
        x = EXIT.match(line)
        if x and pid in progs and pid != root:
            t0, label = progs.pop(pid)
            spans.append((t0, t, label))
    if start is None or not spans:
        sys.exit(f"no child processes in {trace}")
    wall = (end - start) * 1000
    by = {}
    for t0, t1, label in spans:
        by.setdefault(label, []).append((t1 - t0) * 1000)
    merged = []
    for a, b, _ in sorted(spans):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    in_children = sum(b - a for a, b in merged) * 1000
    rows = sorted(((k, len(v), statistics.mean(v), sum(v)) for k, v in by.items()), key=lambda r: -r[3])
    json.dump({"jobs": jobs, "wall_ms": wall, "in_children_ms": in_children,
               "programs": {k: {"count": n, "mean_ms": m, "total_ms": s} for k, n, m, s in rows}},
              open(out, "w"), indent=1)
    print(f"`gantry run --executor shell -j 1`, {jobs} jobs of `true`, under strace (which slows "
          f"process start-up most): {wall:,.0f} ms wall, {len(spans)} child processes, "
          f"{len(spans) / jobs:.1f} per job.")
    print()
    print("| child process | count | mean ms, exec to exit | ms per job | share of wall |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for k, n, m, s in rows:
        print(f"| `{k}` | {n} | {m:.1f} | {s / jobs:.1f} | {100 * s / wall:.0f}% |")
    rest = wall - in_children
    print(f"| no child running (Gantry itself: start, plan, scheduling, fork/exec, exit) | | | "
          f"{rest / jobs:.1f} | {100 * rest / wall:.0f}% |")


def perf_profile(report, out):
    shares = []
    for line in open(report, errors="replace"):
        m = re.match(r"^\s+(\d+\.\d+)%\s+(\S.*?)\s*$", line)
        if m:
            shares.append((m.group(2), float(m.group(1))))
    if not shares:
        sys.exit(f"no samples in {report}")
    json.dump(dict(shares), open(out, "w"), indent=1)
    own = sum(v for k, v in shares if k in ("gantry", "tokio-rt-worker"))
    print(f"CPU samples of the same run by process name (`perf record` of gantry and every "
          f"process it starts): Gantry's own threads {own:.0f}%, the processes it starts "
          f"{100 - own:.0f}%.")
    print()
    print("| process | share of CPU samples |")
    print("| --- | ---: |")
    for k, v in shares:
        if v >= 0.5:
            print(f"| `{k}` | {v:.1f}% |")


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "perf":
        perf_profile(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 5 and sys.argv[1] == "exec":
        exec_profile(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    elif len(sys.argv) == 6 and sys.argv[1] == "api":
        api(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
    elif len(sys.argv) == 5 and sys.argv[1] == "strace":
        strace(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
