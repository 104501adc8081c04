"""The filesystem inside a volume, read without mounting: stat, list, read, walk.

Works over any seekable read-only file-like object (a `PartitionView`, the store's image reader).
Parsing is the `dissect` family's; this module gives them one small uniform API and makes them
safe on hostile images: every parser error becomes a DiskvaultError naming the path; every
step of work (resolving a name, listing one entry, reading one piece) has a budget of reads and
of Python calls, so that looping structures end in an error instead of a hang; sizes and times
that cannot be real are refused; directory walks stop at cycles and at a depth limit. One
`Filesystem` serialises its own use with a lock, so the FUSE layer may share it between threads
(its FileReader included, file_reader.py).
"""

from __future__ import annotations

import logging
import posixpath
import threading
from collections.abc import Callable, Hashable, Iterator
from typing import Any, BinaryIO

from ..errors import (BadInput, DamagedFilesystem, DiskvaultError, IsADirectory, NotADirectory,
                      PathNotFound, UnknownFilesystem)
from ..lru import LRU
from .detect import describe_content, detect_filesystem
from .drivers.base import KINDS, STEP_CALL_LIMIT, Damaged, Driver, Entry, GuardedVolume
from .file_reader import FileReader

__all__ = [  # the public API; drivers and their helpers live in drivers/ (errors in errors.py)
    "KINDS", "MAX_DEPTH", "Driver", "Entry", "Filesystem", "GuardedVolume",
    "detect_filesystem", "open_filesystem",
]

MAX_DEPTH = 256
MAX_SYMLINK_HOPS = 40
_OPEN_CALLS_PER_BYTE = 1 / 128
_LISTING_CACHE_DIRS = 64
_LISTING_CACHE_MAX_ENTRIES = 20_000
_REMEMBERED_PATHS = 50_000

log = logging.getLogger(__name__)


_DRIVERS = {
    "ext": ("diskvault.image.drivers.unix", "ExtDriver"),
    "xfs": ("diskvault.image.drivers.unix", "XfsDriver"),
    "btrfs": ("diskvault.image.drivers.unix", "BtrfsDriver"),
    "fat": ("diskvault.image.drivers.dos", "FatDriver"),
    "ntfs": ("diskvault.image.drivers.dos", "NtfsDriver"),
    "exfat": ("diskvault.image.drivers.exfat", "ExfatDriver"),
}


def open_filesystem(fileobj: BinaryIO, where: str = "the volume") -> Filesystem:
    """Detect and open the filesystem on a volume. `where` ("partition 2") prefixes messages.

    Raises UnknownFilesystem (saying what the volume seems to hold instead) or DamagedFilesystem.
    """
    import importlib

    volume = GuardedVolume(fileobj)
    family = detect_filesystem(volume)
    if family is None:
        raise UnknownFilesystem(
            f"{where} holds no known filesystem (first bytes look like: "
            f"{describe_content(volume)}); readable are ext2/3/4, FAT12/16/32, exFAT, NTFS, XFS "
            f"and btrfs")
    module_name, class_name = _DRIVERS[family]
    driver_class = getattr(importlib.import_module(module_name), class_name)
    volume.arm()
    try:
        with volume.watch():
            driver = driver_class(volume)
    except DiskvaultError:
        raise
    except Damaged as exc:
        raise DamagedFilesystem(
            f"{where}: looks like {family} but cannot be opened: {exc}") from exc
    except Exception as exc:  # parsers raise anything on damaged input
        raise DamagedFilesystem(f"{where}: looks like {family} but cannot be opened "
                                f"({type(exc).__name__}: {exc})") from exc
    return Filesystem(driver, volume, where)


# --- the uniform API ------------------------------------------------------------------------

class Filesystem:
    """Read-only access by path ('/etc/nginx'); paths are absolute within the filesystem."""

    def __init__(self, driver: Driver, volume: GuardedVolume, where: str):
        self._driver = driver
        self._volume = volume
        self.where = where
        self.kind = driver.kind
        self.label = driver.label
        self._lock = threading.RLock()
        self._listings: LRU[Hashable, dict[str, Any]] = LRU(_LISTING_CACHE_DIRS)
        self._nodes: LRU[str, Any] = LRU(_REMEMBERED_PATHS)  # path -> node of recent listings

    def stat(self, path: str, follow_symlinks: bool = False) -> Entry:
        """The entry at `path`; a final symlink is described itself unless follow_symlinks."""
        with self._operation(path):
            node, path = self._resolve(path, follow_last=follow_symlinks)
            return self._describe(node, path)

    def listdir(self, path: str, onerror: Callable[[DiskvaultError], None] | None = None
                ) -> list[Entry]:
        """The entries of the directory at `path` (a symlink to a directory is followed).

        An entry that cannot be described (an absurd size, a damaged inode) costs only itself:
        it is left out and its error goes to `onerror` (default: logged), so its siblings still
        list."""
        with self._operation(path):
            node, path = self._resolve(path, follow_last=True)
            return self._list(node, path, onerror or _log_damage)[0]

    def loop_target(self, path: str) -> str | None:
        """The folder on the way to `path` that the folder at `path` is (a directory hard link
        to an ancestor in a hostile image), or None. A tree walker (the mount, `find` through
        it) must not descend into such a folder: its tree is endless."""
        with self._operation(path):
            node, path = self._resolve(path, follow_last=True)
            identity = self._driver.identity(node)
            parts = [part for part in path.split("/") if part]
            for depth in range(len(parts)):
                ancestor = "/" + "/".join(parts[:depth])
                if self._driver.identity(self._resolve(ancestor, follow_last=True)[0]) == identity:
                    return ancestor
            return None

    def open(self, path: str) -> FileReader:
        """A streaming reader of the regular file at `path` (symlinks followed)."""
        with self._operation(path):
            node, path = self._resolve(path, follow_last=True)
            entry = self._describe(node, path)
            if entry.kind == "dir":
                raise IsADirectory(f"{self.where}: {path}: is a directory")
            if entry.kind != "file":
                raise BadInput(f"{self.where}: {path}: is a {entry.kind}, not a regular file")
            extra_calls = int(min(entry.size, 1 << 32) * _OPEN_CALLS_PER_BYTE)  # block maps
            self._volume.arm(calls=STEP_CALL_LIMIT + extra_calls)
            stream = self._driver.open(node)
            return FileReader(stream, entry, self._driver.data_ranges(stream), self._operation,
                              self._volume)

    def walk(self, path: str = "/", onerror: Callable[[DiskvaultError], None] | None = None
             ) -> Iterator[tuple[str, list[Entry]]]:
        """Top-down (dirpath, entries) for the tree at `path`, like os.walk.

        Remove directory entries from the yielded list to keep the walk out of them. A directory
        that cannot be read, is deeper than MAX_DEPTH, or was already visited (a loop or a
        hard-linked directory in a hostile image) goes to `onerror` (default: raise) and is
        skipped.
        """
        report = onerror or _raise
        with self._operation(path):
            top, path = self._resolve(path, follow_last=True)
        seen: set[Hashable] = set()
        stack = [(path, top, 0)]
        while stack:
            dirpath, node, depth = stack.pop()
            try:
                entries, nodes = self._walk_step(dirpath, node, depth, seen, report)
            except DiskvaultError as exc:
                report(exc)
                continue
            yield dirpath, entries
            for entry in reversed(entries):
                if entry.kind == "dir":
                    stack.append((entry.path, nodes[entry.name], depth + 1))

    def _walk_step(self, dirpath: str, node: Any, depth: int, seen: set[Hashable],
                   onerror: Callable[[DiskvaultError], None]):
        with self._operation(dirpath):
            if depth > MAX_DEPTH:
                raise Damaged(f"deeper than {MAX_DEPTH} folders; not descending further")
            identity = self._driver.identity(node)
            if identity in seen:
                raise Damaged("this folder was already listed at another path (a loop); skipped")
            seen.add(identity)
            return self._list(node, dirpath, onerror)

    def _list(self, node: Any, path: str, onerror: Callable[[DiskvaultError], None]
              ) -> tuple[list[Entry], dict[str, Any]]:
        """A directory's entries and nodes; remembers the nodes by path, so that a following
        stat or open of an entry (pull, FUSE) needs no new lookup. Entries that cannot be
        described go to `onerror` and are left out."""
        nodes = self._children(node, path)
        entries = []
        for name, child in nodes.items():
            here = child_path(path, name)
            try:
                with self._volume.watch():  # again per entry: a tracer that raised is unset
                    entries.append(self._describe(child, here, name))
            except Exception as exc:  # parsers raise anything on damaged input
                onerror(_as_damage(self, here, exc))
                continue
            if name_is_plain(name):  # 'a/b' must not pose as the path /a/b
                self._nodes.put(entries[-1].path, child)
        return entries, nodes

    # -- internals --

    def _operation(self, path: str):
        return _Operation(self, path)

    def _describe(self, node: Any, path: str, name: str | None = None) -> Entry:
        self._volume.arm()
        if name is None:
            name = path.rsplit("/", 1)[-1] or "/"
        return _checked(self._driver.describe(node, name, path))

    def _children(self, node: Any, path: str) -> dict[str, Any]:
        """name -> node of a directory, cached for a few recently used directories."""
        if self._describe(node, path).kind != "dir":
            raise NotADirectory(f"{self.where}: {path}: not a directory")
        key = self._driver.identity(node)
        known = self._listings.get(key)
        if known is not None:
            return known
        listing = {}
        self._volume.arm()
        for name, child in self._driver.children(node):
            listing.setdefault(name, child)
            self._volume.arm()  # progress: the budget is per entry
        if len(listing) <= _LISTING_CACHE_MAX_ENTRIES:
            self._listings.put(key, listing)
        return listing

    def _resolve(self, path: str, follow_last: bool) -> tuple[Any, str]:
        """The node at `path` and its normalised path; intermediate symlinks are followed."""
        if not isinstance(path, str) or "\0" in path:
            raise BadInput(f"{self.where}: invalid path {path!r}")
        normalized = posixpath.normpath("/" + path.lstrip("/"))  # (normpath keeps a leading //)
        known = self._nodes.get(normalized)
        if known is not None and not (
                follow_last and self._describe(known, normalized).kind == "symlink"):
            return known, normalized
        try:
            return self._resolve_parts(path, follow_last)
        except PathNotFound as exc:  # name the path asked for, not the first missing part
            raise PathNotFound(f"{self.where}: {path}: no such file or directory") from exc
        except NotADirectory as exc:
            raise NotADirectory(f"{self.where}: {path}: a part of it is not a directory") from exc

    def _resolve_parts(self, path: str, follow_last: bool) -> tuple[Any, str]:
        pending = [p for p in posixpath.normpath("/" + path.lstrip("/")).split("/") if p]
        node, parts, hops = self._driver.root(), [], 0
        stack = [node]
        while pending:
            name = pending.pop(0)
            if name == "..":
                if len(stack) > 1:
                    stack.pop()
                    parts.pop()
                continue
            name, child = self._lookup(stack[-1], name, "/" + "/".join(parts + [name]))
            here = "/" + "/".join(parts + [name])
            entry = self._describe(child, here, name)
            if entry.kind == "symlink" and (pending or follow_last):
                hops += 1
                if hops > MAX_SYMLINK_HOPS:
                    raise Damaged("too many levels of symbolic links")
                target = entry.symlink_target or ""
                if target.startswith("/"):
                    stack, parts = [stack[0]], []
                pending = [p for p in target.split("/") if p and p != "."] + pending
                continue
            stack.append(child)
            parts.append(name)
        return stack[-1], "/" + "/".join(parts)

    def _lookup(self, directory: Any, name: str, path: str) -> tuple[str, Any]:
        """(name as stored, node) of `name` in a directory; FAT, exFAT, NTFS ignore case."""
        listing = self._children(directory, posixpath.dirname(path))
        if name in listing:
            return name, listing[name]
        if self._driver.case_insensitive:
            folded = name.casefold()
            for candidate, node in listing.items():
                if candidate.casefold() == folded:
                    return candidate, node
        raise PathNotFound(f"{self.where}: {path}: no such file or directory")


_MAX_SIZE = 1 << 62  # no real filesystem allows bigger files; beyond are damage
_MAX_TIME_NS = 1 << 62  # ~146 years either side of 1970, as ns


def _checked(entry: Entry) -> Entry:
    """The entry, if its numbers are possible at all (hostile values would otherwise surface
    later as overflows in the code that uses them)."""
    if not 0 <= entry.size < _MAX_SIZE:
        raise Damaged(f"{entry.name!r} claims a size of {entry.size} bytes")
    times = (entry.mtime_ns, entry.atime_ns, entry.ctime_ns, entry.birthtime_ns or 0)
    if any(abs(t) >= _MAX_TIME_NS for t in times):
        raise Damaged(f"{entry.name!r} has an impossible timestamp")
    for owner in (entry.uid, entry.gid):
        if owner is not None and not 0 <= owner < 1 << 32:
            raise Damaged(f"{entry.name!r} has an impossible owner id {owner}")
    return entry


def name_is_plain(name: str) -> bool:
    """One path component as a POSIX path can name it."""
    return name not in ("", ".", "..") and "/" not in name and "\0" not in name


def child_path(folder: str, name: str) -> str:
    """The path of `name` in `folder`. Not posixpath.join: a hostile name may start with '/'."""
    return folder.rstrip("/") + "/" + name


def _raise(exc: DiskvaultError) -> None:
    raise exc


def _log_damage(exc: DiskvaultError) -> None:
    log.warning("%s", exc)


def _as_damage(fs: Filesystem, path: str, exc: Exception) -> DiskvaultError:
    """A parser's failure at `path` as the error a user reads (volume, path, what is wrong)."""
    if isinstance(exc, DiskvaultError):
        return exc
    if isinstance(exc, Damaged):
        problem = str(exc)
    else:
        problem = f"the {fs.kind} structures are damaged ({type(exc).__name__}: {exc})"
    return DamagedFilesystem(f"{fs.where}: {path}: {problem}")


class _Operation:
    """Holds the filesystem's lock and turns any parser failure into an error naming the path."""

    def __init__(self, fs: Filesystem, path: str):
        self._fs, self._path = fs, path

    def __enter__(self) -> None:
        self._fs._lock.acquire()
        self._watch = self._fs._volume.watch()
        self._watch.__enter__()
        self._fs._volume.arm()

    def __exit__(self, exc_type, exc, traceback) -> bool:
        self._watch.__exit__(None, None, None)
        self._fs._lock.release()
        if exc is None or not isinstance(exc, Exception) or isinstance(exc, DiskvaultError):
            return False
        raise _as_damage(self._fs, self._path, exc) from exc
