"""Copy files out of a filesystem inside an image, safely.

The image may be a backup of a compromised machine, so every name and link in it is hostile
input. Nothing is ever written outside the destination: entries are created relative to an
open directory descriptor, never through a path string, with O_NOFOLLOW and O_EXCL, so no
symlink (from the image, or planted in the destination meanwhile) is ever followed. Symlinks are
data and are recreated exactly as they are, wherever they point; names with '/' or '..' and
device files are refused one by one, and the rest of the tree is still copied. Memory stays
bounded: files are streamed in chunks.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import BadInput, DiskvaultError, TargetExists
from .filesystems import Entry, Filesystem
from .locations import open_location, parse_location

__all__ = ["PullProblem", "PullProgress", "PullReport", "kept_mode", "name_problem",
           "open_location", "parse_location", "pull", "symlink_problem"]

CHUNK_BYTES = 1024 * 1024
HOLE_BYTES = 64 * 1024  # zero runs this long, so aligned, become holes in pulled files
_ZEROS = bytes(HOLE_BYTES)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class PullProblem:
    """One path that was not (completely) copied, and why, as one line for the user."""

    path: str | None  # None when the message is about the walk rather than one entry
    message: str


@dataclass(frozen=True)
class PullProgress:
    files: int
    bytes: int
    path: str


@dataclass
class PullReport:
    files: int = 0
    folders: int = 0
    symlinks: int = 0
    bytes: int = 0
    problems: list[PullProblem] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 when everything was copied; 1 when any path was refused or failed."""
        return 1 if self.problems else 0


def pull(fs: Filesystem, source_path: str, destination: str | os.PathLike,
         progress: Callable[[PullProgress], None] | None = None,
         keep_set_id: bool = False) -> PullReport:
    """Copy `source_path` (a file, symlink or whole tree) out of `fs`, like `cp -a`.

    If `destination` is an existing folder the copy goes inside it under the source's name
    (the filesystem root merges into it); otherwise the copy is created as `destination`.
    Modes, atime/mtime and symlinks are kept, owners too when running as root; setuid and
    setgid bits only with `keep_set_id` as root (as `tar -p`). Refused or failed paths are
    listed in the report (exit_code 1); everything else is still copied.
    """
    entry = fs.stat(source_path)
    parent, name = _placement(os.fspath(destination), entry)
    parent_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        copier = _Copier(fs, progress, keep_set_id)
        copier.copy_top(parent_fd, name, entry)
        return copier.report
    finally:
        os.close(parent_fd)


def _placement(destination: str, entry: Entry) -> tuple[str, str]:
    """(existing parent folder, name to create or merge into) for the copy of `entry`."""
    if os.path.isdir(destination):
        if entry.path != "/":
            return destination, entry.name
        absolute = os.path.abspath(destination)
        if absolute == "/":
            raise BadInput("refusing to pull a whole filesystem into /")
        return os.path.dirname(absolute), os.path.basename(absolute)
    if os.path.lexists(destination):
        raise TargetExists(f"{destination} already exists; pull does not overwrite files")
    parent = os.path.dirname(os.path.abspath(destination))
    if not os.path.isdir(parent):
        raise BadInput(f"{parent} is not an existing folder to pull into")
    return parent, os.path.basename(os.path.abspath(destination))


def name_problem(name: str) -> str | None:
    """Why a name from the image cannot be created as one entry in a folder, or None."""
    if name in ("", ".", ".."):
        return f"refused: the name {name!r} is not a plain file name"
    if "/" in name or "\0" in name:
        return f"refused: the name {name!r} contains '/' or a NUL byte"
    return None


def symlink_problem(target: str | None) -> str | None:
    """Why a symlink with this target cannot be recreated, or None. Where it points does not
    matter: pull never follows a link while writing, so a link is data like a file's bytes."""
    if not target or "\0" in target:
        return f"refused: the symlink target {target!r} is empty or contains a NUL byte"
    return None


def kept_mode(mode: int, keep_owner: bool, keep_set_id: bool) -> int:
    """The permission bits a copy gets. Setuid and setgid are dropped unless asked for (as
    `tar` without -p), and always without the owner they were meant for; sticky is kept (it
    takes rights away, it grants none)."""
    return mode & (0o7777 if keep_owner and keep_set_id else 0o1777)


class _Copier:
    def __init__(self, fs: Filesystem, progress: Callable[[PullProgress], None] | None,
                 keep_set_id: bool):
        self.fs, self.progress, self.keep_set_id = fs, progress, keep_set_id
        self.report = PullReport()
        self.as_root = os.geteuid() == 0
        self._folders: list[tuple[tuple[str, ...], Entry]] = []

    def problem(self, path: str, message: str) -> None:
        self.report.problems.append(PullProblem(path, f"{self.fs.where}: {path}: {message}"))

    def copy_top(self, parent_fd: int, name: str, entry: Entry) -> None:
        if entry.kind != "dir":
            self.copy_entry(parent_fd, entry, name=name)
            return
        if not self.make_folder(parent_fd, name, entry):
            return
        top_fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
        try:
            self.copy_tree(top_fd, entry)
            for parts, folder in reversed(self._folders):
                self.finish_folder(top_fd, parts, folder)
        finally:
            os.close(top_fd)

    def copy_tree(self, top_fd: int, top: Entry) -> None:
        """Walk the tree top-down; each folder's entries are created inside its open fd."""
        parts_of = {top.path: ()}
        self._folders.append(((), top))
        for dirpath, entries in self.fs.walk(top.path, onerror=self.walk_error):
            parts = parts_of[dirpath]
            try:
                folder_fd = _open_beneath(top_fd, parts)
            except OSError as exc:
                self.problem(dirpath, f"cannot open the copied folder: {exc.strerror}")
                entries.clear()
                continue
            try:
                descend = [e for e in entries
                           if self.copy_entry(folder_fd, e) and e.kind == "dir"]
            finally:
                os.close(folder_fd)
            for entry in descend:
                parts_of[entry.path] = parts + (entry.name,)
                self._folders.append((parts + (entry.name,), entry))
            entries[:] = descend

    def walk_error(self, exc: DiskvaultError) -> None:
        self.report.problems.append(PullProblem(None, str(exc)))

    def copy_entry(self, folder_fd: int, entry: Entry, name: str | None = None) -> bool:
        """Create one entry (a folder's contents come later); False if refused or failed."""
        name = entry.name if name is None else name
        refusal = name_problem(name)
        if refusal is None and entry.kind == "symlink":
            refusal = symlink_problem(entry.symlink_target)
        if refusal is None and entry.kind in ("device", "other"):
            refusal = f"refused: {entry.kind} files are not copied (only files, folders, symlinks)"
        if refusal:
            self.problem(entry.path, refusal)
            return False
        try:
            if entry.kind == "file":
                return self.copy_file(folder_fd, name, entry)
            if entry.kind == "symlink":
                return self.make_symlink(folder_fd, name, entry)
            return self.make_folder(folder_fd, name, entry)
        except (OSError, OverflowError, ValueError) as exc:  # ValueError: e.g. an unencodable name
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            self.problem(entry.path, f"cannot create it: {reason}")
            return False

    def make_folder(self, folder_fd: int, name: str, entry: Entry) -> bool:
        """Create (or merge into an existing real) folder, private until its contents are in."""
        try:
            os.mkdir(name, 0o700, dir_fd=folder_fd)
        except FileExistsError:
            existing = os.stat(name, dir_fd=folder_fd, follow_symlinks=False)
            if not stat.S_ISDIR(existing.st_mode):
                self.problem(entry.path, "refused: something that is not a folder exists there")
                return False
        self.report.folders += 1
        return True

    def finish_folder(self, top_fd: int, parts: tuple[str, ...], entry: Entry) -> None:
        """Owner, mode and times of a folder, applied after its contents (deepest first)."""
        try:
            fd = _open_beneath(top_fd, parts)
            try:
                self.apply_metadata(fd, entry)
            finally:
                os.close(fd)
        except OSError as exc:
            self.problem(entry.path, f"cannot set owner, mode or times: {exc.strerror}")

    def copy_file(self, folder_fd: int, name: str, entry: Entry) -> bool:
        fd = os.open(name, _NEW_FILE_FLAGS, 0o600, dir_fd=folder_fd)
        try:
            self.stream_content(fd, entry)
            self.apply_metadata(fd, entry)
        except (DiskvaultError, OSError, OverflowError) as exc:
            os.close(fd)
            os.unlink(name, dir_fd=folder_fd)  # never leave a partial or wrong copy behind
            if isinstance(exc, DiskvaultError):  # already names the volume and path
                self.report.problems.append(PullProblem(entry.path, str(exc)))
            else:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                self.problem(entry.path, f"cannot copy it: {reason}")
            return False
        os.close(fd)
        self.report.files += 1
        return True

    def stream_content(self, fd: int, entry: Entry) -> None:
        """Copy in chunks; holes are skipped unread, all-zero chunks left unwritten, so sparse
        files stay sparse (and a hostile terabyte-sized hole costs nothing)."""
        done_before = self.report.bytes
        with self.fs.open(entry.path) as reader:
            position = 0
            while (position := reader.seek_data(position)) < reader.size:
                reader.seek(position)
                chunk = reader.read(CHUNK_BYTES)
                _write_nonzero(fd, chunk, position)
                position += len(chunk)
                if self.progress:
                    self.progress(
                        PullProgress(self.report.files, done_before + position, entry.path))
        os.ftruncate(fd, entry.size)
        self.report.bytes = done_before + entry.size

    def make_symlink(self, folder_fd: int, name: str, entry: Entry) -> bool:
        os.symlink(entry.symlink_target, name, dir_fd=folder_fd)
        if self.as_root and entry.uid is not None:
            gid = entry.gid if entry.gid is not None else -1
            os.chown(name, entry.uid, gid, dir_fd=folder_fd, follow_symlinks=False)
        os.utime(name, ns=(entry.atime_ns, entry.mtime_ns), dir_fd=folder_fd,
                 follow_symlinks=False)
        self.report.symlinks += 1
        return True

    def apply_metadata(self, fd: int, entry: Entry) -> None:
        """Owner first (chown clears set-id bits), then mode, then times."""
        keep_owner = self.as_root and entry.uid is not None
        if keep_owner:
            os.fchown(fd, entry.uid, entry.gid if entry.gid is not None else -1)
        os.fchmod(fd, kept_mode(entry.mode, keep_owner, self.keep_set_id))
        os.utime(fd, ns=(entry.atime_ns, entry.mtime_ns))


def _open_beneath(top_fd: int, parts: tuple[str, ...]) -> int:
    """Open a folder below `top_fd` one component at a time, never following a symlink."""
    fd = os.dup(top_fd)
    for part in parts:
        try:
            next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
        finally:
            os.close(fd)
        fd = next_fd
    return fd


def _write_nonzero(fd: int, chunk: bytes, offset: int) -> None:
    """Write the chunk's non-zero 64 KiB blocks; zero blocks stay holes in the copy."""
    view = memoryview(chunk)
    for start in range(0, len(chunk), HOLE_BYTES):
        block = view[start:start + HOLE_BYTES]
        if block != _ZEROS[: len(block)]:
            _write_all(fd, block, offset + start)


def _write_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written
