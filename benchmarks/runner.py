"""One workload, every tool, every night in order: collects the figures as plain data.

Per night: the baseline (`cat image > /dev/null`), then each tool's backup and its repository
size. Then each tool's full restore of the last night (checked by sha256) and the pull of night 0's
file through its FUSE mount. The page cache is dropped before every timed step when the kernel
lets us; otherwise the report says caches were warm.
"""
from __future__ import annotations

import os
import platform
import shutil
import time
from pathlib import Path
from typing import Callable

from .measure import Stopwatch, allocated_size, drop_caches, flush_file, run_measured, sha256_file
from .mounts import release_stale
from .peers import Peer
from .pulls import pull_file, pull_through_mount
from .workload import Workload


class Session:
    def __init__(self, workload: Workload, peers: list[Peer], work: Path,
                 log: Callable[[str], None]):
        self.workload = workload
        self.peers = peers
        self.work = work
        self.log = log
        self.cold = drop_caches()
        self.results: dict = {
            "workload": {"name": workload.name, "image_size": workload.image_size,
                         "nights": workload.nights, "description": workload.description,
                         "last_image_allocated_bytes": allocated_size(
                             workload.state(workload.nights)),
                         "pull": workload.pull,
                         "changes": {n: r["changes"] for n, r in workload.meta["nights"].items()
                                     if int(n) <= workload.nights}},
            "machine": _machine(),
            "cache": "cold: page cache dropped before every timed step" if self.cold else
                     "warm: could not drop the page cache (not root?); all tools equally warm",
            "baseline": {"cat": {}, "pull": {}},
            "tools": {p.name: {"settings": p.settings, "backups": {}} for p in peers},
        }

    def _before_timed_step(self) -> None:
        if self.cold:
            drop_caches()

    def _fail(self, peer: Peer, step: str, error: Exception) -> None:
        self.log(f"    {peer.name}: {step} FAILED: {error}")
        self.results["tools"][peer.name]["error"] = f"{step}: {error}"

    def _active(self) -> list[Peer]:
        return [p for p in self.peers if "error" not in self.results["tools"][p.name]]

    def run(self, skipped: dict[str, str]) -> dict:
        started = time.perf_counter()
        for peer in self.peers:
            record = self.results["tools"][peer.name]
            if peer.name in skipped:
                record["error"] = f"not run: {skipped[peer.name]}"
                continue
            record["version"] = peer.version()
            try:
                peer.init()
            except Exception as error:  # noqa: BLE001 - one tool's failure must not stop the others
                self._fail(peer, "init", error)
        for night in range(self.workload.nights + 1):
            self._night(night)
        self._restores(self.workload.nights)
        self._pulls()
        self.results["run_s"] = time.perf_counter() - started
        self.results["machine"]["load_average_end"] = round(os.getloadavg()[0], 2)
        return self.results

    def _night(self, night: int) -> None:
        with self.workload.live(night) as image:
            _prime(image)
            self._before_timed_step()
            cat = run_measured(["cat", str(image)], stdout_to_null=True).check()
            self.results["baseline"]["cat"][night] = cat.as_dict()
            self.log(f"  night {night}: cat {cat.wall_s:.2f} s")
            for peer in self._active():
                self._before_timed_step()
                try:
                    stats = peer.backup(image, night)
                    repo_bytes = peer.repo_size()
                except Exception as error:  # noqa: BLE001
                    self._fail(peer, f"backup of night {night}", error)
                    continue
                self.results["tools"][peer.name]["backups"][night] = dict(
                    stats.as_dict(), repo_bytes=repo_bytes)
                self.log(f"    {peer.name:10} {stats.wall_s:7.2f} s  cpu {stats.cpu_s:7.2f} s  "
                         f"rss {stats.peak_rss_bytes >> 20:5} MiB  repo {repo_bytes >> 20:6} MiB")

    def _restores(self, night: int) -> None:
        expected = self.workload.sha256(night)
        folder = self.work / "restore"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for peer in self._active():
            target = folder / f"{peer.name}.img"
            self._before_timed_step()
            try:
                stats = peer.restore(night, target)
                with Stopwatch() as flush:
                    flush_file(target)
                digest = sha256_file(target)
            except Exception as error:  # noqa: BLE001
                self._fail(peer, f"restore of night {night}", error)
                continue
            finally:
                allocated = allocated_size(target) if target.exists() else 0
                target.unlink(missing_ok=True)
            self.results["tools"][peer.name]["restore"] = dict(
                stats.as_dict(), night=night, flush_s=flush.elapsed_s,
                total_s=stats.wall_s + flush.elapsed_s, bit_exact=digest == expected,
                allocated_bytes=allocated)
            self.log(f"  restore {peer.name:10} {stats.wall_s + flush.elapsed_s:7.2f} s "
                     f"(fsync {flush.elapsed_s:.2f} s)  bit-exact: {digest == expected}")
        shutil.rmtree(folder, ignore_errors=True)

    def _pulls(self) -> None:
        scratch = self.work / "pull"
        release_stale(scratch / "fs")
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
        pull = self.workload.pull
        _prime(self.workload.state(0))
        self._before_timed_step()
        with Stopwatch() as direct:
            ok = pull_file(self.workload.state(0), pull, scratch)
        self.results["baseline"]["pull"] = {"total_s": direct.elapsed_s, "verified": ok}
        self.log(f"  pull baseline (from the image itself) {direct.elapsed_s:.2f} s")
        for peer in self._active():
            self._before_timed_step()
            figure = pull_through_mount(peer, pull, scratch)
            self.results["tools"][peer.name]["pull"] = figure
            if "total_s" in figure:
                self.log(f"  pull {peer.name:10} mount {figure['mount_s']:.2f} s + pull "
                         f"{figure['pull_s']:.2f} s  verified: {figure['verified']}")
            else:
                self.log(f"  pull {peer.name:10} " + figure.get("error", "n/a: " +
                                                                 figure.get("unsupported", "")))
        shutil.rmtree(scratch, ignore_errors=True)


def _prime(image: Path) -> None:
    """Read image once, untimed. This machine is a VM whose disk the host caches: dropping the
    guest's page cache leaves the host's, so without this the first timed reader of each image
    (the baseline) would alone pay the host's cold reads. Timed steps are guest-cold, host-warm."""
    run_measured(["cat", str(image)], stdout_to_null=True).check()


def _machine() -> dict:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {"cpus": os.cpu_count(), "memory_gib": round(memory / (1 << 30), 1),
            "kernel": platform.release(), "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "load_average_start": round(os.getloadavg()[0], 2)}
