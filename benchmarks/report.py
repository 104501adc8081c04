"""Turns a run's results (results.json) into report.md and a PNG plot; prints the report.

Usage: python -m benchmarks.report benchmarks/results/fs-image/results.json
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from .figures import FIGURES, Figure, figure_rows, goal_lines, nightly

MiB = 1 << 20


def write_report(results: dict, folder: Path, plot: bool = True) -> str:
    """Write report.md (and repo-size.png when plot) into folder; return the markdown."""
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps(results, indent=1)  # keep the tools in run order
    (folder / "results.json").write_text(text)
    results = json.loads(text)  # one shape whether fresh or read back: night keys are strings
    plotted = plot and _plot(results, folder / "repo-size.png")
    markdown = render(results, plotted)
    (folder / "report.md").write_text(markdown)
    return markdown


def render(results: dict, plotted: bool) -> str:
    w = results["workload"]
    lines = [f"# {w['name']}: {w['image_size'] >> 20} MiB image, night 0 + {w['nights']} nights",
             "", w["description"] + ".", "",
             f"Machine: {_machine(results['machine'])}. Caches: {results['cache']}.",
             "Lower is better in every row. *× baseline*: the tool's figure over the baseline's; "
             "*× best peer*: over the best of borg, borg64k, restic and casync (diskvault "
             "excluded), so below 1.00× beats every peer.", "",
             "| figure | tool | value | × baseline | × best peer | note |",
             "|---|---|---:|---:|---:|---|"]
    for figure in FIGURES:
        lines += [_row(figure, row) for row in figure_rows(figure, results)]
    lines += ["", "## Goals (issue 6, issue 2)", ""] + goal_lines(results)
    lines += ["", "## Per night", "", *_nightly_table(results, "wall_s", "backup wall time, s",
                                                          lambda v: f"{v:.2f}")]
    lines += ["", *_nightly_table(results, "repo_bytes", "repository size after the night, MiB",
                                  lambda v: f"{v / MiB:.0f}")]
    if plotted:
        lines += ["", "![repository size and backup time by night](repo-size.png)"]
    lines += ["", "## Tools", "", "| tool | version | settings | status |", "|---|---|---|---|"]
    for name, tool in results["tools"].items():
        status = tool.get("error", "ok").replace("|", "/")
        status = status if len(status) <= 400 else status[:397] + "..."
        lines.append(f"| {name} | {tool.get('version', '—')} | {tool['settings']} | {status} |")
    lines += ["", "## Workload changes per night", ""]
    for night, changes in sorted(w["changes"].items(), key=lambda kv: int(kv[0])):
        if changes:
            lines.append(f"- night {night}: " + ", ".join(f"{k} {v}" for k, v in changes.items()))
    lines.append(f"\nHarness run time: {results.get('run_s', 0) / 60:.1f} min for this workload.")
    return "\n".join(lines) + "\n"


def _row(figure: Figure, row: dict) -> str:
    return (f"| {row['figure']} | {row['tool']} | {row['value']} | {row['vs_baseline']} | "
            f"{row['vs_best_peer']} | {row['note']} |")


def _machine(machine: dict) -> str:
    load = ""
    if "load_average_start" in machine:
        load = (f", load average {machine['load_average_start']} at the start and "
                f"{machine.get('load_average_end', '?')} at the end (1-minute)")
    return (f"{machine['cpus']} cores, {machine['memory_gib']} GiB, Linux {machine['kernel']}, "
            f"Python {machine['python']}, {machine['date']}{load}")


def _nightly_table(results: dict, key: str, title: str, fmt) -> list[str]:
    tools = list(results["tools"])
    table = nightly(results, key)
    lines = [f"| night ({title}) | baseline cat | " + " | ".join(tools) + " |",
             "|---|---:|" + "---:|" * len(tools)]
    for night in range(results["workload"]["nights"] + 1):
        cat = results["baseline"]["cat"].get(str(night))
        base = f"{cat['wall_s']:.2f}" if key == "wall_s" and cat else "—"
        cells = [fmt(table[t][night]) if night in table[t] else "—" for t in tools]
        lines.append(f"| {night} | {base} | " + " | ".join(cells) + " |")
    return lines


def _plot(results: dict, path: Path) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    figure, (sizes, times) = plt.subplots(1, 2, figsize=(11, 4.6))
    for tool in results["tools"]:
        for axis, key, scale in ((sizes, "repo_bytes", MiB), (times, "wall_s", 1)):
            series = nightly(results, key)[tool]
            if series:
                nights = sorted(series)
                axis.plot(nights, [series[n] / scale for n in nights], marker="o", label=tool,
                          linewidth=2.5 if tool == "diskvault" else 1.5)
    cat = results["baseline"]["cat"]
    nights = sorted(int(n) for n in cat)
    times.plot(nights, [cat[str(n)]["wall_s"] for n in nights],
               linestyle="--", color="grey", label="cat image (baseline)")
    workload = results["workload"]
    sizes.set(title=f"Repository size by night ({workload['name']})", xlabel="night",
              ylabel="MiB (allocated)")
    times.set(title="Backup wall time by night", xlabel="night", ylabel="seconds")
    for axis in (sizes, times):
        axis.grid(alpha=0.3)
        axis.set_xticks(range(workload["nights"] + 1))
    handles, labels = times.get_legend_handles_labels()  # one legend for both, under the plots
    figure.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=9, frameon=False)
    figure.tight_layout(rect=(0, 0.07, 1, 1))
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def main(argv: list[str]) -> int:
    for name in argv:
        path = Path(name)
        print(write_report(json.loads(path.read_text()), path.parent))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
