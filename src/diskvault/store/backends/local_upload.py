"""A streamed upload to a local folder: a temp file, made like every other file, fsynced and
then renamed (or linked) into place, so no one sees an object partial."""

from __future__ import annotations

import os

from ..host.durable import create_exclusive, temp_name


class LocalUpload:
    """A temp file (created like every other file: durable.create_exclusive) renamed into
    place when complete: fsync of the data, rename, fsync of the folder. Unless it may
    ``replace``, it is linked to its name instead, and an existing object stays
    (FileExistsError): how an append-only server completes a client's upload."""

    def __init__(self, folder_fd: int, name: str, replace: bool = True):
        self._folder_fd = folder_fd
        self._name = name
        self._replace = replace
        self._tmp_name = temp_name(name)
        try:
            fd = create_exclusive(folder_fd, self._tmp_name)
        except BaseException:
            os.close(folder_fd)
            raise
        self._file = open(fd, "wb", buffering=1024 * 1024)

    def write(self, data) -> None:
        self._file.write(data)

    def complete(self) -> None:
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            if self._replace:
                os.rename(self._tmp_name, self._name, src_dir_fd=self._folder_fd,
                          dst_dir_fd=self._folder_fd)
            else:
                os.link(self._tmp_name, self._name, src_dir_fd=self._folder_fd,
                        dst_dir_fd=self._folder_fd, follow_symlinks=False)
            os.fsync(self._folder_fd)
        finally:
            self.abort()  # after the rename, only closes the folder; after a link, unlinks

    def abort(self) -> None:
        if self._folder_fd < 0:
            return
        try:
            self._file.close()
        except OSError:
            pass  # closing flushes; a full disk fails here too, and the file goes anyway
        unlink_if_present(self._folder_fd, self._tmp_name)
        os.close(self._folder_fd)
        self._folder_fd = -1


def unlink_if_present(folder_fd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=folder_fd)
    except FileNotFoundError:
        pass
