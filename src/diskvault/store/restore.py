"""Restore, cat and whole-image reads: manifest spans -> parallel verified fetches ->
in-order writes. Zero runs are skipped (sparse file) or written (block device, stream)."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from pathlib import Path
from typing import BinaryIO

from ..errors import BadInput, CorruptData, TargetExists
from .chunks import ChunkReader
from .devices import open_unused_device
from .durable import atomic_replacement, remove_leftover_temps, write_all
from .image_map import damage_context, image_spans
from .index import ChunkLocation
from .manifest import Span
from .pipeline import ordered_map
from .snapshots import SnapshotRecord

ZERO_WRITE_BYTES = 1024 * 1024
FETCH_WINDOW = 64  # chunks announced to the kernel and queued ahead of the writer
_ZEROS = bytes(ZERO_WRITE_BYTES)
Progress = Callable[[int], None]


def image_pieces(chunks: ChunkReader, record: SnapshotRecord,
                 pool: Executor) -> Iterator[tuple[Span, bytes | None]]:
    """(span, verified bytes) in image order, or (span, None) for a zero run; several
    chunks are fetched and decompressed at once on ``pool``."""

    def announced(spans: Iterator[Span]) -> Iterator[tuple[Span, ChunkLocation | None]]:
        for span in spans:
            try:
                yield span, None if span.digest is None else chunks.announce(span.digest)
            except CorruptData as error:
                raise damage_context(record, span.offset, error) from None

    def fetch(item: tuple[Span, ChunkLocation | None]) -> bytes | None:
        span, location = item
        if location is None:
            return None
        try:
            return chunks.get(span.digest, location)
        except CorruptData as error:
            raise damage_context(record, span.offset, error) from None

    pieces = ordered_map(pool, fetch, announced(image_spans(chunks, record)),
                         window=FETCH_WINDOW)
    for (span, _), data in pieces:
        yield span, data


def write_stream(pieces: Iterator[tuple[Span, bytes | None]], out: BinaryIO,
                 progress: Progress | None = None) -> None:
    """The whole image, zeros included, to a stream (``cat``)."""
    for span, data in pieces:
        if data is None:
            remaining = span.length
            while remaining:
                step = min(remaining, ZERO_WRITE_BYTES)
                out.write(_ZEROS[:step])
                remaining -= step
        else:
            out.write(data)
        if progress:
            progress(span.offset + span.length)
    out.flush()


def _write_pieces(fd: int, pieces, write_zeros: bool, progress: Progress | None) -> None:
    for span, data in pieces:
        if data is not None:
            write_all(fd, data, span.offset)
        elif write_zeros:
            for start in range(0, span.length, ZERO_WRITE_BYTES):
                write_all(fd, _ZEROS[: min(ZERO_WRITE_BYTES, span.length - start)],
                          span.offset + start)
        if progress:
            progress(span.offset + span.length)


def restore_to_path(pieces, record: SnapshotRecord, target: Path, force: bool,
                    progress: Progress | None = None) -> None:
    """Restore into a new sparse file (via a temp file and rename: all or nothing, never
    through a link), over an existing file (``force``), or onto a block device (``force``;
    every byte written; refused while it or a partition of it is in use)."""
    device = _block_device(target)
    if device is None and os.path.islink(target):
        raise BadInput(f"restore target {target} is a symbolic link (to "
                       f"{os.readlink(target)}); restore is never written through a link: "
                       f"name the file itself, or remove the link")
    if os.path.lexists(target) and not force:
        raise TargetExists(f"restore target {target} exists; add --force to overwrite it")
    if device is not None:
        _restore_to_device(pieces, record, device, progress)
        return
    if os.path.lexists(target) and not target.is_file():
        raise BadInput(f"restore target {target} is neither a file nor a block device")
    if not target.parent.is_dir():
        raise BadInput(f"restore target folder {target.parent} does not exist")
    # The folder as the user named it (links in it followed); inside it, nothing is.
    real_target = target.parent.resolve() / target.name
    remove_leftover_temps(real_target)
    with atomic_replacement(real_target) as fd:
        os.ftruncate(fd, record.size)  # all holes; only data is written
        _write_pieces(fd, pieces, write_zeros=False, progress=progress)


def _block_device(target: Path) -> Path | None:
    """The block device ``target`` names, itself or through links (/dev/disk/by-id/...);
    links are followed only when they end at a block device."""
    try:
        return target.resolve() if stat.S_ISBLK(target.stat().st_mode) else None
    except OSError:
        return None


def _restore_to_device(pieces, record: SnapshotRecord, device: Path,
                       progress: Progress | None) -> None:
    fd = open_unused_device(device)
    try:
        device_size = os.lseek(fd, 0, os.SEEK_END)
        if device_size < record.size:
            raise BadInput(f"block device {device} holds {device_size} bytes, smaller than the "
                           f"snapshot's {record.size}")
        _write_pieces(fd, pieces, write_zeros=True, progress=progress)
        os.fsync(fd)
    finally:
        os.close(fd)
