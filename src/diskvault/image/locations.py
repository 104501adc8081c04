"""Naming a filesystem inside an image: 'p2:/etc/nginx', 'vg0/root:/srv', or '/etc' for a
whole-disk filesystem; opening it; and surveying what volumes an image holds (`diskvault ls`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import BinaryIO

from ..errors import BadInput, DiskvaultError, UnknownFilesystem
from .filesystems import Filesystem, open_filesystem
from .volumes import (LogicalVolume, Partition, PartitionView, describe_partitions,
                      list_logical_volumes, list_partitions, open_logical_volume)

_LOCATION = re.compile(r"[pP](\d+)(?::(.*))?", re.DOTALL)
_LVM_NAME = r"[A-Za-z0-9+_.][A-Za-z0-9+_.-]*"
_LOGICAL_VOLUME = re.compile(rf"({_LVM_NAME}/{_LVM_NAME}):(.*)", re.DOTALL)


def parse_location(text: str) -> tuple[int | str | None, str]:
    """Which volume and path a location names. 'p2:/etc/nginx' -> (2, '/etc/nginx'); 'p2' or
    'p2:' -> (2, '/'); 'vg0/root:/etc' -> ('vg0/root', '/etc') for an LVM2 logical volume;
    '/etc' -> (None, '/etc'), the whole-disk filesystem. Paths are made absolute.
    """
    match = _LOCATION.fullmatch(text)
    if match:
        number = int(match[1])
        if number < 1:
            raise BadInput(f"partition numbers start at 1 (got p{number}:)")
        return number, "/" + (match[2] or "").lstrip("/")
    match = _LOGICAL_VOLUME.fullmatch(text)
    if match:
        return match[1], "/" + match[2].lstrip("/")
    return None, "/" + text.lstrip("/")


def open_location(fileobj: BinaryIO, location: str) -> tuple[Filesystem, str]:
    """The filesystem a location names inside an image, and the path within it."""
    volume, path = parse_location(location)
    if isinstance(volume, str):
        stream = open_logical_volume(fileobj, volume)
        return open_filesystem(stream, f"logical volume {volume}"), path
    partitions = list_partitions(fileobj)
    if volume is None:
        if partitions:
            raise BadInput(f"the image has a partition table: name a partition, as in "
                           f"p{partitions[0].number}:{path} ({describe_partitions(partitions)})")
        return _open_or_hint(fileobj, fileobj, "the image"), path
    for partition in partitions:
        if partition.number == volume:
            view = PartitionView(fileobj, partition.offset, partition.size)
            return _open_or_hint(fileobj, view, f"partition {volume}"), path
    raise BadInput(f"the image has no partition {volume}; {describe_partitions(partitions)}")


def _open_or_hint(image: BinaryIO, volume: BinaryIO, where: str) -> Filesystem:
    """open_filesystem; for an LVM2 physical volume, the error names its logical volumes."""
    try:
        return open_filesystem(volume, where)
    except UnknownFilesystem as exc:
        if "LVM2" not in str(exc):
            raise
        names = ", ".join(v.name for v in list_logical_volumes(image)) or "none"
        raise UnknownFilesystem(f"{where} is an LVM2 physical volume: name one of its logical "
                                f"volumes instead, as in vg/lv:/path (logical volumes: {names})"
                                ) from exc


@dataclass(frozen=True)
class VolumeSummary:
    """What `diskvault ls IMAGE` shows per volume: the partition (None for a whole-disk
    filesystem), its filesystem kind and label, or why none could be opened."""

    partition: Partition | None
    filesystem: str | None
    label: str | None
    problem: str | None
    logical_volume: LogicalVolume | None = None  # set for LVM2 logical volumes ('vg/lv:')


def survey_image(fileobj: BinaryIO) -> list[VolumeSummary]:
    """Every volume of an image (partitions, then LVM2 logical volumes) and what it holds; one
    unreadable volume does not stop the rest."""
    partitions = list_partitions(fileobj)
    if not partitions:
        result = [_summarize(None, fileobj, "the image")]
    else:
        result = [_summarize(p, PartitionView(fileobj, p.offset, p.size), f"partition {p.number}")
                  for p in partitions]
    try:
        volumes = list_logical_volumes(fileobj)
    except DiskvaultError as exc:
        return result + [VolumeSummary(None, None, None, str(exc))]
    for volume in volumes:
        try:
            summary = _summarize(None, open_logical_volume(fileobj, volume.name),
                                 f"logical volume {volume.name}")
        except DiskvaultError as exc:
            summary = VolumeSummary(None, None, None, str(exc))
        result.append(replace(summary, logical_volume=volume))
    return result


def _summarize(partition: Partition | None, volume: BinaryIO, where: str) -> VolumeSummary:
    try:
        fs = open_filesystem(volume, where)
    except UnknownFilesystem as exc:
        if "LVM2 physical volume" in str(exc):
            problem = f"{where} is an LVM2 physical volume (its logical volumes follow as vg/lv)"
            return VolumeSummary(partition, None, None, problem)
        return VolumeSummary(partition, None, None, str(exc))
    except DiskvaultError as exc:
        return VolumeSummary(partition, None, None, str(exc))
    return VolumeSummary(partition, fs.kind, fs.label, None)
