"""The scale benchmark's report: each command's figures per size, how they grow, and the
index, rebuild time and memory extrapolated to 1, 10 and 100 TB stored.

    python -m benchmarks.scale_report benchmarks/results/scale/results.json [BASELINE.json]

With a BASELINE (results.json of another code at the same chunk counts), a table of each
command's CPU time and heap there and here is added.

How growth is judged, from the two largest sizes n2 < n3 of a series (values v2, v3): the
exponent k = ln(v3 / v2) / ln(n3 / n2). A cost a + b·n has k ≤ 1 whatever its fixed part a,
so k above 1.1 means faster than linear; k near 0 means flat (the fixed cost of starting
Python and opening the repository dominates). Time is judged on CPU time (user + sys), which
other jobs on a shared machine disturb far less than wall time; memory on the anonymous RSS
(the heap): the peak RSS also counts the index's memory-mapped pages, which the kernel may
reclaim and which are bounded by the index's size.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

DEFAULT_CHUNK_BYTES = 64 << 10
TERABYTES = (1, 10, 100)
SUPERLINEAR_K = 1.1
BOUNDED_RSS_GROWTH_MIB = 50  # peak RSS that grows less than this over the series is bounded


def exponent(small: float, large: float, n_small: int, n_large: int) -> float:
    if small <= 0 or large <= 0:
        return 0.0
    return math.log(large / small) / math.log(n_large / n_small)


def growth(cases: list[dict], size_key: str, step: str, figure: str) -> str:
    if any("failed" in case["commands"][step] for case in cases[-2:]):
        return "**failed**"
    values = [case["commands"][step][figure] for case in cases]
    sizes = [case[size_key] for case in cases]
    if len(values) < 2:
        return "-"
    k = exponent(values[-2], values[-1], sizes[-2], sizes[-1])
    if figure == "peak_anon_mib" and values[-1] - values[0] < BOUNDED_RSS_GROWTH_MIB:
        return f"bounded (k {k:.2f})"
    if k > SUPERLINEAR_K:
        return f"**faster than linear (k {k:.2f})**"
    return f"k {k:.2f}"


def series_table(cases: list[dict], size_key: str, label: str) -> list[str]:
    if not cases:
        return []
    sizes = [case[size_key] for case in cases]
    head = " | ".join(f"{size:,} {label}" for size in sizes)
    lines = [f"| command | {head} | CPU time grows | heap grows |",
             "|---|" + "---|" * (len(cases) + 2)]
    for step in cases[0]["commands"]:
        cells = " | ".join(cell(case["commands"][step]) for case in cases)
        lines.append(f"| {step} | {cells} | {growth(cases, size_key, step, 'cpu_s')} | "
                     f"{growth(cases, size_key, step, 'peak_anon_mib')} |")
    return lines


def cell(figures: dict) -> str:
    """wall (cpu) seconds, peak RSS / peak heap MiB."""
    if "failed" in figures:
        return f"**failed** after {figures['wall_s']:.0f} s: {figures['failed']}"
    return (f"{figures['wall_s']:.2f} s ({figures['cpu_s']:.2f}), "
            f"{figures['peak_rss_mib']:.0f} / {figures['peak_anon_mib']:.0f} MiB")


def per_chunk(cases: list[dict], value) -> float:
    """Marginal cost of one chunk between the two largest cases (the fixed part cancels)."""
    small, large = cases[-2], cases[-1]
    return (value(large) - value(small)) / (large["chunks"] - small["chunks"])


def extrapolation(cases: list[dict]) -> list[str]:
    if len(cases) < 2:
        return []
    counts = [tb * 10**12 // DEFAULT_CHUNK_BYTES for tb in TERABYTES]
    largest = cases[-1]

    def at(value, unit_scale: float, fmt: str) -> str:
        slope = per_chunk(cases, value)
        return " | ".join(fmt.format((value(largest) + slope * (n - largest["chunks"]))
                                     / unit_scale) for n in counts)

    head = " | ".join(f"{tb} TB ({n / 1e6:,.0f} M chunks)" for tb, n in zip(TERABYTES, counts))
    index_per_chunk = largest["index_bytes"] / largest["chunks"]
    lines = [f"| figure | {head} |", "|---|" + "---|" * len(TERABYTES),
             "| index size | " + " | ".join(f"{index_per_chunk * n / 1e9:,.1f} GB"
                                           for n in counts) + " |"]
    if "index rebuild" in largest["commands"]:  # not measured with --backup-only
        lines.append("| index rebuild from pack footers | " + at(
            lambda c: c["commands"]["index rebuild"]["wall_s"], 60, "{:,.0f} min") + " |")
    for step in largest["commands"]:
        if any("failed" in case["commands"][step] for case in cases[-2:]):
            lines.append(f"| heap, {step} | " + " | ".join("failed at the largest size"
                                                         for _ in counts) + " |")
            continue
        heap = [case["commands"][step]["peak_anon_mib"] for case in cases]
        if heap[-1] - heap[0] < BOUNDED_RSS_GROWTH_MIB:
            cells = " | ".join(f"{max(heap):.0f} MiB (bounded)" for _ in counts)
        else:
            cells = at(lambda c, s=step: c["commands"][s]["peak_anon_mib"], 1024, "{:,.1f} GiB")
        lines.append(f"| heap, {step} | {cells} |")
    return lines


def report_text(results: dict) -> str:
    lines = ["# How cost grows (benchmarks/scale.py)", "",
             f"Run started {results['started']} on {results['cores']} cores; every figure is "
             f"one `diskvault` child's figures, caches warm. Cells: wall s (CPU s), peak RSS / "
             f"peak heap (anonymous RSS) MiB.",
             "", "Load average (1, 5, 15 min) before and after each case:", ""]
    for kind, key in (("snapshots", "snapshots"), ("chunks", "chunks")):
        for case in results[kind]:
            lines.append(f"- {kind} {case[key]:,}: {case['load_before']} → "
                         f"{case['load_after']} ({case['case_s']:.0f} s in all)")
    lines += ["", "## Against the number of snapshots", "",
              "A 4 MiB image at 64 KiB chunks, 10 real nightly backups, the rest copies of "
              "their records (so every snapshot is restorable and shares the same chunks).", ""]
    lines += series_table(results["snapshots"], "snapshots", "snapshots")
    pack_bytes = next((case["pack_target_bytes"] for case in results["chunks"]
                       if "pack_target_bytes" in case), 64 << 20)
    lines += ["", "## Against the number of chunks", "",
              f"One random image of N × 256 B at `--chunk-size 256` in packs of "
              f"{pack_bytes >> 10:,} KiB, then a 1 MiB image in the same series; prune forgets "
              f"the big snapshot and compact frees its packs.", ""]
    lines += series_table(results["chunks"], "chunks", "chunks")
    if results["chunks"]:
        lines += ["", "Index size per chunk: " + ", ".join(
            f"{case['index_bytes'] / case['chunks']:.0f} B at {case['chunks']:,}"
            for case in results["chunks"])]
    lines += ["", "## Extrapolated to terabytes stored (64 KiB average chunk)", "",
              "Linear from the two largest chunk cases (a heap that did not grow stays as "
              "measured). The whole-image rows are an image of that many chunks.", ""]
    lines += extrapolation(results["chunks"])
    return "\n".join(lines) + "\n"


def comparison(results: dict, baseline: dict, label: str) -> list[str]:
    """Each command's CPU time and heap in ``baseline`` and in ``results``, at the chunk
    counts both measured."""
    before = {case["chunks"]: case for case in baseline["chunks"]}
    cases = [case for case in results["chunks"] if case["chunks"] in before]
    if not cases:
        return []
    head = " | ".join(f"{case['chunks']:,} chunks" for case in cases)
    lines = ["", f"## Against {label}", "",
             "CPU s and heap MiB (anonymous RSS), before → after.", "",
             f"| command | {head} |", "|---|" + "---|" * len(cases)]
    for step in cases[0]["commands"]:
        cells = []
        for case in cases:
            old, new = before[case["chunks"]]["commands"].get(step), case["commands"][step]
            cells.append("-" if old is None else
                         f"{old['cpu_s']:.1f} → {new['cpu_s']:.1f} s, "
                         f"{old['peak_anon_mib']:.0f} → {new['peak_anon_mib']:.0f} MiB")
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    return lines


def write_report(results: dict, path: Path) -> str:
    text = report_text(results)
    path.write_text(text)
    return text


if __name__ == "__main__":
    text = report_text(json.loads(Path(sys.argv[1]).read_text()))
    if len(sys.argv) > 2:
        baseline = json.loads(Path(sys.argv[2]).read_text())
        text += "\n".join(comparison(json.loads(Path(sys.argv[1]).read_text()), baseline,
                                     f"the baseline ({sys.argv[2]}, {baseline['started']})"))
        text += "\n"
    print(text, end="")
