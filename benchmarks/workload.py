"""Workloads: a series of nightly states of one disk image, built once and reused.

A workload is named ("fs-image" or "vm-image") and scaled by image size; its states live in
<work>/<name>-<size>-s<seed>-v<version>/states/night-NN.img. Night n is night n-1 copied (sparse)
and changed in place, so asking for more nights later only builds the missing ones.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from . import fs_image, vm_image
from .measure import sha256_file

GENERATOR_VERSION = 1  # bump when the bytes a workload produces change
IMAGE_NAME = "disk.img"
BUILDERS = {"fs-image": fs_image, "vm-image": vm_image}
DESCRIPTIONS = {
    "fs-image": "GPT disk, one ext4 partition of real files from /usr; nightly: files added, "
                "edited and deleted, logs appended, database pages rewritten, a package added",
    "vm-image": "raw image of text-like, binary, random and zero extents; nightly: 1 % of the "
                "4 KiB blocks rewritten at random offsets",
}


@dataclass
class Workload:
    name: str
    image_size: int
    nights: int  # nights of change after night 0, so nights + 1 states
    folder: Path
    meta: dict

    @property
    def description(self) -> str:
        return DESCRIPTIONS[self.name]

    @property
    def pull(self) -> dict:
        """Where night 0's pulled file is: partition offset and path, or a raw byte range."""
        return self.meta["pull"]

    def state(self, night: int) -> Path:
        return self.folder / "states" / f"night-{night:02d}.img"

    def sha256(self, night: int) -> str:
        record = self.meta["nights"][str(night)]
        if "sha256" not in record:
            record["sha256"] = sha256_file(self.state(night))
            _save_meta(self.folder, self.meta)
        return record["sha256"]

    @contextmanager
    def live(self, night: int) -> Iterator[Path]:
        """The night's state under one fixed path (a hard link), as a nightly timer would see it."""
        live = self.folder / "live" / IMAGE_NAME
        live.parent.mkdir(exist_ok=True)
        live.unlink(missing_ok=True)
        os.link(self.state(night), live)
        try:
            yield live
        finally:
            live.unlink(missing_ok=True)


def prepare(name: str, image_size: int, nights: int, seed: int, work: Path,
            log: Callable[[str], None] = print) -> Workload:
    """Build (or reuse) the states night 0..nights of the named workload."""
    builder = BUILDERS[name]
    folder = work / f"{name}-{image_size >> 20}M-s{seed}-v{GENERATOR_VERSION}"
    (folder / "states").mkdir(parents=True, exist_ok=True)
    meta = _load_meta(folder) or {"name": name, "image_size": image_size, "seed": seed,
                                   "version": GENERATOR_VERSION, "nights": {}}
    plan = builder.Plan(image_size, seed)
    scratch = folder / "scratch"
    for night in range(nights + 1):
        if str(night) in meta["nights"] and _state_ok(folder, night, image_size):
            continue
        for later in [n for n in meta["nights"] if int(n) >= night]:
            del meta["nights"][later]  # a rebuilt night invalidates every night after it
        started = time.perf_counter()
        partial = folder / "states" / f".night-{night:02d}.partial"
        partial.unlink(missing_ok=True)
        if night == 0:
            log(f"  building {name} night 0 ({image_size >> 20} MiB image)")
            meta["pull"] = builder.build_night0(partial, plan, scratch)
            changes = {}
        else:
            log(f"  building {name} night {night}")
            _copy_sparse(folder / "states" / f"night-{night - 1:02d}.img", partial)
            changes = builder.apply_night(partial, night, plan, scratch, meta["pull"])
        os.replace(partial, folder / "states" / f"night-{night:02d}.img")
        meta["nights"][str(night)] = {"changes": changes,
                                      "build_s": round(time.perf_counter() - started, 1)}
        _save_meta(folder, meta)
    shutil.rmtree(scratch, ignore_errors=True)
    return Workload(name, image_size, nights, folder, meta)


def _state_ok(folder: Path, night: int, image_size: int) -> bool:
    path = folder / "states" / f"night-{night:02d}.img"
    return path.is_file() and path.stat().st_size == image_size


def _copy_sparse(source: Path, target: Path) -> None:
    subprocess.run(["cp", "--sparse=always", "--reflink=auto", str(source), str(target)],
                   check=True)


def _load_meta(folder: Path) -> dict | None:
    try:
        return json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        return None


def _save_meta(folder: Path, meta: dict) -> None:
    temporary = folder / "meta.json.tmp"
    temporary.write_text(json.dumps(meta, indent=1, sort_keys=True))
    os.replace(temporary, folder / "meta.json")
