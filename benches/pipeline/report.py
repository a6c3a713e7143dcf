#!/usr/bin/env python3
"""Prints the Markdown table of benches/pipeline/run from hyperfine's JSON exports.

    python3 report.py OUT_DIR GOAL "10 200 2000"

reads OUT_DIR/gantry-N.json and OUT_DIR/gitlab-ci-local-N.json for each size N.
"""

import json
import sys


def result(out, tool, n):
    r = json.load(open(f"{out}/{tool}-{n}.json"))["results"][0]
    sd = r["stddev"] if r.get("stddev") is not None else 0.0
    return {
        "mean": r["mean"] * 1000,
        "sd": sd * 1000,
        "runs": len(r["times"]),
        "cpu": (r["user"] + r["system"]) * 1000,
    }


def main():
    out, goal, sizes = sys.argv[1], float(sys.argv[2]), [int(s) for s in sys.argv[3].split()]
    print("| jobs | gantry plan, ms | gitlab-ci-local --list, ms | ratio "
          "| gantry µs/job | gantry CPU, ms | gantry CPU µs/job, marginal |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    prev, worst, margins = None, None, []
    for n in sizes:
        g = result(out, "gantry", n)
        p = result(out, "gitlab-ci-local", n)
        ratio = p["mean"] / g["mean"]
        worst = ratio if worst is None else min(worst, ratio)
        marginal = ""
        if prev is not None:
            margins.append((g["cpu"] - prev[1]) * 1000 / (n - prev[0]))
            marginal = f"{margins[-1]:.0f}"
        print(f"| {n:,} | {g['mean']:.1f} ± {g['sd']:.1f} ({g['runs']} runs) "
              f"| {p['mean']:,.0f} ± {p['sd']:,.0f} ({p['runs']} runs) | {ratio:.0f}× "
              f"| {g['mean'] * 1000 / n:.0f} | {g['cpu']:.1f} | {marginal} |")
        prev = (n, g["cpu"])
    print()
    verdict = "met" if worst >= goal else "NOT met"
    print(f"Goal of at least {goal:.0f}× at every size: **{verdict}** (lowest ratio {worst:.0f}×).")
    if len(margins) >= 2 and margins[0] > 0:
        growth = margins[-1] / margins[0]
        shape = "roughly linear" if growth <= 1.5 else "superlinear"
        shape += f": the marginal CPU per job changed {growth:.2f}× from the first step to the last"
        print(f"Gantry's time against the number of jobs: **{shape}**.")
    print()
    print("Ratio: gitlab-ci-local's mean ÷ Gantry's mean, wall clock. µs/job: Gantry's mean ÷ jobs")
    print("(at small sizes mostly process start-up). CPU: user + system time, which a busy machine")
    print("disturbs less than wall clock. Marginal: the CPU slope from the previous size, which stays")
    print("flat when time grows linearly with the number of jobs.")


if __name__ == "__main__":
    main()
