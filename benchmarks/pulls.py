"""Pulling night 0's file out of an image: through a tool's FUSE mount, or from the image itself.

For a filesystem workload the image (wherever it is: a state file, or the file a tool shows in
its mount) is loop-mounted read-only at the partition's offset and the file copied out; for a
raw workload the byte range is read directly. Either way the copy is checked by sha256.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from .measure import Stopwatch, sha256_file
from .mounts import loop_mounted, release_stale
from .peers import MountUnsupported, Peer


def pull_file(image: Path, pull: dict, scratch: Path) -> bool:
    """Copy the pulled file (or range) out of image into scratch; True if its sha256 matches."""
    out = scratch / "pulled.bin"
    if "path_in_fs" in pull:
        with loop_mounted(image, scratch / "fs", pull["partition_offset"],
                          pull["partition_size"]) as fs:
            shutil.copyfile(fs / pull["path_in_fs"], out)
    else:
        with open(image, "rb") as source, open(out, "wb") as sink:
            source.seek(pull["image_offset"])
            remaining = pull["size"]
            while remaining:
                block = source.read(min(remaining, 1 << 20))
                if not block:
                    break
                sink.write(block)
                remaining -= len(block)
    ok = sha256_file(out) == pull["sha256"]
    out.unlink()
    return ok


def pull_through_mount(peer: Peer, pull: dict, scratch: Path, night: int = 0) -> dict:
    """Mount the tool's snapshot of night, pull the file, unmount; the figure or why there is none."""
    mountpoint = scratch / "tool"
    release_stale(mountpoint)
    try:
        with Stopwatch() as mounting:
            image = peer.mount(mountpoint, night)
        with Stopwatch() as pulling:
            ok = pull_file(image, pull, scratch)
    except MountUnsupported as reason:
        return {"unsupported": str(reason)}
    except Exception as error:  # noqa: BLE001 - one tool's failure must not stop the others
        release_stale(scratch / "fs")
        _unmount_quietly(peer, mountpoint)
        return {"error": str(error)}
    figure = {"mount_s": mounting.elapsed_s, "pull_s": pulling.elapsed_s,
              "total_s": mounting.elapsed_s + pulling.elapsed_s, "verified": ok}
    try:
        peer.umount(mountpoint)
    except Exception as error:  # noqa: BLE001 - the figure stands; record what went wrong
        figure["umount_error"] = str(error)
        release_stale(mountpoint)
    return figure


def _unmount_quietly(peer: Peer, mountpoint: Path) -> None:
    try:
        peer.umount(mountpoint)
    except Exception:  # noqa: BLE001 - cleanup after a failure that is already recorded
        release_stale(mountpoint)
