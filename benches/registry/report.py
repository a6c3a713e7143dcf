"""Tables for benches/registry: reads OUT/{sha256,peer,gantry}.jsonl (written by `run` from
registry-load's output) and prints Markdown: per scenario and client count, each system's
seconds and rate, the ratio peer ÷ gantry (wall time: above 1 means Gantry is faster) and
the goal.

Usage: python3 report.py OUT_DIR
"""

import json
import os
import sys

MIB = 1 << 20

# scenario -> (label, unit, goal ratio peer ÷ gantry)
SCENARIOS = {
    "large-push-put": ("large layer push, monolithic (POST + PUT)", "MiB/s", 4.0),
    "large-push-patch": ("large layer push, as docker (POST + PATCH + PUT)", "MiB/s", 4.0),
    "large-pull": ("large layer pull (digest verified)", "MiB/s", 1.0),
    "small-push": ("small images push (HEAD, POST, PATCH, PUT per blob; manifest)", "images/s", 5.0),
    "small-pull": ("small images pull (manifest, 3 blobs verified)", "images/s", 1.0),
}


def load(path):
    rows = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line:
                    rows.append(json.loads(line))
    return rows


def rate(r, unit):
    if unit == "MiB/s":
        return r["bytes"] / MIB / r["seconds"]
    return r["images"] / r["seconds"]


def main():
    out = sys.argv[1]
    sha = load(os.path.join(out, "sha256.jsonl"))
    peer = load(os.path.join(out, "peer.jsonl"))
    gantry = load(os.path.join(out, "gantry.jsonl"))
    by = {}
    notes = {}
    for system, rows in (("peer", peer), ("gantry", gantry)):
        for r in rows:
            if r["scenario"] in SCENARIOS:
                by[(system, r["scenario"], r["clients"])] = r
            else:
                notes.setdefault(system, []).append(r)
    sha_rows = {r["scenario"]: r for r in sha}
    sha_mib = None
    if "sha256" in sha_rows:
        r = sha_rows["sha256"]
        sha_mib = r["bytes"] / MIB / r["seconds"]
    openssl = sha_rows.get("sha256-openssl")

    lines = []
    if sha_mib:
        lines.append(f"This machine's single-core SHA-256 (sha2, the crate Gantry hashes with): "
                     f"**{sha_mib:,.0f} MiB/s**. A push that hashes as it receives cannot go faster "
                     f"per stream; the large-push rows give each system's throughput as a share of it (on as many "
                     f"cores as there are clients, up to the machine's {os.cpu_count()}).")
        if openssl:
            lines.append(f"OpenSSL {openssl.get('version', '')} on one core: "
                         f"{openssl['bytes'] / MIB:,.0f} MiB/s (`openssl speed -evp sha256`, 1 MiB blocks).")
        lines.append("")
    for system in ("peer", "gantry"):
        for r in notes.get(system, []):
            if r["scenario"] == "missing":
                lines.append(f"- {system}: {r['reason']}: not measured.")
            elif r["scenario"] == "rss":
                lines.append(f"- {system} ({r.get('version', '?')}): peak RSS {r['peak_mib']} MiB over the whole run.")
    if lines and lines[-1] != "":
        lines.append("")

    lines.append("| scenario | clients | peer s | peer rate | gantry s | gantry rate | peer ÷ gantry | goal |")
    lines.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    clients = sorted({k[2] for k in by})
    for scenario, (label, unit, goal) in SCENARIOS.items():
        for n in clients:
            p = by.get(("peer", scenario, n))
            g = by.get(("gantry", scenario, n))
            if not p and not g:
                continue

            def cells(r):
                if not r:
                    return "—", "—"
                extra = ""
                if unit == "MiB/s" and sha_mib and scenario.startswith("large-push"):
                    # The most a server can hash at once: one stream per core.
                    cores = min(n, os.cpu_count() or 1)
                    share = rate(r, unit) / (sha_mib * cores)
                    extra = f" ({share:.0%} of SHA-256 on {cores} core{'s' if cores > 1 else ''})"
                return f"{r['seconds']:.2f}", f"{rate(r, unit):,.1f} {unit}{extra}"

            ps, pr = cells(p)
            gs, gr = cells(g)
            if p and g:
                ratio = p["seconds"] / g["seconds"]
                verdict = "met" if ratio >= goal else "not met"
                ratio_s = f"{ratio:.2f}×"
            else:
                ratio_s, verdict = "—", "—"
            goal_s = f"≥ {goal:g}× ({verdict})" if goal > 1 else f"at least as fast ({verdict})"
            lines.append(f"| {label} | {n} | {ps} | {pr} | {gs} | {gr} | {ratio_s} | {goal_s} |")
    lines.append("")
    lines.append("Rates: MiB/s of layer data (all clients together) or whole images per second. "
                 "Ratios are of wall time, peer ÷ gantry: above 1, Gantry is faster.")

    # CPU time: what a busy machine disturbs least.
    if any(r.get("server_cpu") is not None for r in by.values()):
        lines.append("")
        lines.append("Server CPU time (user + system) over each phase, and the load client's own:")
        lines.append("")
        lines.append("| scenario | clients | peer CPU s | gantry CPU s | peer ÷ gantry (CPU) | client CPU s (peer / gantry runs) |")
        lines.append("| --- | ---: | ---: | ---: | ---: | ---: |")

        def cpu(r, key):
            v = r.get(key) if r else None
            return f"{v:.2f}" if v is not None else "—"

        for scenario, (label, _unit, _goal) in SCENARIOS.items():
            for n in clients:
                p = by.get(("peer", scenario, n))
                g = by.get(("gantry", scenario, n))
                if not p and not g:
                    continue
                ratio = "—"
                if p and g and p.get("server_cpu") and g.get("server_cpu"):
                    ratio = f"{p['server_cpu'] / g['server_cpu']:.2f}×"
                lines.append(f"| {label} | {n} | {cpu(p, 'server_cpu')} | {cpu(g, 'server_cpu')} | {ratio} "
                             f"| {cpu(p, 'client_cpu')} / {cpu(g, 'client_cpu')} |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
