"""The interface every tool's driver implements, and what they share."""
from __future__ import annotations

import os
import shutil
import subprocess
from abc import ABC, abstractmethod
from pathlib import Path

from ..measure import RunStats, allocated_size, run_measured


class MountUnsupported(RuntimeError):
    """The tool has no way to show this kind of backup as a mounted file here; says why."""


class Peer(ABC):
    """One backup tool with its own repository folder.

    The harness calls: init(); backup(image, night) for each night in order; repo_size() after each;
    restore(night, target) of the last night; mount(mountpoint, 0) ... umount(mountpoint).
    backup and restore return the measured RunStats of the tool's process.
    """

    name: str = ""
    executable: str = ""
    apt_package: str = ""
    settings: str = ""

    def __init__(self, folder: Path):
        self.folder = folder
        self.repo = folder / "repo"
        self.image_name = ""  # the backed-up file's name, set by backup(); restores and mounts use it

    # -- what each driver says ------------------------------------------------------------
    @abstractmethod
    def init(self) -> None: ...

    @abstractmethod
    def backup(self, image: Path, night: int) -> RunStats: ...

    @abstractmethod
    def restore(self, night: int, target: Path) -> RunStats:
        """Write night's image to target (a path that does not exist yet)."""

    @abstractmethod
    def mount(self, mountpoint: Path, night: int) -> Path:
        """Mount night's snapshot at mountpoint; return once the image file in it can be read."""

    @abstractmethod
    def umount(self, mountpoint: Path) -> None: ...

    def version(self) -> str:
        result = subprocess.run([self.executable, "--version"], capture_output=True, text=True)
        return (result.stdout or result.stderr).strip().splitlines()[0]

    # -- shared ---------------------------------------------------------------------------
    def installed(self) -> bool:
        return shutil.which(self.executable) is not None

    def repo_size(self) -> int:
        return allocated_size(self.repo)

    def env(self) -> dict:
        return dict(os.environ)

    def run(self, argv: list[str], cwd: Path | None = None) -> RunStats:
        return run_measured(argv, cwd=cwd, env=self.env()).check()

    def fresh(self) -> None:
        """Start from an empty folder, so a run never measures a repository left from before."""
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)


def move_restored(found: Path, target: Path) -> None:
    """Tools that restore into a folder: move the restored file to the target path (a rename)."""
    if not found.is_file():
        raise FileNotFoundError(f"restore did not produce {found}")
    os.replace(found, target)
