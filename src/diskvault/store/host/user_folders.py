"""This user's folders on this host, as the XDG base directories name them: the cache (an
object store's index, its host mutexes) and the state (what diskvault knows of restore
targets). Nothing in them is the truth of a repository."""

from __future__ import annotations

import os
from pathlib import Path


def user_cache_folder() -> Path:
    """``$XDG_CACHE_HOME/diskvault`` (default ``~/.cache/diskvault``)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "diskvault"


def user_state_folder() -> Path:
    """``$XDG_STATE_HOME/diskvault`` (default ``~/.local/state/diskvault``)."""
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "diskvault"
