#!/usr/bin/env python3
"""Prints the Markdown tables of benches/run/run from hyperfine's JSON exports.

    python3 report.py OUT_DIR CONCURRENCY "shell docker" IMAGE

reads OUT_DIR/EXECUTOR-PIPELINE-TOOL.json (EXECUTOR shell or docker, PIPELINE overhead or
dag, TOOL gantry or gitlab-ci-local) and, for docker, OUT_DIR/docker-serial-gantry.json
(20 jobs, -j 1), docker-single-gantry.json (1 job, -j 1) and docker-bare.json (`docker run`).
"""

import json
import math
import os
import sys

OVERHEAD_GOAL = 10.0  # gitlab-ci-local's overhead ÷ Gantry's, at least
DOCKER_GOAL = 0.20  # Gantry's cost per containerised job above a bare `docker run`, at most


def result(path):
    r = json.load(open(path))["results"][0]
    sd = r["stddev"] if r.get("stddev") is not None else 0.0
    return {"mean": r["mean"] * 1000, "sd": sd * 1000, "runs": len(r["times"]),
            "cpu": (r["user"] + r["system"]) * 1000}


def cell(r):
    return f"{r['mean']:,.0f} ± {r['sd']:,.0f} ({r['runs']})"


def pipelines(j):
    # name, label, jobs, the wall time of the jobs' own commands with no engine at all
    dag_floor = max(math.ceil(50 / j), 5) * 100.0
    return [
        ("single", "1 job, `true`", 1, 0.0),
        ("overhead", "20 jobs, 4 stages, `true`", 20, 0.0),
        ("dag", "50-job DAG, 5 stages + `needs`, `sleep 0.1`", 50, dag_floor),
    ]


def executor_table(out, ex, j):
    rows, ratios, res = [], [], {}
    print(f"| pipeline ({ex}, -j {j}) | gantry, ms | gitlab-ci-local, ms | ratio "
          "| commands alone, ms | gantry overhead/job, ms | gitlab-ci-local overhead/job, ms "
          "| overhead ratio |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, label, n, floor in pipelines(j):
        g_path, p_path = f"{out}/{ex}-{name}-gantry.json", f"{out}/{ex}-{name}-gitlab-ci-local.json"
        if not (os.path.exists(g_path) and os.path.exists(p_path)):
            continue
        g, p = result(g_path), result(p_path)
        res[name] = (g, p)
        go, po = (g["mean"] - floor) / n, (p["mean"] - floor) / n
        ratio = p["mean"] / g["mean"]
        oratio = po / go if go > 0 else float("inf")
        if name != "single":
            ratios.append((label, oratio))
        print(f"| {label} | {cell(g)} | {cell(p)} | {ratio:.1f}× | {floor:,.0f} "
              f"| {go:,.1f} | {po:,.1f} | {oratio:.1f}× |")
        rows.append((name, g, p))
    print()
    if "single" in res and "overhead" in res:
        (g1, p1), (g20, p20) = res["single"], res["overhead"]
        gm, pm = (g20["mean"] - g1["mean"]) / 19, (p20["mean"] - p1["mean"]) / 19
        print(f"Fixed cost (1-job pipeline): gantry {g1['mean']:,.0f} ms, gitlab-ci-local "
              f"{p1['mean']:,.0f} ms ({p1['mean'] / g1['mean']:.1f}×). Marginal cost per job, "
              f"(20 jobs − 1 job) ÷ 19 at -j {j}: gantry {gm:,.1f} ms, gitlab-ci-local "
              f"{pm:,.1f} ms ({pm / gm:.1f}×)." if gm > 0 else "")
        print()
    bare_rows = []
    for name, label, n, _ in pipelines(j):
        b_path = f"{out}/{ex}-{name}-bare.json"
        if name in res and os.path.exists(b_path):
            b = result(b_path)
            g, p = res[name]
            go, po = (g["mean"] - b["mean"]) / n, (p["mean"] - b["mean"]) / n
            bare_rows.append((label, b, go, po))
    if bare_rows:
        print(f"The same containers started by hand, `docker run --rm` (the CLI) stage by stage, "
              f"{j} at once (the DAG's `needs` ignored): what the containers cost without a CI "
              f"engine, and each tool's time per job above that (negative: faster than by hand):")
        print()
        print("| pipeline | bare `docker run`s, ms | gantry above, ms/job "
              "| gitlab-ci-local above, ms/job | ratio |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for label, b, go, po in bare_rows:
            r = f"{po / go:.1f}×" if go > 0 else "gantry faster than by hand"
            print(f"| {label} | {cell(b)} | {go:,.1f} | {po:,.1f} | {r} |")
        print()
    if ratios:
        worst = min(r for _, r in ratios)
        verdict = "met" if worst >= OVERHEAD_GOAL else "NOT met"
        print(f"Goal of at least {OVERHEAD_GOAL:.0f}× less engine overhead than gitlab-ci-local: "
              f"**{verdict}** (lowest overhead ratio {worst:.1f}×).")
        print()
    return rows


def docker_cost(out, image):
    # docker-single-gantry ran at -j CONCURRENCY, which for one job is the same as -j 1.
    paths = {k: f"{out}/docker-{k}.json" for k in ("bare", "serial-gantry", "single-gantry")}
    if not all(os.path.exists(p) for p in paths.values()):
        return
    bare, serial, single = (result(paths[k]) for k in ("bare", "serial-gantry", "single-gantry"))
    per_job = serial["mean"] / 20
    marginal = (serial["mean"] - single["mean"]) / 19
    b = bare["mean"]
    print("Per containerised job, jobs run one at a time (`-j 1`), against the bare cost of a container:")
    print()
    print("| | ms | above bare `docker run` |")
    print("| --- | ---: | ---: |")
    print(f"| `docker run --rm {image} true` (bare) | {cell(bare)} | |")
    print(f"| gantry, 1-job pipeline | {cell(single)} | |")
    print(f"| gantry, 20-job pipeline | {cell(serial)} | |")
    print(f"| gantry per job: 20-job pipeline ÷ 20 | {per_job:,.0f} | {100 * (per_job / b - 1):+.0f}% |")
    print(f"| gantry per job, marginal: (20 jobs − 1 job) ÷ 19 | {marginal:,.0f} "
          f"| {100 * (marginal / b - 1):+.0f}% |")
    print()
    verdict = "met" if marginal <= b * (1 + DOCKER_GOAL) else "NOT met"
    print(f"Goal of at most {100 * DOCKER_GOAL:.0f}% above a bare `docker run` per containerised job: "
          f"**{verdict}** (marginal cost {marginal:,.0f} ms against {b:,.0f} ms, "
          f"{marginal / b:.2f}×).")
    print()


def main():
    out, j, executors, image = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(), sys.argv[4]
    for ex in executors:
        print(f"### {ex.capitalize()} executor")
        print()
        executor_table(out, ex, j)
        if ex == "docker":
            docker_cost(out, image)
    print(f"Times: mean ± standard deviation (runs), wall clock, from start to exit of the "
          f"command. Ratio: gitlab-ci-local ÷ Gantry. Commands alone: the wall time the jobs' "
          f"own commands need with no engine at all: 0 for `true`; for the DAG the floor at "
          f"{j} jobs at once, max(⌈50 ÷ {j}⌉, 5 levels) × 100 ms. Overhead/job: (wall − "
          f"commands alone) ÷ jobs, at -j {j}, so it is amortised over the jobs that run at "
          f"once. Overhead ratio: gitlab-ci-local's overhead ÷ Gantry's.")


if __name__ == "__main__":
    main()
