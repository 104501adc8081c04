"""Drivers for the tools compared, all behind one interface (see base.Peer)."""
from __future__ import annotations

from pathlib import Path

from .base import MountUnsupported, Peer
from .borg import Borg, Borg64k
from .casync import Casync
from .diskvault import Diskvault, DiskvaultEncrypted
from .restic import Restic

PEERS: dict[str, type[Peer]] = {cls.name: cls for cls in (Diskvault, DiskvaultEncrypted, Borg,
                                                            Borg64k, Restic, Casync)}
DEFAULT_TOOLS = list(PEERS)


def make_peer(name: str, folder: Path) -> Peer:
    if name not in PEERS:
        raise ValueError(f"unknown tool {name!r}; choose from {', '.join(PEERS)}")
    return PEERS[name](folder)


__all__ = ["PEERS", "DEFAULT_TOOLS", "MountUnsupported", "Peer", "make_peer"]
