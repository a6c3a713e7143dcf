"""Markdown table of benches/server/out/SYSTEM.json: python3 report.py OUT_DIR SYSTEM...

With Gantry and Buildbot both measured, three more columns: Gantry ÷ Buildbot (the plain
ratio of the two numbers), how many times better Gantry is (Buildbot ÷ Gantry for times and
memory, Gantry ÷ Buildbot for throughput), and the goal of issue 5 with whether this run met it.
"""

import json
import os
import sys

# Goals of issue 5: (text, met(gantry, buildbot)), None where the issue sets none.
LATENCY_GOAL = ("≤ 5 ms and ≥ 40× lower", lambda g, b: g <= 5 and b / g >= 40)
THROUGHPUT_GOAL = ("≥ 25× higher", lambda g, b: g / b >= 25)
MEMORY_GOAL = ("≤ ⅓ (≥ 3× less)", lambda g, b: b / g >= 3)

ROWS = [
    # key, label, unit, better ("lower"/"higher"), goal
    ("latency_p50_ms", "trigger → job's command starts, p50", "ms", "lower", LATENCY_GOAL),
    ("latency_p99_ms", "trigger → job's command starts, p99", "ms", "lower", None),
    ("pipeline_median_ms", "empty three-stage pipeline, trigger → API says finished (median)", "ms", "lower", None),
    ("pipeline_last_stage_start_median_ms", "… trigger → third stage's command starts (median)", "ms", "lower", None),
    ("stage_handoff_median_ms", "… stage finished → next stage's command starts (median)", "ms", "lower", None),
    ("throughput_per_s", "throughput, one-job pipelines", "/s", "higher", THROUGHPUT_GOAL),
    ("rss_idle_mib", "server memory (RSS) idle", "MiB", "lower", MEMORY_GOAL),
    ("rss_after_mib", "server memory (RSS) after the runs", "MiB", "lower", MEMORY_GOAL),
    ("helper_rss_after_mib", "workers/agents memory (RSS) after the runs", "MiB", "lower", None),
]


def load(out, name):
    with open(os.path.join(out, f"{name}.json")) as f:
        r = json.load(f)
    for k in ("rss_idle", "rss_after", "helper_rss_after"):
        r[f"{k}_mib"] = round(r[f"{k}_kib"] / 1024, 1)
    return r


def main():
    out, systems = sys.argv[1], sys.argv[2:]
    res = {s: load(out, s) for s in systems}
    both = "gantry" in res and "buildbot" in res
    head = ["measure"] + [f"{s} ({res[s]['version']})" for s in systems]
    if both:
        head += ["gantry ÷ buildbot", "gantry better by", "goal", "met"]
    print("| " + " | ".join(head) + " |")
    aligns = ["---"] + ["---:"] * (len(head) - 1)
    if both:
        aligns[-2:] = ["---", "---"]  # goal and met: text
    print("| " + " | ".join(aligns) + " |")
    for key, label, unit, better, goal in ROWS:
        cells = [label] + [f"{res[s][key]} {unit}" for s in systems]
        if both:
            g, b = res["gantry"][key], res["buildbot"][key]
            if g and b:
                by = b / g if better == "lower" else g / b
                cells += [f"{g / b:.3g}", f"{by:.1f}×" if by >= 1 else f"{by:.2f}×"]
            else:
                cells += ["–", "–"]
            if goal is None:
                cells += ["", ""]
            else:
                cells += [goal[0], ("yes" if goal[1](g, b) else "**no**") if g and b else "?"]
        print("| " + " | ".join(cells) + " |")
    print()
    for s in systems:
        r = res[s]
        print(
            f"- {s}: {len(r['latency_ms'])} sequential triggers for the latency, "
            f"{len(r['pipeline_ms'])} three-stage pipelines ({', '.join(str(x) for x in r['pipeline_ms'])} ms), "
            f"throughput: {round(r['throughput_per_s'] * r['throughput_s'])} pipelines in {r['throughput_s']} s "
            f"(of which {r['throughput_trigger_s']} s sending the triggers); jobs at once: {r['workers']}; "
            f"server started in {r['start_s']} s; "
            + (
                f"server RSS after the runs: {round(p['file_kib'] / 1024, 1)} MiB of mapped files "
                f"(code, libraries), {round(p['anon_kib'] / 1024, 1)} MiB anonymous; "
                if (p := r.get("rss_after_parts_kib"))
                else ""
            )
            + (
                f"worker/agent RSS idle {round(r['helper_rss_idle_kib'] / 1024, 1)} MiB."
                if r["helper_rss_idle_kib"]
                else "no separate workers/agents (the agent runs inside the server, in its memory)."
            )
        )


if __name__ == "__main__":
    main()
