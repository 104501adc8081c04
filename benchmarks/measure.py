"""Measuring primitives: a child's wall time, CPU time and peak RSS; cache drops; sizes; digests.

Every figure in the report comes from here, so that all tools are measured the same way.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class RunStats:
    """One finished child process: what it cost and what it said."""

    argv: list[str]
    wall_s: float
    user_s: float
    sys_s: float
    peak_rss_bytes: int
    returncode: int
    stdout: str = ""
    stderr: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s

    def check(self) -> "RunStats":
        if self.returncode != 0:
            tail = (self.stderr or self.stdout).strip().splitlines()[-5:]
            raise ToolFailed(f"{' '.join(self.argv)} exited {self.returncode}: " + " | ".join(tail))
        return self

    def as_dict(self) -> dict:
        return {"wall_s": self.wall_s, "user_s": self.user_s, "sys_s": self.sys_s,
                "cpu_s": self.cpu_s, "peak_rss_bytes": self.peak_rss_bytes, **self.extra}


class ToolFailed(RuntimeError):
    """A measured command did not succeed; the message names the command and its last words."""


GNU_TIME = "/usr/bin/time"  # Debian package "time"


def run_measured(argv: list[str], *, cwd: Path | None = None, env: dict | None = None,
                 stdout_to_null: bool = False, sample_anon_rss: bool = False) -> RunStats:
    """Run argv to completion; measure wall time here, CPU time and peak RSS through GNU time.

    Why GNU time in between: a child's ru_maxrss starts at the RSS of the process that forked
    it (Linux carries the forking process's high-water mark across exec), so a child forked
    from this harness would report at least the harness's own RSS. GNU time is a few MiB and
    reports its child's own rusage. Output goes to temporary files rather than pipes, so
    waiting cannot deadlock on a full pipe. With ``sample_anon_rss`` the child's anonymous
    RSS (its heap, without the file pages it maps, such as LMDB's) is sampled every 20 ms:
    its peak is ``extra["peak_anon_rss_bytes"]``.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile("r") as usage_file:
        command = [GNU_TIME, "-o", usage_file.name, "-f", "%U %S %M", "--", *argv]
        start = time.perf_counter()
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL if stdout_to_null else out, stderr=err)
        extra = {"peak_anon_rss_bytes": _peak_anon_rss(proc)} if sample_anon_rss else {}
        proc.wait()
        wall_s = time.perf_counter() - start
        user_s, sys_s, max_rss_kib = _parse_usage(usage_file.read())
        out.seek(0)
        err.seek(0)
        return RunStats(argv=list(argv), wall_s=wall_s, user_s=user_s, sys_s=sys_s,
                        peak_rss_bytes=max_rss_kib * 1024, returncode=proc.returncode,
                        stdout=out.read().decode(errors="replace"),
                        stderr=err.read().decode(errors="replace"), extra=extra)


def _peak_anon_rss(time_process: subprocess.Popen, interval_s: float = 0.02) -> int:
    """The highest RssAnon seen of the one child of GNU time, sampled until it exits."""
    peak, status = 0, None
    while time_process.poll() is None:
        status = status or _child_status_path(time_process.pid)
        try:
            peak = max(peak, _status_kib(status, "RssAnon:") * 1024 if status else 0)
        except (OSError, ValueError):
            pass  # the child has just exited
        try:
            time_process.wait(interval_s)
        except subprocess.TimeoutExpired:
            pass
    return peak


def _child_status_path(parent_pid: int) -> Path | None:
    """/proc/<pid>/status of parent_pid's child (this kernel has no /proc/.../children)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # The command name may hold spaces: the fields after its ")" are fixed.
            if int(stat.rsplit(")", 1)[1].split()[1]) == parent_pid:
                return entry / "status"
    return None


def _status_kib(status: Path, field_name: str) -> int:
    for line in status.read_text().splitlines():
        if line.startswith(field_name):
            return int(line.split()[1])
    raise ValueError(f"{field_name} not in {status}")


def _parse_usage(report: str) -> tuple[float, float, int]:
    """GNU time's last line is our format; a line before it may say how the command ended."""
    lines = report.strip().splitlines()
    if not lines:
        return 0.0, 0.0, 0
    user, system, rss = lines[-1].split()
    return float(user), float(system), int(rss)


def drop_caches() -> bool:
    """Write back dirty pages and drop the page cache; False where the kernel refuses (not root)."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as knob:
            knob.write("3\n")
        return True
    except OSError:
        return False


def flush_file(path: Path) -> None:
    """fsync one file, so that a timed write includes getting its bytes to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def allocated_size(path: Path) -> int:
    """Bytes allocated on disk under path (like `du -s --block-size=1`), hard links counted once."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            st = os.lstat(os.path.join(root, name))
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
    return total


def sha256_file(path: Path, offset: int = 0, length: int | None = None) -> str:
    """sha256 of a file, or of length bytes of it from offset."""
    digest = hashlib.sha256()
    remaining = length
    with open(path, "rb") as source:
        source.seek(offset)
        while remaining is None or remaining > 0:
            want = 4 << 20 if remaining is None else min(4 << 20, remaining)
            block = source.read(want)
            if not block:
                break
            digest.update(block)
            if remaining is not None:
                remaining -= len(block)
    return digest.hexdigest()


class Stopwatch:
    """`with Stopwatch() as sw: ...; sw.elapsed_s` for steps that are not a single child."""

    def __enter__(self) -> "Stopwatch":
        self._start = time.perf_counter()
        self.elapsed_s = 0.0
        return self

    def __exit__(self, *exc) -> None:
        self.elapsed_s = time.perf_counter() - self._start
