"""Nightly backups over SSH: diskvault against borg, both through one private sshd, on the
same image, with their local runs and a plain read as yardsticks from the same run.

    .venv/bin/python -m benchmarks.ssh_nightly [--size 512M] [--workdir DIR]

Needs root (the private sshd of tests/sshd.py logs in a second user made for the run) and
borg (Debian's borgbackup; the far side runs the same one). One mixed image
(benchmarks/micro.py); night 1 is a first backup, then 1 % of its 64 KiB blocks are
rewritten and night 2 backs it up again: the nightly figure. Each tool also restores night 2
(diskvault restore, borg extract), and diskvault's restore over SSH is compared with the
image byte for byte (else the figures are void). Settings: diskvault's defaults without
encryption; borg `-e none --compression zstd,3` and its default chunker (2 MiB average), as
the side-by-side benchmarks run it (benchmarks/peers/borg.py). The sshd, both clients and
both servers share this machine's cores: the figures are what SSH costs in CPU and round
trips, not in network bandwidth.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.sshd import running_sshd

from .copy_bench import evolve
from .micro import make_image, parse_size

NIGHTS = (1, 2)
DEFAULT_SIZE = "512M"
RESULTS = Path(__file__).resolve().parent / "results"


def timed_run(argv: list[str], environment: dict, cwd: Path | None = None) -> float:
    started = time.perf_counter()
    result = subprocess.run(argv, env=environment, cwd=cwd, capture_output=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:3])} failed ({result.returncode}): "
                         f"{result.stderr.decode(errors='replace')[-600:]}")
    return elapsed


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


class Tool:
    """One tool at one place: how it inits, backs up a night and restores night 2."""

    def __init__(self, name: str, repo: str, environment: dict):
        self.name, self.repo, self.environment = name, repo, environment

    def init(self) -> None:
        if self.name.startswith("diskvault"):
            timed_run([sys.executable, "-m", "diskvault", "init", "-r", self.repo,
                       "--encryption", "none"], self.environment)
        else:
            timed_run(["borg", "init", "-e", "none", self.repo], self.environment)

    def backup(self, image: Path, night: int) -> float:
        if self.name.startswith("diskvault"):
            return timed_run([sys.executable, "-m", "diskvault", "backup", "-r", self.repo,
                              str(image), "--name", "vm", "--no-progress"], self.environment)
        return timed_run(["borg", "create", "--compression", "zstd,3",
                          f"{self.repo}::night-{night}", image.name], self.environment,
                         cwd=image.parent)

    def restore(self, image: Path, target: Path) -> float:
        if self.name.startswith("diskvault"):
            return timed_run([sys.executable, "-m", "diskvault", "restore", "-r", self.repo,
                              "latest", str(target)], self.environment)
        target.mkdir()
        return timed_run(["borg", "extract", "--sparse", f"{self.repo}::night-{NIGHTS[-1]}",
                          image.name], self.environment, cwd=target)


def plain_read_s(image: Path) -> float:
    started = time.perf_counter()
    with open(image, "rb") as handle:
        while handle.readinto(bytearray(8 << 20)):
            pass
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default=DEFAULT_SIZE, type=parse_size)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    if shutil.which("borg") is None:
        raise SystemExit("borg is not installed: apt-get install borgbackup")
    workdir = Path(tempfile.mkdtemp(prefix="ssh-nightly-", dir=args.workdir))
    try:
        with running_sshd() as server:
            lines = run(server, workdir, args.size)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print("\n".join(lines))
    folder = (RESULTS / "ssh-nightly" if args.size == parse_size(DEFAULT_SIZE)
              else RESULTS / "custom" / f"ssh-nightly-{args.size >> 20}M")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.md").write_text("```\n" + "\n".join(lines) + "\n```\n")


def run(server, workdir: Path, size: int) -> list[str]:
    key = server.add_key("benchmark")
    base = {**os.environ, "XDG_CACHE_HOME": str(workdir / "cache"),
            "BORG_BASE_DIR": str(workdir / "borg-base"),
            "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes",
            "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes"}
    remote = {**base, "DISKVAULT_RSH": server.rsh(key), "DISKVAULT_REMOTE_PATH": server.remote_path,
              "BORG_RSH": server.rsh(key), "BORG_REMOTE_PATH": "borg"}
    tools = [Tool("diskvault local", str(workdir / "dv-local"), base),
             Tool("diskvault ssh", server.url("dv"), remote),
             Tool("borg local", str(workdir / "borg-local"), base),
             Tool("borg ssh", server.url("borg"), remote)]
    image = workdir / "vm.img"
    make_image(image, size)
    for tool in tools:
        tool.init()
    times = {tool.name: {} for tool in tools}
    reads = {}
    for night in NIGHTS:
        if night > 1:
            evolve(image, night)
        reads[night] = plain_read_s(image)
        for tool in tools:
            times[tool.name][night] = tool.backup(image, night)
    for tool in tools:
        target = workdir / f"restored-{tool.name.replace(' ', '-')}"
        times[tool.name]["restore"] = tool.restore(image, target)
    restored = workdir / "restored-diskvault-ssh"
    if sha256(restored) != sha256(image):
        raise SystemExit("diskvault's restore over SSH differs from the image: figures void")
    return report(times, reads, size, server)


def report(times: dict, reads: dict, size: int, server) -> list[str]:
    mib = size / (1 << 20)
    borg_ssh = times["borg ssh"]
    lines = [f"image {mib:.0f} MiB (mixed), night 2 rewrites 1 % of its 64 KiB blocks; "
             f"plain read (cached) night 2: {reads[2]:.2f} s",
             f"{'tool':18} {'night 1 s':>9} {'night 2 s':>9} {'MiB/s n2':>9} "
             f"{'restore s':>9} {'n2 vs borg ssh':>15} {'restore vs borg ssh':>20}"]
    for name, figures in times.items():
        lines.append(f"{name:18} {figures[1]:9.2f} {figures[2]:9.2f} {mib / figures[2]:9.0f} "
                     f"{figures['restore']:9.2f} {borg_ssh[2] / figures[2]:14.2f}x "
                     f"{borg_ssh['restore'] / figures['restore']:19.2f}x")
    stored = {name: _stored_bytes(server.home / name) for name in ("dv", "borg")}
    lines.append(f"on the server: diskvault {stored['dv'] / (1 << 20):.1f} MiB, borg "
                 f"{stored['borg'] / (1 << 20):.1f} MiB; load average "
                 f"{os.getloadavg()[0]:.1f} (2 cores)")
    return lines


def _stored_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


if __name__ == "__main__":
    main()
