"""mfusepy's FUSE with the one libfuse 3 call it does not pass on: lseek.

mfusepy 3.1 declares libfuse 3's ``lseek`` in its operations table but has no wrapper for
it; this adds one, so that SEEK_DATA/SEEK_HOLE reach the mount and a copy can skip holes
without reading them. Imported only once preflight.load_fuse_binding has loaded mfusepy.
"""

from __future__ import annotations

from mfusepy import FUSE


class SeekingFUSE(FUSE):
    """``Operations.lseek(path, offset, whence, fh)`` answers the kernel's lseek."""

    def lseek(self, path: bytes | None, offset: int, whence: int, file_info) -> int:
        name = None if path is None else path.decode(self.encoding, self.errors)
        return self.operations.lseek(name, offset, whence, file_info.contents.fh)
