"""Markdown table of benches/server/out/SYSTEM.json: python3 report.py OUT_DIR SYSTEM...

With Gantry and Buildbot both measured, the ratio column is Buildbot ÷ Gantry for times and
memory, Gantry ÷ Buildbot for throughput (higher is better for Gantry in both cases), next to
the goals of the issue.
"""

import json
import os
import sys

ROWS = [
    # key, label, unit, better ("lower"/"higher"), goal as a ratio (text)
    ("latency_p50_ms", "trigger → job's command starts, p50", "ms", "lower", "≥ 40× (and ≤ 5 ms)"),
    ("latency_p99_ms", "trigger → job's command starts, p99", "ms", "lower", ""),
    ("pipeline_median_ms", "empty three-stage pipeline, trigger → API says finished (median)", "ms", "lower", ""),
    ("pipeline_last_stage_start_median_ms", "… trigger → third stage's command starts (median)", "ms", "lower", ""),
    ("stage_handoff_median_ms", "… stage finished → next stage's command starts (median)", "ms", "lower", ""),
    ("throughput_per_s", "throughput, one-job pipelines", "/s", "higher", "≥ 25×"),
    ("rss_idle_mib", "server memory (RSS) idle", "MiB", "lower", "≥ 3× less"),
    ("rss_after_mib", "server memory (RSS) after the runs", "MiB", "lower", "≥ 3× less"),
    ("helper_rss_after_mib", "workers/agents memory (RSS) after the runs", "MiB", "lower", ""),
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
        head += ["ratio", "goal"]
    print("| " + " | ".join(head) + " |")
    print("| --- " + "| ---: " * (len(head) - 1) + "|")
    for key, label, unit, better, goal in ROWS:
        cells = [label] + [f"{res[s][key]} {unit}" for s in systems]
        if both:
            g, b = res["gantry"][key], res["buildbot"][key]
            ratio = (b / g if better == "lower" else g / b) if g and b else float("nan")
            cells += [f"{ratio:.1f}×", goal]
        print("| " + " | ".join(cells) + " |")
    print()
    for s in systems:
        r = res[s]
        print(
            f"- {s}: {len(r['latency_ms'])} sequential triggers for the latency, "
            f"{len(r['pipeline_ms'])} three-stage pipelines ({', '.join(str(x) for x in r['pipeline_ms'])} ms), "
            f"throughput: {round(r['throughput_per_s'] * r['throughput_s'])} pipelines in {r['throughput_s']} s "
            f"(of which {r['throughput_trigger_s']} s sending the triggers); jobs at once: {r['workers']}; "
            f"server started in {r['start_s']} s; worker/agent RSS idle "
            f"{round(r['helper_rss_idle_kib'] / 1024, 1)} MiB."
        )


if __name__ == "__main__":
    main()
