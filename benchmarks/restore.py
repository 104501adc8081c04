"""Entry point: python -m benchmarks.restore [--size 1G] [--workload fs-image|vm-image|all]
[--tools borg,restic,casync]

Restore of the last night (night 1), side by side in one run: the baselines (a cold read of
the image, a plain `cp` of it), diskvault's full restore, its delta restore onto the previous
night's image (bytes compared and written; a copy diskvault knows nothing of, and night 0 as
a diskvault restore left it, where only the manifests' differences are compared),
`diskvault cat > /dev/null`, borg and restic restores, casync extract plain and with `--seed`
of the previous image. Every write is
fsynced inside the timing; the page cache is dropped before every timed step. Cores used is
(user + sys) / wall of the tool's process. Results go to benchmarks/results/restore/.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from . import install, workload
from .measure import RunStats, Stopwatch, drop_caches, flush_file, run_measured, sha256_file
from .peers import make_peer
from .peers.base import Peer
from .run import log, parse_size

HERE = Path(__file__).resolve().parent
PEERS = ["borg", "restic", "casync"]


def timed(argv: list[str], target: Path | None = None, env: dict | None = None,
          stdout_to_null: bool = False) -> dict:
    """One cold, measured run; the written target fsynced within the time."""
    drop_caches()
    stats = run_measured(argv, env=env, stdout_to_null=stdout_to_null).check()
    return _row(stats, target)


def _row(stats: RunStats, target: Path | None) -> dict:
    flush_s = 0.0
    if target is not None:
        with Stopwatch() as flush:
            flush_file(target)
        flush_s = flush.elapsed_s
    wall_s = stats.wall_s + flush_s
    return {"wall_s": round(wall_s, 3), "cpu_s": round(stats.cpu_s, 3),
            "cores": round(stats.cpu_s / wall_s, 2) if wall_s else 0.0,
            "peak_rss_mib": stats.peak_rss_bytes >> 20, "stdout": stats.stdout}


def changed_bytes(previous: Path, last: Path, block: int = 4096) -> int:
    """Bytes in the 4 KiB blocks that differ between two nights: what a delta restore must
    write at least."""
    changed = 0
    with open(previous, "rb") as old, open(last, "rb") as new:
        while True:
            a, b = old.read(1 << 20), new.read(1 << 20)
            if not b:
                return changed
            changed += sum(block for i in range(0, len(b), block)
                           if a[i:i + block] != b[i:i + block])


def copy_of(source: Path, target: Path) -> None:
    """An untimed sparse copy, flushed: the previous night's image a delta restore starts from."""
    target.unlink(missing_ok=True)
    subprocess.run(["cp", "--sparse=always", str(source), str(target)], check=True)
    flush_file(target)


def run_workload(name: str, size: int, tools: list[str], work: Path) -> dict:
    prepared = workload.prepare(name, size, 1, 1, work, log)
    previous, last = prepared.state(0), prepared.state(1)
    expected = prepared.sha256(1)
    scratch = work / "restore-bench"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    target = scratch / "target.img"
    os.environ["XDG_STATE_HOME"] = str(scratch / "state")  # what diskvault remembers of targets
    rows: dict[str, dict] = {}
    started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load_at_start = os.getloadavg()[0]

    def checked(label: str, row: dict) -> None:
        row["bit_exact"] = target.exists() and sha256_file(target) == expected
        rows[label] = row
        log(f"  {label:34} {row['wall_s']:7.2f} s  cores {row['cores']:.2f}  "
            f"bit-exact {row['bit_exact']}")
        target.unlink(missing_ok=True)

    rows["changed 4 KiB blocks"] = {"wall_s": 0.0, "cores": 0.0,
                                    "written_bytes": changed_bytes(previous, last)}
    rows["read (cat image > /dev/null)"] = timed(["cat", str(last)], stdout_to_null=True)
    checked("cp --sparse=always", timed(["cp", "--sparse=always", str(last), str(target)], target))

    repo = scratch / "diskvault"
    subprocess.run(["diskvault", "init", "-r", str(repo), "--encryption", "none"], check=True,
                   capture_output=True)
    for night in (0, 1):
        subprocess.run(["diskvault", "backup", "-r", str(repo), str(prepared.state(night)),
                        "--name", "bench", "--no-progress"], check=True, capture_output=True)
    full = timed(["diskvault", "restore", "-r", str(repo), "bench", str(target), "--json",
                  "--no-progress"], target)
    full["written_bytes"] = json.loads(full["stdout"])["written_bytes"]
    checked("diskvault restore (full)", full)
    night_0 = json.loads(subprocess.run(["diskvault", "list", "-r", str(repo), "--json"],
                                        check=True, capture_output=True).stdout)[0]["id"]
    for label, options, known in (
            ("diskvault restore --force (delta)", [], False),
            ("diskvault restore --force --in-place", ["--in-place"], False),
            ("diskvault restore --force, night 0 restored there", [], True),
            ("diskvault restore --force --in-place, night 0 restored there", ["--in-place"],
             True)):
        if known:  # the target holds night 0 as diskvault left it: manifests compared
            target.unlink(missing_ok=True)
            subprocess.run(["diskvault", "restore", "-r", str(repo), night_0, str(target),
                            "--no-progress"], check=True, capture_output=True)
        else:  # a copy diskvault knows nothing of: every entry is hashed
            copy_of(previous, target)
        delta = timed(["diskvault", "restore", "-r", str(repo), "bench", str(target), "--force",
                       "--json", "--no-progress", *options], target)
        report = json.loads(delta["stdout"])
        delta.update({key: report[key] for key in ("compared_bytes", "written_bytes", "clone",
                                                   "cloned_bytes")})
        checked(label, delta)
    rows["diskvault cat > /dev/null"] = timed(["diskvault", "cat", "-r", str(repo), "bench"],
                                              stdout_to_null=True)
    shutil.rmtree(repo)

    peers = [make_peer(tool, scratch / tool) for tool in tools]
    skipped = install.ensure_peers(peers, log)
    for peer in peers:
        if peer.name in skipped:
            log(f"  {peer.name}: not run: {skipped[peer.name]}")
            continue
        peer.init()
        for night in (0, 1):
            peer.backup(prepared.state(night), night)
        drop_caches()
        checked(f"{peer.name} restore", _row(peer.restore(1, target), target))
        if peer.name == "casync":
            checked("casync extract --seed previous", _casync_seeded(peer, previous, target))
        shutil.rmtree(peer.folder, ignore_errors=True)
    shutil.rmtree(scratch, ignore_errors=True)
    for row in rows.values():
        row.pop("stdout", None)
    return {"workload": name, "image_size": size, "machine_cpus": os.cpu_count(),
            "started": started, "load_average": [load_at_start, os.getloadavg()[0]],
            "rows": rows}


def _casync_seeded(peer: Peer, previous: Path, target: Path) -> dict:
    seed = target.parent / "seed.img"
    copy_of(previous, seed)
    row = timed(["casync", "extract", f"--store={peer.repo / 'default.castr'}",
                 f"--seed={seed}", str(peer.repo / "indexes" / "night-01.caibx"), str(target)],
                target)
    seed.unlink()
    return row


def table(result: dict) -> str:
    rows = result["rows"]
    read_s = rows["read (cat image > /dev/null)"]["wall_s"] or 1.0
    lines = [f"### {result['workload']}, {result['image_size'] >> 20} MiB, "
             f"{result['machine_cpus']} cores"
             + (f", {result['started']}, load average {result['load_average'][0]:.2f} at the "
                f"start and {result['load_average'][1]:.2f} at the end (1-minute)"
                if "started" in result else ""),
             "", "| step | seconds | x cold read | cores | bytes compared | bytes written (copied) "
                 "| bit-exact |",
             "|---|---:|---:|---:|---:|---:|:---:|"]
    for label, row in rows.items():
        written = row.get("written_bytes")
        written = "" if written is None else f"{written >> 10} KiB"
        if row.get("cloned_bytes"):
            written += f" ({row['cloned_bytes'] >> 10} KiB)"
        compared = row.get("compared_bytes")
        compared = "" if compared is None else f"{compared >> 10} KiB"
        lines.append(f"| {label} | {row['wall_s']:.2f} | {row['wall_s'] / read_s:.2f} | "
                     f"{row['cores']:.2f} | {compared} | {written} | "
                     f"{row.get('bit_exact', '')} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.restore")
    parser.add_argument("--size", type=parse_size, default=1 << 30)
    parser.add_argument("--workload", choices=list(workload.BUILDERS) + ["all"], default="all")
    parser.add_argument("--tools", default=",".join(PEERS))
    parser.add_argument("--work", type=Path, default=HERE / "work")
    parser.add_argument("--results", type=Path, default=HERE / "results" / "restore")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("the benchmark needs root: it drops the page cache", file=sys.stderr)
        return 2
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    names = list(workload.BUILDERS) if args.workload == "all" else [args.workload]
    tools = [t for t in args.tools.split(",") if t]
    args.results.mkdir(parents=True, exist_ok=True)
    for name in names:
        log(f"== {name}, {args.size >> 20} MiB")
        result = run_workload(name, args.size, tools, args.work)
        stem = args.results / f"{name}-{args.size >> 20}M"
        stem.with_suffix(".json").write_text(json.dumps(result, indent=1))
        stem.with_suffix(".md").write_text(table(result) + "\n")
        print(table(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
