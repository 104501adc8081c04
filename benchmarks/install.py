"""Getting the tools: the peers from Debian's packages, matplotlib from PyPI, diskvault from here."""
from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from typing import Callable

from .peers import Peer

# What the harness itself runs, by executable: the Debian package that provides it.
HARNESS_TOOLS = {"/usr/bin/time": "time", "sfdisk": "fdisk", "mkfs.ext4": "e2fsprogs",
                 "losetup": "mount", "fusermount": "fuse3"}


def ensure_harness_tools(log: Callable[[str], None]) -> None:
    """GNU time, sfdisk, mkfs.ext4, losetup and fusermount; apt-get install what is missing."""
    missing = sorted({package for tool, package in HARNESS_TOOLS.items() if not shutil.which(tool)})
    if missing:
        log(f"installing {' '.join(missing)} with apt-get (used by the harness)")
        _apt_install(missing)


def _apt_install(packages: list[str]) -> None:
    command = ["apt-get", "install", "-y", "-q", *packages]
    if subprocess.run(command, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], capture_output=True)
        subprocess.run(command, capture_output=True)


def ensure_peers(peers: list[Peer], log: Callable[[str], None]) -> dict[str, str]:
    """Install missing peers with apt-get; return {tool: reason} for tools that stay unusable."""
    missing = sorted({p.apt_package for p in peers if p.apt_package and not p.installed()})
    if missing:
        log(f"installing {' '.join(missing)} with apt-get")
        _apt_install(missing)
    unusable = {}
    for peer in peers:
        if peer.installed():
            continue
        if peer.apt_package:
            unusable[peer.name] = f"`apt-get install {peer.apt_package}` did not provide it"
        else:
            unusable[peer.name] = ("the diskvault command is missing or `diskvault --help` fails; "
                                   "run the harness with the checkout's .venv/bin/python (scripts/setup.sh --tests)")
    return unusable


def ensure_matplotlib(log: Callable[[str], None]) -> bool:
    """matplotlib draws the plot; install it with pip if it is missing (False if that fails)."""
    if importlib.util.find_spec("matplotlib") is None:
        log("installing matplotlib with pip (for the plot)")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "matplotlib"],
                       capture_output=True)
        importlib.invalidate_caches()
    return importlib.util.find_spec("matplotlib") is not None
