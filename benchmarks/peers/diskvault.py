"""diskvault through its command line, as a user runs it (contract: shared DESIGN.md)."""
from __future__ import annotations

import json
import subprocess
from importlib import metadata
from pathlib import Path

from ..measure import RunStats
from ..mounts import unmount, wait_for_path
from .base import Peer


class Diskvault(Peer):
    name = "diskvault"
    executable = "diskvault"
    apt_package = ""  # this checkout, from the .venv that runs the harness
    settings = ("defaults fixed at `init` (FastCDC 16/64/256 KiB, blake3, zstd level 3), "
                "`--encryption none`")
    init_options = ["--encryption", "none"]

    def __init__(self, folder: Path):
        super().__init__(folder)
        self.snapshot_ids: dict[int, str] = {}

    def version(self) -> str:
        result = subprocess.run(["diskvault", "--version"], capture_output=True, text=True)
        if result.returncode == 0 and result.stdout.strip():
            return result.stdout.strip().splitlines()[0]
        return f"diskvault {metadata.version('diskvault')}"

    def installed(self) -> bool:
        if not super().installed():
            return False
        return subprocess.run(["diskvault", "--help"], capture_output=True).returncode == 0

    def init(self) -> None:
        self.fresh()
        self.run(["diskvault", "init", "-r", str(self.repo), *self.init_options])

    def backup(self, image: Path, night: int) -> RunStats:
        self.image_name = image.name
        stats = self.run(["diskvault", "backup", "-r", str(self.repo), str(image),
                          "--name", "bench", "--no-progress", "--json"])
        self.snapshot_ids[night] = self._snapshot_id(stats.stdout, night)
        return stats

    def _snapshot_id(self, output: str, night: int) -> str:
        """The id from backup's JSON; failing that, the night-th snapshot in `list --json`."""
        try:
            found = _find_id(json.loads(output))
        except ValueError:
            found = None
        if found:
            return found
        listing = json.loads(self.run(["diskvault", "list", "-r", str(self.repo), "--json"]).stdout)
        records = listing if isinstance(listing, list) else listing.get("snapshots", [])
        return _find_id(sorted(records, key=lambda r: str(r.get("time", "")))[night])

    def restore(self, night: int, target: Path) -> RunStats:
        snapshot = self.snapshot_ids.get(night, "latest")
        return self.run(["diskvault", "restore", "-r", str(self.repo), snapshot, str(target)])

    def mount(self, mountpoint: Path, night: int) -> Path:
        mountpoint.mkdir(parents=True, exist_ok=True)
        self.run(["diskvault", "mount", "-r", str(self.repo), str(mountpoint),
                  self.snapshot_ids[night]])
        image = mountpoint / self.image_name
        wait_for_path(image, 60)
        return image

    def umount(self, mountpoint: Path) -> None:
        self.run(["diskvault", "umount", str(mountpoint)])
        unmount(mountpoint, fuse=True)


def _find_id(value) -> str | None:
    """The first "snapshot_id" or "id" found in a JSON value, searching nested objects."""
    if isinstance(value, dict):
        for key in ("snapshot_id", "id"):
            if isinstance(value.get(key), str):
                return value[key]
        for inner in value.values():
            found = _find_id(inner)
            if found:
                return found
    if isinstance(value, list):
        for inner in value:
            found = _find_id(inner)
            if found:
                return found
    return None


class DiskvaultEncrypted(Diskvault):
    """The same, encrypted (the default of `init`): what encryption costs, in the same run.
    Each command pays the passphrase's argon2id derivation (about 0.5 s), as restic pays
    its scrypt."""

    name = "diskvault-enc"
    settings = ("as diskvault, encrypted: keyed blake3 ids, AES-256-GCM records, argon2id "
                "key file (the default of `init`)")
    init_options = []

    def env(self) -> dict:
        return dict(super().env(), DISKVAULT_PASSWORD="diskvault-bench")
