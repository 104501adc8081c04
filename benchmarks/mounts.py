"""Mount plumbing shared by the workload builder and the measurements: loop mounts and FUSE waits."""
from __future__ import annotations

import os
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def _run(argv: list[str]) -> None:
    subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, capture_output=True)


@contextmanager
def loop_mounted(image: Path, mountpoint: Path, offset: int, size: int | None = None,
                 *, writable: bool = False) -> Iterator[Path]:
    """Mount the ext4 filesystem at byte offset of image; unmount (and free the loop) on exit.

    Read-only mounts use `noload`, so the kernel never replays a journal: the image is not touched.
    """
    mountpoint.mkdir(parents=True, exist_ok=True)
    options = [f"offset={offset}"] + ([f"sizelimit={size}"] if size else [])
    options += ["rw", "noinit_itable"] if writable else ["ro", "noload"]
    _run(["mount", "-t", "ext4", "-o", "loop," + ",".join(options), str(image), str(mountpoint)])
    try:
        yield mountpoint
    finally:
        unmount(mountpoint, lazy_fallback=False)


def unmount(mountpoint: Path, *, fuse: bool = False, lazy_fallback: bool = True) -> None:
    """Unmount, retrying while the mount is busy for a few seconds."""
    argv = ["fusermount", "-u", str(mountpoint)] if fuse else ["umount", str(mountpoint)]
    deadline = time.monotonic() + 20
    while True:
        result = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if result.returncode == 0 or not os.path.ismount(mountpoint):
            return
        if time.monotonic() > deadline:
            if lazy_fallback:
                subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True)
                return
            raise RuntimeError(f"cannot unmount {mountpoint}: {result.stderr.strip()}")
        time.sleep(0.2)


def wait_for_path(path: Path, timeout_s: float, *, alive=lambda: True) -> None:
    """Poll until path exists (a FUSE mount answering), or fail with a clear message."""
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if not alive():
            raise RuntimeError(f"mount process ended before {path} appeared")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path} did not appear within {timeout_s:.0f} s")
        time.sleep(0.02)


def release_stale(mountpoint: Path) -> None:
    """Unmount whatever an interrupted earlier run left mounted at mountpoint."""
    if mountpoint.exists() and os.path.ismount(mountpoint):
        unmount(mountpoint)
