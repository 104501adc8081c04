"""The figures of the report: what each one reads from the results, its baseline, and the verdicts.

Pure functions over the results dict (night keys are strings, as after a JSON round trip).
"""
from __future__ import annotations

from dataclasses import dataclass
from statistics import mean
from typing import Callable

MB = 1_000_000  # rates are decimal MB/s, as in the targets
MiB = 1 << 20
PEERS_ONLY = ("borg", "borg64k", "restic", "casync")


@dataclass(frozen=True)
class Figure:
    key: str
    title: str
    kind: str  # "time", "cpu", "bytes"
    value: Callable[[dict, dict], float | None]  # (tool record, results) -> value
    baseline: Callable[[dict], tuple[str, float] | None]  # results -> (label, value)
    rate: bool = False  # also show MB/s of image


def _later(results: dict) -> list[str]:
    return [str(n) for n in range(1, results["workload"]["nights"] + 1)]


def _backup(key: str, nights: Callable[[dict], list[str]], combine=mean):
    def value(tool: dict, results: dict):
        values = [tool["backups"][n][key] for n in nights(results) if n in tool["backups"]]
        return combine(values) if values and len(values) == len(nights(results)) else None
    return value


def _cat(key: str):
    """The fastest of the nightly cold reads: the images are the same size and mostly the same
    bytes, so this is what reading one costs when the shared disk does not stall. Ratios to it
    are conservative: they never flatter a tool."""
    def baseline(results: dict):
        values = [run[key] for run in results["baseline"]["cat"].values()]
        return ("baseline: `cat image` (fastest night)", min(values)) if values else None
    return baseline


def _first(results: dict) -> list[str]:
    return ["0"]


def _all(results: dict) -> list[str]:
    return [str(n) for n in range(results["workload"]["nights"] + 1)]


def _last(results: dict) -> list[str]:
    return [str(results["workload"]["nights"])]


def _restore(tool: dict, results: dict):
    restore = tool.get("restore")
    return restore["total_s"] if restore and restore.get("bit_exact") else None


def _pull(tool: dict, results: dict):
    pull = tool.get("pull") or {}
    return pull.get("total_s") if pull.get("verified") else None


def _pull_baseline(results: dict):
    pull = results["baseline"].get("pull")
    how = "loop mount of" if "path_in_fs" in results["workload"]["pull"] else "same read from"
    return (f"baseline: {how} the image itself", pull["total_s"]) if pull else None


def _repo_baseline(results: dict):
    size = results["workload"].get("last_image_allocated_bytes")
    return ("baseline: one full copy of the last image (allocated)", size) if size else None


FIGURES = [
    Figure("first", "first backup (night 0), wall", "time", _backup("wall_s", _first),
           _cat("wall_s"), rate=True),
    Figure("nightly", "nightly backup (mean of nights 1..N), wall", "time",
           _backup("wall_s", _later), _cat("wall_s"), rate=True),
    Figure("first_cpu", "first backup, CPU user+sys", "cpu", _backup("cpu_s", _first),
           _cat("cpu_s")),
    Figure("nightly_cpu", "nightly backup (mean), CPU user+sys", "cpu", _backup("cpu_s", _later),
           _cat("cpu_s")),
    Figure("rss", "peak RSS of any backup", "bytes", _backup("peak_rss_bytes", _all, max),
           lambda results: None),
    Figure("repo", "repository size after the last night", "bytes", _backup("repo_bytes", _last),
           _repo_baseline),
    Figure("restore", "full restore of the last night (+ fsync), wall", "time", _restore,
           _cat("wall_s"), rate=True),
    Figure("pull", "pull night 0's file through the FUSE mount (mount + copy)", "time", _pull,
           _pull_baseline),
]


def values_of(figure: Figure, results: dict) -> dict[str, float]:
    found = {}
    for name, tool in results["tools"].items():
        try:
            value = figure.value(tool, results)
        except (KeyError, TypeError):
            value = None
        if value is not None:
            found[name] = value
    return found


def _format(figure: Figure, value: float, image_size: int) -> str:
    if figure.kind == "bytes":
        return f"{value / MiB:,.0f} MiB" if value >= 10 * MiB else f"{value / MiB:.1f} MiB"
    text = f"{value:.2f} s"
    if figure.rate and value > 0:
        text += f" ({image_size / value / MB:,.0f} MB/s)"
    return text


def _missing_reason(figure: Figure, tool: dict) -> str:
    reason = _full_reason(figure, tool)
    return reason if len(reason) <= 240 else reason[:237] + "..."


def _full_reason(figure: Figure, tool: dict) -> str:
    if figure.key == "pull":
        pull = tool.get("pull") or {}
        if "unsupported" in pull:
            return "n/a: " + pull["unsupported"]
        if "error" in pull:
            return "failed: " + pull["error"]
        if pull and not pull.get("verified"):
            return "WRONG BYTES: the pulled file's sha256 differs"
    if figure.key == "restore" and tool.get("restore") and not tool["restore"].get("bit_exact"):
        return "NOT BIT-EXACT: the restored image's sha256 differs"
    if "error" in tool:
        error = tool["error"]
        return error if error.startswith("not run") else \
            "failed at " + error.split(":")[0] + " (see Tools below)"
    return "not measured"


def figure_rows(figure: Figure, results: dict) -> list[dict]:
    """The baseline row, then one row per tool, with ratios and the winner/loser note."""
    image_size = results["workload"]["image_size"]
    values = values_of(figure, results)
    baseline = figure.baseline(results)
    peers = {name: v for name, v in values.items() if name in PEERS_ONLY}
    best_peer = min(peers.values()) if peers else None
    winner = min(values, key=values.get) if values else None
    rows = []
    if baseline:
        rows.append({"figure": figure.title, "tool": baseline[0],
                     "value": _format(figure, baseline[1], image_size), "vs_baseline": "1.00×",
                     "vs_best_peer": "", "note": ""})
    for name, tool in results["tools"].items():
        row = {"figure": "" if rows else figure.title, "tool": name}
        if name not in values:
            rows.append(dict(row, value="n/a", vs_baseline="", vs_best_peer="",
                             note=_missing_reason(figure, tool)))
            continue
        value = values[name]
        row["value"] = _format(figure, value, image_size)
        row["vs_baseline"] = f"{value / baseline[1]:.2f}×" if baseline and baseline[1] else ""
        row["vs_best_peer"] = f"{value / best_peer:.2f}×" if best_peer else ""
        row["note"] = _note(name, value, values, winner)
        rows.append(row)
    return rows


def _note(name: str, value: float, values: dict[str, float], winner: str) -> str:
    others = {n: v for n, v in values.items() if n != name}
    if name == winner:
        if not others:
            return "**winner**"
        runner_up = min(others, key=others.get)
        if value <= 0:
            return "**winner**"
        margin = others[runner_up] / value
        return f"**winner** (tied with {runner_up})" if margin < 1.005 else \
            f"**winner** ({margin:.2f}× better than {runner_up})"
    if name == "diskvault":
        return f"**diskvault loses**: {value / values[winner]:.2f}× {winner}'s"
    return ""


def nightly(results: dict, key: str) -> dict[str, dict[int, float]]:
    """{tool: {night: figure}} for a per-backup key such as wall_s or repo_bytes."""
    return {name: {int(n): b[key] for n, b in tool["backups"].items()}
            for name, tool in results["tools"].items()}


def goal_lines(results: dict) -> list[str]:
    """The targets of issues 6 and 2, each marked met or NOT MET for diskvault."""
    dv = results["tools"].get("diskvault")
    if not dv or not dv["backups"]:
        reason = dv.get("error", "not selected") if dv else "not selected"
        return [f"diskvault was not measured in this run ({reason}); no goal can be judged."]
    figures = {f.key: f for f in FIGURES}
    size = results["workload"]["image_size"]
    lines = []

    def compare(key: str, label: str, factor: float = 1.0, inclusive: bool = False):
        values = values_of(figures[key], results)
        peers = {n: v for n, v in values.items() if n in PEERS_ONLY}
        if "diskvault" not in values or not peers:
            lines.append(f"- {label}: cannot judge (no figure for diskvault or for any peer)")
            return
        best = min(peers, key=peers.get)
        mine = values["diskvault"] * factor
        met = mine <= peers[best] if inclusive else mine < peers[best]
        figure = figures[key]
        lines.append(f"- {label}: {'met' if met else '**NOT MET**'} (diskvault "
                     f"{_format(figure, values['diskvault'], size)}, best peer {best} "
                     f"{_format(figure, peers[best], size)})")

    def rate(key: str, label: str, target_mb_s: float):
        value = values_of(figures[key], results).get("diskvault")
        if value is None:
            lines.append(f"- {label}: cannot judge (no figure)")
            return
        mb_s = size / value / MB
        lines.append(f"- {label}: {'met' if mb_s >= target_mb_s else '**NOT MET**'} "
                     f"({mb_s:,.0f} MB/s, target {target_mb_s:,.0f} MB/s)")

    compare("nightly", "nightly backup at least 2× faster than the fastest peer", factor=2.0,
            inclusive=True)
    compare("repo", "repository after all nights no larger than the smallest peer's",
            inclusive=True)
    compare("restore", "restore faster than every peer")
    compare("pull", "pulling a file through the mount faster than every peer")
    rate("nightly", "nightly backup at least 1 GB/s of image", 1000)
    rate("first", "first backup at least 250 MB/s", 250)
    rate("restore", "restore at least 500 MB/s", 500)
    rss = values_of(figures["rss"], results).get("diskvault")
    if rss is not None:
        lines.append(f"- peak RSS under 300 MB: {'met' if rss < 300 * MB else '**NOT MET**'} "
                     f"({rss / MB:.0f} MB = {rss / MiB:.0f} MiB)")
    return lines
