"""Where pack bytes live. Local folder now; an object store can implement the same
narrow interface (create, read a range, size, list, delete) later."""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

from .durable import (FOLDER_FLAGS, TEMP_TOKEN_HEX_DIGITS, TMP_SUFFIX, create_exclusive,
                      fsync_dir, make_private_folder, temp_name)
from ..errors import MissingChunk

PACK_SUFFIX = ".pack"
PACK_ID_HEX_DIGITS = 32
FOLDER_HEX_DIGITS = 2

log = logging.getLogger(__name__)


def is_pack_id(text: str) -> bool:
    return _is_hex(text, PACK_ID_HEX_DIGITS)


def _is_hex(text: str, digits: int) -> bool:
    return len(text) == digits and all(c in "0123456789abcdef" for c in text)


def _is_unfinished(path: Path) -> bool:
    """A pack's temp file, ``.<pack id>.pack.<16 hex>.tmp`` (durable.temp_name)."""
    name = path.name
    if not (name.startswith(".") and name.endswith(TMP_SUFFIX)):
        return False
    final_name, _, token = name[1: -len(TMP_SUFFIX)].rpartition(".")
    return (_is_hex(token, TEMP_TOKEN_HEX_DIGITS) and final_name.endswith(PACK_SUFFIX)
            and is_pack_id(final_name[: -len(PACK_SUFFIX)]) and path.is_file())


class PackSink:
    """A pack being written: appended to, then made durable under its final name at once.
    Its temp file is created like every other file (durable.create_exclusive); a failed
    finish removes it."""

    def __init__(self, final_path: Path):
        self.final_path = final_path
        make_private_folder(final_path.parent.parent)
        make_private_folder(final_path.parent)
        self._folder_fd = os.open(final_path.parent, FOLDER_FLAGS)
        self.tmp_name = temp_name(final_path.name)
        try:
            fd = create_exclusive(self._folder_fd, self.tmp_name)
        except BaseException:
            os.close(self._folder_fd)
            raise
        self._file = open(fd, "wb", buffering=1024 * 1024)

    def write(self, data) -> None:
        self._file.write(data)

    def finish(self) -> None:
        """fsync the data, then rename into place and fsync the folder: durable before use."""
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            os.rename(self.tmp_name, self.final_path.name, src_dir_fd=self._folder_fd,
                      dst_dir_fd=self._folder_fd)
            os.fsync(self._folder_fd)
        finally:
            self.abort()  # after the rename, only closes the folder

    def abort(self) -> None:
        """Close and remove the temp file; safe to call again, or after a failed finish."""
        if self._folder_fd < 0:
            return
        try:
            self._file.close()
        except OSError:
            pass  # closing flushes; a full disk fails here too, and the file goes anyway
        try:
            os.unlink(self.tmp_name, dir_fd=self._folder_fd)
        except FileNotFoundError:
            pass
        os.close(self._folder_fd)
        self._folder_fd = -1


class LocalBackend:
    """Packs as files in ``root/<first two hex digits>/<pack id>.pack``."""

    def __init__(self, root: Path, open_files: int = 64):
        self.root = Path(root)
        self._fds: OrderedDict[str, int] = OrderedDict()
        self._max_fds = open_files
        self._lock = threading.Lock()
        self._strays_reported = False

    def path(self, pack_id: str) -> Path:
        return self.root / pack_id[:2] / f"{pack_id}{PACK_SUFFIX}"

    def create(self, pack_id: str) -> PackSink:
        return PackSink(self.path(pack_id))

    def _fd(self, pack_id: str) -> int:
        with self._lock:
            fd = self._fds.get(pack_id)
            if fd is not None:
                self._fds.move_to_end(pack_id)
                return fd
            try:
                fd = os.open(self.path(pack_id), os.O_RDONLY)
            except FileNotFoundError:
                raise MissingChunk(f"pack {pack_id} is missing from the repository") from None
            self._fds[pack_id] = fd
            while len(self._fds) > self._max_fds:
                _, old = self._fds.popitem(last=False)
                os.close(old)
            return fd

    def read(self, pack_id: str, offset: int, length: int) -> bytes:
        return os.pread(self._fd(pack_id), length, offset)

    def advise_will_need(self, pack_id: str, offset: int, length: int) -> None:
        os.posix_fadvise(self._fd(pack_id), offset, length, os.POSIX_FADV_WILLNEED)

    def size(self, pack_id: str) -> int:
        return self.path(pack_id).stat().st_size

    def list(self) -> Iterator[str]:
        """The ids of the packs, each in its own folder. Anything else under the pack
        folder is not ours: ignored, with one warning per process (check lists it)."""
        pack_ids, strays = self._scan()
        if strays and not self._strays_reported:
            self._strays_reported = True
            log.warning("%d entries under %s are not diskvault packs and are left alone "
                        "(%s); 'diskvault check' lists them", len(strays), self.root,
                        ", ".join(str(p) for p in strays[:3]) + (", ..." * (len(strays) > 3)))
        yield from pack_ids

    def strays(self) -> list[Path]:
        """Entries under the pack folder that are neither packs in their own folder nor
        temp files of packs being written. The caller reports them: list() then stays
        quiet about them."""
        self._strays_reported = True
        return self._scan()[1]

    def _scan(self) -> tuple[list[str], list[Path]]:
        pack_ids: list[str] = []
        strays: list[Path] = []
        if not self.root.is_dir():
            return pack_ids, strays
        for folder in sorted(self.root.iterdir()):
            if not (_is_hex(folder.name, FOLDER_HEX_DIGITS) and folder.is_dir()):
                strays.append(folder)
                continue
            for entry in sorted(folder.iterdir()):
                pack_id = entry.name.removesuffix(PACK_SUFFIX)
                if (entry.name.endswith(PACK_SUFFIX) and is_pack_id(pack_id)
                        and pack_id.startswith(folder.name) and entry.is_file()):
                    pack_ids.append(pack_id)
                elif not _is_unfinished(entry):
                    strays.append(entry)
        return pack_ids, strays

    def list_unfinished(self) -> Iterator[Path]:
        """Temp files of packs whose writer died before finishing them."""
        if self.root.is_dir():
            yield from (path for path in self.root.glob(f"*/.*{TMP_SUFFIX}")
                        if _is_unfinished(path))

    def delete(self, pack_id: str) -> None:
        self.forget(pack_id)
        path = self.path(pack_id)
        path.unlink(missing_ok=True)
        fsync_dir(path.parent)

    def set_aside(self, pack_id: str, folder: Path) -> None:
        """Move a damaged pack out of the pack folders into ``folder`` (repair): kept for
        inspection, never listed or read again."""
        self.forget(pack_id)
        path = self.path(pack_id)
        make_private_folder(folder)
        os.rename(path, folder / path.name)
        fsync_dir(folder)
        fsync_dir(path.parent)

    def forget(self, pack_id: str) -> None:
        """Close a cached handle, so that a replaced or deleted pack is reopened."""
        with self._lock:
            fd = self._fds.pop(pack_id, None)
        if fd is not None:
            os.close(fd)

    def close(self) -> None:
        with self._lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()
