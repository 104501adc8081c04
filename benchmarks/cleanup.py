"""Deleting repositories without stalling the run.

This machine's root filesystem is mounted with `discard`: every unlink waits for the disk to
discard the file's blocks, so deleting casync's store (one file per chunk, tens of thousands)
takes many minutes. Repositories are therefore renamed into <work>/trash (instant) when a
workload is done, and deleted by a detached `rm -rf` when the run ends. A run waits for an
earlier run's deletion to finish before it measures anything, so deletions never overlap a
measurement.
"""
from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Callable


def _trash(work: Path) -> Path:
    return work / "trash"


def set_aside(folder: Path, work: Path) -> None:
    """Move folder into the trash (a rename on the same filesystem)."""
    if folder.exists():
        trash = _trash(work)
        trash.mkdir(parents=True, exist_ok=True)
        folder.rename(trash / f"{folder.name}-{time.time_ns()}")


def delete_in_background(work: Path, log: Callable[[str], None]) -> None:
    trash = _trash(work)
    if trash.exists() and any(trash.iterdir()):
        log(f"deleting the repositories in the background ({trash})")
        subprocess.Popen(["rm", "-rf", str(trash)], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)


def finish_earlier_deletions(work: Path, log: Callable[[str], None]) -> None:
    """Wait until the trash is gone (deleting it ourselves if no one else is)."""
    trash = _trash(work)
    if not trash.exists():
        return
    log("removing the repositories of an earlier run first (deletes are slow on this disk)")
    subprocess.run(["rm", "-rf", str(trash)], stdin=subprocess.DEVNULL)
