"""BorgBackup: unencrypted repository, zstd level 3; its default chunker or a 64 KiB-average one."""
from __future__ import annotations

from pathlib import Path

from ..measure import RunStats
from ..mounts import unmount, wait_for_path
from .base import Peer, move_restored


class Borg(Peer):
    name = "borg"
    executable = "borg"
    apt_package = "borgbackup"
    chunker_params: str | None = None  # borg's default: buzhash,19,23,21,4095 (2 MiB average)
    settings = "`-e none`, `--compression zstd,3`, default chunker (buzhash,19,23,21,4095: 2 MiB avg)"

    def env(self) -> dict:
        return dict(super().env(), BORG_BASE_DIR=str(self.folder / "base"),
                    BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes",
                    BORG_RELOCATED_REPO_ACCESS_IS_OK="yes")

    def init(self) -> None:
        self.fresh()
        self.run(["borg", "init", "-e", "none", str(self.repo)])

    def _archive(self, night: int) -> str:
        return f"{self.repo}::night-{night:02d}"

    def backup(self, image: Path, night: int) -> RunStats:
        argv = ["borg", "create", "--compression", "zstd,3"]
        if self.chunker_params:
            argv += ["--chunker-params", self.chunker_params]
        self.image_name = image.name
        return self.run(argv + [self._archive(night), image.name], cwd=image.parent)

    def restore(self, night: int, target: Path) -> RunStats:
        scratch = target.parent / f".{self.name}-extract"
        scratch.mkdir(parents=True, exist_ok=True)
        stats = self.run(["borg", "extract", "--sparse", self._archive(night), self.image_name],
                         cwd=scratch)
        move_restored(scratch / self.image_name, target)
        scratch.rmdir()
        return stats

    def mount(self, mountpoint: Path, night: int) -> Path:
        mountpoint.mkdir(parents=True, exist_ok=True)
        self.run(["borg", "mount", self._archive(night), str(mountpoint)])
        image = mountpoint / self.image_name
        wait_for_path(image, 60)
        return image

    def umount(self, mountpoint: Path) -> None:
        self.run(["borg", "umount", str(mountpoint)])
        unmount(mountpoint, fuse=True)


class Borg64k(Borg):
    name = "borg64k"
    # 2^14 = 16 KiB minimum, 2^18 = 256 KiB maximum, 16 mask bits = 64 KiB average (borg 1.2 syntax)
    chunker_params = "buzhash,14,18,16,4095"
    settings = "`-e none`, `--compression zstd,3`, `--chunker-params buzhash,14,18,16,4095` (64 KiB avg)"
