"""restic: repository format 2 with its default compression (auto), RESTIC_PASSWORD set."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

from ..measure import RunStats
from ..mounts import unmount, wait_for_path
from .base import Peer, move_restored


class Restic(Peer):
    name = "restic"
    executable = "restic"
    apt_package = "restic"
    settings = "repository v2, `--compression auto` (its default), RESTIC_PASSWORD set"

    def __init__(self, folder: Path):
        super().__init__(folder)
        self.snapshot_ids: dict[int, str] = {}
        self._mount_process: subprocess.Popen | None = None

    def env(self) -> dict:
        return dict(super().env(), RESTIC_PASSWORD="diskvault-bench",
                    RESTIC_REPOSITORY=str(self.repo), RESTIC_CACHE_DIR=str(self.folder / "cache"))

    def version(self) -> str:
        result = subprocess.run(["restic", "version"], capture_output=True, text=True)
        return result.stdout.strip()

    def init(self) -> None:
        self.fresh()
        self.run(["restic", "init", "--repository-version", "2"])

    def backup(self, image: Path, night: int) -> RunStats:
        self.image_name = image.name
        stats = self.run(["restic", "backup", "--compression", "auto", "--host", "bench", "--json",
                          image.name], cwd=image.parent)
        summary = [json.loads(line) for line in stats.stdout.splitlines()
                   if '"summary"' in line][-1]
        self.snapshot_ids[night] = summary["snapshot_id"]
        return stats

    def restore(self, night: int, target: Path) -> RunStats:
        scratch = target.parent / f".{self.name}-restore"
        stats = self.run(["restic", "restore", self.snapshot_ids[night], "--target", str(scratch)])
        move_restored(scratch / self.image_name, target)
        scratch.rmdir()
        return stats

    def mount(self, mountpoint: Path, night: int) -> Path:
        mountpoint.mkdir(parents=True, exist_ok=True)
        self._mount_process = subprocess.Popen(
            ["restic", "mount", str(mountpoint)], env=self.env(), stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        image = mountpoint / "ids" / self.snapshot_ids[night] / self.image_name
        wait_for_path(image, 60, alive=lambda: self._mount_process.poll() is None)
        return image

    def umount(self, mountpoint: Path) -> None:
        unmount(mountpoint, fuse=True)
        if self._mount_process is not None:
            self._mount_process.wait(timeout=30)
            self._mount_process = None
