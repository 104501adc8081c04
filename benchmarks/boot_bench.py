"""Boot benchmark: a real Debian guest booted from the backup, against a full restore first and
against its own local file.

    python -m benchmarks.boot_bench [--repeat 3] [--warm] [--workdir DIR]

The image (benchmarks/boot_image.py: debootstrap, Debian's cloud kernel, ext4, 2 GiB with
about 450 MiB used) is built once and cached; this backs it up into a fresh repository, then
runs ``--repeat`` rounds of three ways to a running guest, one after the other so that the
machine's load weighs on all alike, each from the command and with the page cache of the
repository's packs and of the image dropped first (``--warm``: kept):

- **serve**: `diskvault serve`, a qcow2 overlay on its export (`qemu-img create -b URI`), QEMU
  booted from the overlay (instant recovery);
- **restore**: `diskvault restore` to a file, then QEMU booted from it;
- **local**: QEMU booted from the original image file (no backup involved).

QEMU runs under TCG with the image's own kernel and initrd (-kernel/-initrd) and the disk as
virtio; times are taken from the command's start to the guest's first disk read (QEMU's trace
event ``virtio_blk_handle_read``: the firmware's probe of the disk), to the kernel finding the
disk (its ``[vda]`` line; it reads the partition table then), to the marker its init prints,
and to the end of its work (a few package and file reads). Writes
benchmarks/results/boot/boot.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .boot_image import DONE, INIT_PATH, MARKER, BootImage, build
from .mount_bench import drop_cache
from .serve_bench import spread, spread_table

RESULTS = Path(__file__).parent / "results" / "boot"
APPEND = f"root=/dev/vda rw console=ttyS0 init=/{INIT_PATH} panic=-1"
POLL_S = 0.01
BOOT_TIMEOUT_S = 600.0
EVENTS = ("first disk read", "kernel's disk", "init", "done")


def diskvault(*args: str) -> list[str]:
    return [sys.executable, "-m", "diskvault", *args]


def boot(image: BootImage, drive: str, folder: Path, started: float) -> dict[str, float]:
    """Run the guest to the end of its init's work: seconds from ``started`` to each event."""
    serial, trace = folder / "serial.log", folder / "trace.log"
    for path in (serial, trace):
        path.unlink(missing_ok=True)
    command = ["qemu-system-x86_64", "-machine", "pc,accel=tcg", "-m", "512", "-nodefaults",
               "-nographic", "-no-reboot", "-kernel", str(image.kernel), "-initrd",
               str(image.initrd), "-append", APPEND, "-drive", drive,
               "-serial", f"file:{serial}", "-trace", "enable=virtio_blk_handle_read",
               "-D", str(trace)]
    times: dict[str, float] = {}
    deadline = time.monotonic() + BOOT_TIMEOUT_S
    with subprocess.Popen(command, stdin=subprocess.DEVNULL) as qemu:
        try:
            while "done" not in times:
                if qemu.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the guest did not finish its init; see {serial}")
                now = time.monotonic() - started
                if "first disk read" not in times and trace.exists() and trace.stat().st_size:
                    times["first disk read"] = now
                console = serial.read_bytes() if serial.exists() else b""
                if "kernel's disk" not in times and b"[vda]" in console:
                    times["kernel's disk"] = now
                if "init" not in times and MARKER.encode() in console:
                    times["init"] = now
                if DONE.encode() in console:
                    times["done"] = now
                time.sleep(POLL_S)
        finally:
            qemu.kill()
    return times


def scenarios(image: BootImage, repo: Path, folder: Path) -> dict:
    def local(started: float) -> dict:
        return boot(image, f"file={image.image},format=raw,if=virtio,snapshot=on", folder,
                    started)

    def serve(started: float) -> dict:
        overlay = folder / "overlay.qcow2"
        overlay.unlink(missing_ok=True)
        with subprocess.Popen(diskvault("serve", "--json", "-r", str(repo), "debian"),
                              stdout=subprocess.PIPE) as served:
            try:
                uri = json.loads(served.stdout.readline())["uri"]
                ready = time.monotonic() - started
                subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", uri, "-F", "raw",
                                str(overlay)], check=True)
                times = boot(image, f"file={overlay},format=qcow2,if=virtio", folder, started)
            finally:
                served.terminate()
        return {"serve ready": ready, **times}

    def restore(started: float) -> dict:
        target = folder / "restored.img"
        target.unlink(missing_ok=True)
        subprocess.run(diskvault("restore", "-r", str(repo), "debian", str(target)), check=True,
                       capture_output=True)
        restored = time.monotonic() - started
        try:
            times = boot(image, f"file={target},format=raw,if=virtio,snapshot=on", folder,
                         started)
        finally:
            target.unlink()
        return {"restored": restored, **times}

    return {"serve": serve, "restore": restore, "local": local}


def run_rounds(image: BootImage, repo: Path, folder: Path, repeat: int, warm: bool) -> list:
    cached = [path for path in (repo / "packs").rglob("*") if path.is_file()] + [image.image]
    rounds = []
    for number in range(repeat):
        for name, scenario in scenarios(image, repo, folder).items():
            if not warm:
                drop_cache(cached)
            load = os.getloadavg()[0]
            times = scenario(time.monotonic())
            rounds.append({"round": number, "way": name, "times_s": times, "load_1min": load})
            print(f"round {number} {name}: " + ", ".join(f"{event} {seconds:.2f} s"
                  for event, seconds in times.items()) + f"; load {load:.1f}", flush=True)
    return rounds


def summary(rounds: list[dict]) -> dict:
    """Median and spread of each way's times, and of serve's and restore's times over local's
    within a round (1 means as fast as booting the local file)."""
    result = {}
    by_round = {}
    for entry in rounds:
        by_round.setdefault(entry["round"], {})[entry["way"]] = entry["times_s"]
    for way in ("serve", "restore", "local"):
        for event in [*EVENTS, "serve ready", "restored"]:
            values = [ways[way][event] for ways in by_round.values() if event in ways[way]]
            if values:
                result[f"{way}: {event} (s)"] = spread(values)
        if way != "local":
            for event in EVENTS:
                result[f"{way} / local: {event}"] = spread(
                    [ways[way][event] / ways["local"][event] for ways in by_round.values()])
    return result


def write_report(rounds: list[dict], figures: dict, warm: bool) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / ("boot-warm" if warm else "boot")
    stem.with_suffix(".json").write_text(json.dumps({"warm": warm, "rounds": rounds,
                                                     "summary": figures}, indent=1) + "\n")
    loads = [entry["load_1min"] for entry in rounds]
    lines = [f"# Boot from the backup, {len({r['round'] for r in rounds})} rounds, "
             f"{'warm' if warm else 'cold'} page cache", "",
             f"Load average (1 min) at the start of each boot: {min(loads):.1f} to "
             f"{max(loads):.1f}. Times from the command's start; ratios over booting the "
             f"local file in the same round.", "", *spread_table(figures)]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return stem.with_suffix(".md")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--warm", action="store_true", help="keep the page cache")
    parser.add_argument("--workdir", type=Path, default=None)
    options = parser.parse_args()
    image = build()
    folder = options.workdir or Path(tempfile.mkdtemp(prefix="boot-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    repo = folder / "repo"
    if not repo.exists():
        subprocess.run(diskvault("init", "-r", str(repo), "--encryption", "none"), check=True,
                       capture_output=True)
        subprocess.run(diskvault("backup", "-r", str(repo), str(image.image), "--name", "debian",
                                 "--no-progress"), check=True, capture_output=True)
    rounds = run_rounds(image, repo, folder, options.repeat, options.warm)
    report = write_report(rounds, summary(rounds), options.warm)
    print(report.read_text())


if __name__ == "__main__":
    main()
