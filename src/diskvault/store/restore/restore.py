"""Restore, cat and whole-image reads: manifest spans -> the read plan (windows of pack
ranges fetched, decompressed and verified on the pool) -> writes: a full restore's on the
pool, a few chunks at a time as they are verified (image_writes.py); a stream's and a
patch's in image order, in large sequential runs. Zero runs are skipped (a new sparse file)
or written (block device, stream, patched file).
Onto an existing target, only the entries it does not already hold are read and written."""

from __future__ import annotations

import fcntl
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ...errors import BadInput, TargetExists
from ..format.manifest import Span
from ..format.snapshots import SnapshotRecord
from ..host.devices import open_unused_device
from ..host.durable import atomic_replacement, remove_leftover_temps, write_all
from ..read.chunk_reader import ChunkReader
from ..read.diff import changed_ranges
from ..read.image_map import image_spans
from ..read.read_plan import Deliver, planned_pieces
from .delta import DeltaCounts, differing_spans, spans_within
from .file_clone import clone_file
from .image_writes import (RUN_BUFFERS, RUN_BYTES, ImageWrites, Pieces, Progress,
                           RunWriter, zero_pieces)
from .restore_marks import interrupted_restore, replacing, restore_in_progress

FETCH_WINDOW = 64  # chunks in flight for flows that fetch chunk by chunk (copy)
PIPE_BYTES = 1024 * 1024  # cat grows its output pipe to this (Linux's default most)
PATCH_BLOCK_BYTES = 4096  # a delta restore compares and writes whole blocks of this size


@dataclass
class RestoreResult(DeltaCounts):
    """DeltaCounts, plus how a patched file's copy of the old target was made ("reflink" or
    "copy", with the bytes an in-kernel copy wrote) and any interrupted earlier restore."""

    method: str = "full"  # "full" or "delta"
    known_snapshot: str | None = None  # compared by manifests: the target held this one
    clone: str | None = None
    cloned_bytes: int = 0
    interrupted_before: str | None = None


def image_pieces(chunks: ChunkReader, record: SnapshotRecord, pool: Executor,
                 spans: Iterable[Span] | None = None, deliver: Deliver | None = None) -> Pieces:
    """(span, verified bytes) in image order, or (span, None) for a zero run: every span of
    the snapshot, or only ``spans``. With ``deliver``, the bytes go to it on the pool
    instead (read_plan.planned_pieces)."""
    if spans is None:
        chunks.index.read_ahead()  # every chunk of the image is located
    return planned_pieces(chunks, record, image_spans(chunks, record) if spans is None
                          else spans, pool, deliver=deliver)


def write_image(fd: int, chunks: ChunkReader, record: SnapshotRecord, pool: Executor,
                write_zeros: bool, progress: Progress | None = None) -> int:
    """Write the whole snapshot into ``fd``; zero runs, and zero blocks inside chunks, only
    if ``write_zeros`` (image_writes.ImageWrites). Bytes written."""
    writes = ImageWrites(fd, write_zeros)
    writes.follow(image_pieces(chunks, record, pool, deliver=writes.deliver), progress)
    return writes.written


def write_stream(pieces: Pieces, out: BinaryIO, progress: Progress | None = None) -> None:
    """The whole image, zeros included, to a stream (``cat``): straight to its file
    descriptor in gathered runs when it has one (a pipe, a file), else through ``write``."""
    try:
        fd = out.fileno()
    except (AttributeError, OSError):  # io.UnsupportedOperation is an OSError
        fd = None
    out.flush()  # anything the stream holds goes first
    runs = _StreamRuns(fd, out.write)
    for span, data in pieces:
        for piece in (zero_pieces(span.length) if data is None else (data,)):
            runs.add(piece)
        if progress:
            progress(span.offset + span.length)
    runs.flush()
    out.flush()


class _StreamRuns:
    """Pieces gathered into one writev of up to RUN_BYTES: a pipe takes a chunk of 64 KiB
    per write otherwise, a wake-up of its reader and a return to Python each. A pipe is
    first grown to PIPE_BYTES, so the reader drains a run while the next one gathers."""

    def __init__(self, fd: int | None, write: Callable[[bytes], object]):
        self.fd = fd
        self.write = write
        self.buffers: list = []
        self.size = 0
        if fd is not None and stat.S_ISFIFO(os.fstat(fd).st_mode):
            _grow_pipe(fd)

    def add(self, data) -> None:
        self.buffers.append(data)
        self.size += len(data)
        if self.size >= RUN_BYTES or len(self.buffers) >= RUN_BUFFERS:
            self.flush()

    def flush(self) -> None:
        if self.fd is None:
            for buffer in self.buffers:
                self.write(buffer)
        elif self.buffers:
            done = os.writev(self.fd, self.buffers)
            if done < self.size:  # cut short (a signal): the rest as it comes
                write_all(self.fd, b"".join(self.buffers)[done:])
        self.buffers = []
        self.size = 0


def _grow_pipe(fd: int) -> None:
    """Make the pipe at ``fd`` hold PIPE_BYTES, if it holds less and the system allows."""
    try:
        if fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ) < PIPE_BYTES:
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    except OSError:  # over the user's pipe allowance (pipe-user-pages-soft): as it is
        pass


def restore_to_path(chunks: ChunkReader, record: SnapshotRecord, pool: Executor, target: Path,
                    force: bool, full: bool = False, in_place: bool = False,
                    progress: Progress | None = None,
                    held: SnapshotRecord | None = None) -> RestoreResult:
    """Restore into a new sparse file (via a temp file and rename: all or nothing, never
    through a link), over an existing file (``force``: a copy of it patched where it differs,
    then renamed over it), or onto a block device (``force``: patched in place; refused while
    it or a partition of it is in use). ``full`` rewrites every byte instead of comparing;
    ``in_place`` patches an existing file where it is (no copy, not atomic, marked like a
    device). ``held``: the snapshot an existing file is known to hold unchanged; only the
    ranges where its manifest differs from ``record``'s are compared."""
    device = _block_device(target)
    if device is None and os.path.islink(target):
        raise BadInput(f"restore target {target} is a symbolic link (to "
                       f"{os.readlink(target)}); restore is never written through a link: "
                       f"name the file itself, or remove the link")
    if os.path.lexists(target) and not force:
        raise TargetExists(f"restore target {target} exists; add --force to overwrite it "
                           f"(only what differs is written)")
    if device is not None:
        return _restore_to_device(chunks, record, pool, device, full, progress)
    if os.path.lexists(target) and not target.is_file():
        raise BadInput(f"restore target {target} is neither a file nor a block device")
    if not target.parent.is_dir():
        raise BadInput(f"restore target folder {target.parent} does not exist")
    # The folder as the user named it (links in it followed); inside it, nothing is.
    real_target = target.parent.resolve() / target.name
    remove_leftover_temps(real_target)
    if os.path.lexists(real_target) and in_place:
        return _patch_file_in_place(chunks, record, pool, real_target, progress, held)
    with replacing(real_target) as interrupted:
        if os.path.lexists(real_target) and not full:
            result = _patch_file(chunks, record, pool, real_target, progress, held)
        else:
            with atomic_replacement(real_target) as fd:
                os.ftruncate(fd, record.size)  # all holes; only data is written
                result = RestoreResult(written_bytes=write_image(fd, chunks, record, pool,
                                                                 False, progress))
    result.interrupted_before = interrupted
    return result


def _patch_file(chunks: ChunkReader, record: SnapshotRecord, pool: Executor, path: Path,
                progress: Progress | None, held: SnapshotRecord | None) -> RestoreResult:
    """A copy of the old file (reflink where the filesystem can), patched where it differs
    from the snapshot, fsynced, renamed over it: a kill leaves the old file or the new."""
    old_fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        mode = stat.S_IMODE(os.fstat(old_fd).st_mode)
        result = RestoreResult(method="delta")
        with atomic_replacement(path, mode) as fd:
            result.clone, result.cloned_bytes = clone_file(old_fd, fd)
            os.ftruncate(fd, record.size)
            result.written_bytes = _patch(chunks, record, pool, old_fd, fd, result, progress,
                                          held)
        return result
    finally:
        os.close(old_fd)


def _patch(chunks: ChunkReader, record: SnapshotRecord, pool: Executor, read_fd: int,
           write_fd: int, counts: RestoreResult, progress: Progress | None,
           held: SnapshotRecord | None = None) -> int:
    """Write to ``write_fd`` the blocks of the entries that ``read_fd`` (the old target)
    does not hold; bytes written. With ``held`` (what the old target holds), only the
    entries in ranges where the two manifests differ are compared."""
    spans = image_spans(chunks, record)
    if held is not None:
        spans = spans_within(spans, changed_ranges(held, record, chunks.get))
        counts.known_snapshot = held.short_id
    spans = differing_spans(read_fd, spans, chunks.codec.chunk_id, pool, counts, progress)
    writer = RunWriter(write_fd)
    for span, data in image_pieces(chunks, record, pool, spans):
        parts = zero_pieces(span.length) if data is None else (memoryview(data),)
        offset = span.offset
        for new in parts:
            for start, run in differing_blocks(offset, os.pread(read_fd, len(new), offset),
                                               bytes(new)):
                writer.add(start, run)
            offset += len(new)
    writer.flush()
    return writer.written


def differing_blocks(offset: int, old: bytes, new: bytes) -> Iterator[tuple[int, memoryview]]:
    """(offset, bytes) runs of ``new`` that differ from ``old`` (read at ``offset``, maybe
    shorter), compared per PATCH_BLOCK_BYTES block of the target: a chunk that differs is
    usually a few changed blocks, and only those are written."""
    view = memoryview(new)
    run_start = None
    position = 0
    while position < len(new):
        end = min(len(new), (offset + position) // PATCH_BLOCK_BYTES * PATCH_BLOCK_BYTES
                  + PATCH_BLOCK_BYTES - offset)
        if old[position:end] != new[position:end]:
            run_start = position if run_start is None else run_start
        elif run_start is not None:
            yield offset + run_start, view[run_start:position]
            run_start = None
        position = end
    if run_start is not None:
        yield offset + run_start, view[run_start:]


def _block_device(target: Path) -> Path | None:
    """The block device ``target`` names, itself or through links (/dev/disk/by-id/...);
    links are followed only when they end at a block device."""
    try:
        return target.resolve() if stat.S_ISBLK(target.stat().st_mode) else None
    except OSError:
        return None


def _restore_to_device(chunks: ChunkReader, record: SnapshotRecord, pool: Executor,
                       device: Path, full: bool, progress: Progress | None) -> RestoreResult:
    fd = open_unused_device(device)
    try:
        device_size = os.lseek(fd, 0, os.SEEK_END)
        if device_size < record.size:
            raise BadInput(f"block device {device} holds {device_size} bytes, smaller than the "
                           f"snapshot's {record.size}")
        return _restore_in_place(chunks, record, pool, fd, device, full, progress)
    finally:
        os.close(fd)


def _patch_file_in_place(chunks: ChunkReader, record: SnapshotRecord, pool: Executor,
                         path: Path, progress: Progress | None,
                         held: SnapshotRecord | None) -> RestoreResult:
    """The file patched where it is: only the differing blocks written, no copy; not atomic,
    so marked in progress like a device."""
    fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        return _restore_in_place(chunks, record, pool, fd, path, False, progress,
                                 size=record.size, held=held)
    finally:
        os.close(fd)


def _restore_in_place(chunks: ChunkReader, record: SnapshotRecord, pool: Executor, fd: int,
                      path: Path, full: bool, progress: Progress | None,
                      size: int | None = None,
                      held: SnapshotRecord | None = None) -> RestoreResult:
    """Write the snapshot into ``fd`` where it is (cut to ``size`` if given), marked in
    progress from before the first write until it is fsynced."""
    result = RestoreResult(method="full" if full else "delta",
                           interrupted_before=interrupted_restore(path))
    with restore_in_progress(path, record):
        if full:
            result.written_bytes = write_image(fd, chunks, record, pool, True, progress)
        else:
            result.written_bytes = _patch(chunks, record, pool, fd, fd, result, progress,
                                          held)
        if size is not None:
            os.ftruncate(fd, size)
        os.fsync(fd)
    return result
