"""What a local repository's folder holds, walked without following any link: objects,
unfinished uploads (temp files) and anything foreign, told apart by kind."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator

from ..host.durable import FOLDER_FLAGS, TEMP_TOKEN_HEX_DIGITS, TMP_SUFFIX


def walk_folder(fd: int, base: str, start: str = "") -> Iterator[tuple[str, str]]:
    """(name, kind) of every entry in the folder ``fd`` (closed at the end) whose name
    starts with ``start``, named from ``base``: "object" (a regular file), "unfinished" (a
    temp file, durable.temp_name), or "foreign" (anything else, and ``name/`` for a folder
    without a file inside). Entries that vanish while listed (a compaction deletes) are
    left out."""
    try:
        with os.scandir(fd) as entries:
            found = sorted((e.name, _kind(e)) for e in entries if e.name.startswith(start))
        for entry_name, kind in found:
            name = base + entry_name
            if kind == "folder":
                try:
                    inner_fd = os.open(entry_name, FOLDER_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    continue
                yield from list(walk_folder(inner_fd, name + "/")) \
                    or [(name + "/", "foreign")]
            elif kind == "file":
                yield name, "unfinished" if _is_temp_name(entry_name) else "object"
            elif kind == "other":
                yield name, "foreign"
    finally:
        os.close(fd)


def _is_temp_name(name: str) -> bool:
    """A name of durable.temp_name: ``.<final name>.<16 hex>.tmp``."""
    if not (name.startswith(".") and name.endswith(TMP_SUFFIX)):
        return False
    _, _, token = name[1: -len(TMP_SUFFIX)].rpartition(".")
    return len(token) == TEMP_TOKEN_HEX_DIGITS and all(c in "0123456789abcdef" for c in token)


def _kind(entry: os.DirEntry) -> str:
    """"file", "folder", "other" (a link, a device), or "gone" if it vanished meanwhile."""
    try:
        mode = entry.stat(follow_symlinks=False).st_mode
    except FileNotFoundError:
        return "gone"
    return "file" if stat.S_ISREG(mode) else "folder" if stat.S_ISDIR(mode) else "other"
