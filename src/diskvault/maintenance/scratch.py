"""Where maintenance keeps sets too large for memory (sorted runs, store/index/sorted_runs.py):
this user's cache folder, on a disk where /tmp may be memory, or the temporary folder for a
user with no usable cache."""

from __future__ import annotations

import tempfile
from pathlib import Path

from ..store.host.durable import make_private_folder
from ..store.host.user_folders import user_cache_folder


def scratch_folder() -> Path:
    cache = user_cache_folder()
    try:
        cache.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        make_private_folder(cache)
        return cache
    except OSError:
        return Path(tempfile.gettempdir())
