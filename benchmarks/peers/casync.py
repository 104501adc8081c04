"""casync: a blob index (.caibx) of the image per night over one chunk store, casync's defaults."""
from __future__ import annotations

from pathlib import Path

from ..measure import RunStats
from .base import MountUnsupported, Peer


class Casync(Peer):
    name = "casync"
    executable = "casync"
    apt_package = "casync"
    settings = "defaults: 16/64/256 KiB chunks, sha512-256, zstd; one `.caibx` blob index per night"

    def _store(self) -> Path:
        return self.repo / "default.castr"

    def _index(self, night: int) -> Path:
        return self.repo / "indexes" / f"night-{night:02d}.caibx"

    def init(self) -> None:
        self.fresh()
        (self.repo / "indexes").mkdir(parents=True)

    def backup(self, image: Path, night: int) -> RunStats:
        return self.run(["casync", "make", f"--store={self._store()}", str(self._index(night)),
                         str(image)])

    def restore(self, night: int, target: Path) -> RunStats:
        return self.run(["casync", "extract", f"--store={self._store()}", str(self._index(night)),
                         str(target)])

    def mount(self, mountpoint: Path, night: int) -> Path:
        # `casync mount` serves directory archives (.caidx) only; a blob index becomes a block
        # device with `casync mkdev`, which needs the kernel's NBD driver. Check for it honestly.
        if not any(Path("/dev").glob("nbd*")):
            raise MountUnsupported(
                "`casync mount` serves directory archives (.caidx) only; an image's blob index "
                "(.caibx) needs `casync mkdev`, which needs the kernel NBD driver (/dev/nbd*), "
                "absent on this machine")
        raise MountUnsupported("casync mkdev (NBD block device) is not driven by this harness yet")

    def umount(self, mountpoint: Path) -> None:
        pass
