"""Real FUSE mounts for the mount tests: made with the real `diskvault mount`, always
unmounted on teardown, and waited for until the mount's process has let go of the
repository (its reader lock), so no test leaves a mount or a daemon behind."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from diskvault.errors import FuseUnavailable
from diskvault.fuse.mounttable import find_mount
from diskvault.fuse.preflight import load_fuse_binding
from diskvault.store.backends.local import LocalBackend
from diskvault.store.coordination.readers import readers_excluded

from ..conftest import run_cli

DEADLINE_S = 20.0
POLL_S = 0.05


def require_fuse() -> None:
    """Skip, naming what is missing, where FUSE mounts cannot be made."""
    if not Path("/dev/fuse").exists():
        pytest.skip("no /dev/fuse on this machine (modprobe fuse, or --device /dev/fuse)")
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        pytest.skip("/dev/fuse is not readable and writable by this user (mode "
                    f"{Path('/dev/fuse').stat().st_mode & 0o777:o}; Debian makes it 0666)")
    if not (shutil.which("fusermount") or shutil.which("fusermount3")):
        pytest.skip("fusermount is not installed (apt-get install fuse3)")
    try:
        load_fuse_binding()  # mfusepy with libfuse 3, as the mount loads it
    except FuseUnavailable as missing:
        pytest.skip(str(missing))


def wait_for(condition, what: str, deadline_s: float = DEADLINE_S):
    """Poll ``condition`` until it returns something true; fail naming ``what`` otherwise."""
    deadline = time.monotonic() + deadline_s
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {deadline_s:.0f} s waiting for {what}")
        time.sleep(POLL_S)


def reader_lock_free(repo_root: Path) -> bool:
    with readers_excluded(LocalBackend(repo_root)) as free:
        return free


def unmount(mountpoint: Path) -> None:
    """Unmount, retrying while busy, lazily as a last resort: never leave a mount behind."""
    if find_mount(os.path.realpath(mountpoint)) is None:
        return
    try:
        wait_for(lambda: run_cli("umount", str(mountpoint)).returncode == 0,
                 f"umount of {mountpoint}")
    finally:
        if find_mount(os.path.realpath(mountpoint)) is not None:
            subprocess.run(["fusermount", "-uz", str(mountpoint)], capture_output=True)


def unmount_for_good(mountpoint: Path, repo_root: Path) -> None:
    """Unmount and wait until the mount's process has let go of the repository."""
    unmount(mountpoint)
    wait_for(lambda: reader_lock_free(repo_root), "the mount process to release the repository")


@pytest.fixture
def mounted(tmp_path: Path):
    """mounted(repository, snapshot=None, *options, under=tmp_path) -> mountpoint: `diskvault
    mount` in the background onto a new folder in ``under``, logging to ``<mountpoint>.log``;
    unmounted on teardown whatever happened."""
    require_fuse()
    made: list[tuple[Path, Path]] = []

    def mount(repository, snapshot: str | None = None, *options: str,
              under: Path = tmp_path) -> Path:
        mountpoint = under / f"mnt{len(made)}"
        mountpoint.mkdir()
        made.append((mountpoint, repository.root))
        run_cli("mount", "-r", str(repository.root), str(mountpoint),
                *([snapshot] if snapshot else []), "--log-file", f"{mountpoint}.log", *options,
                check=True)
        return mountpoint

    yield mount
    failures = []
    for mountpoint, _ in reversed(made):
        try:
            unmount(mountpoint)
        except AssertionError as failure:  # still unmount the others, then report it
            failures.append(failure)
    for repo_root in {repo_root for _, repo_root in made}:
        wait_for(lambda: reader_lock_free(repo_root), "the mount processes to release the "
                 "repository")
    if failures:
        raise failures[0]
