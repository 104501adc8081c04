"""Formatting for people (sizes, rates, tables) and for scripts (JSON)."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass

import click

from ...store.format.snapshots import SnapshotRecord
from ...store.repository import RepositoryTotals

UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]


def human_bytes(size: float) -> str:
    value = float(size)
    for unit in UNITS:
        if abs(value) < 1024 or unit == UNITS[-1]:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def count_of(number: int, noun: str) -> str:
    """'1 pack', '3 packs'."""
    return f"{number} {noun}" + ("" if number == 1 else "s")


def snapshot_when(record: SnapshotRecord) -> str:
    return f"{record.time:%Y-%m-%d %H:%M:%S}"


def human_rate(size: float, seconds: float) -> str:
    if seconds <= 0:
        return "-"
    return f"{size / seconds / 1e6:.0f} MB/s"


@dataclass(frozen=True)
class Space:
    """Images against the bytes that storing them took. Zero runs (holes, all-zero chunks)
    are never stored and any sparse-aware copy skips them too, so they are counted apart,
    never as a saving: the one ratio diskvault reports is data bytes (image bytes minus
    zero runs) per stored byte."""

    image_bytes: int
    zero_bytes: int
    stored_bytes: int

    @property
    def data_bytes(self) -> int:
        return self.image_bytes - self.zero_bytes

    @property
    def data_per_stored(self) -> float | None:
        return round(self.data_bytes / self.stored_bytes, 2) if self.stored_bytes else None

    @property
    def ratio(self) -> str:
        return "-" if self.data_per_stored is None else f"{self.data_per_stored:.1f}x"

    @property
    def parts(self) -> str:
        return f"{human_bytes(self.data_bytes)} data + {human_bytes(self.zero_bytes)} zeros"

    def to_json(self) -> dict:
        return {"image_bytes": self.image_bytes, "zero_bytes": self.zero_bytes,
                "data_bytes": self.data_bytes, "stored_bytes": self.stored_bytes,
                "data_per_stored": self.data_per_stored}


def snapshot_space(record: SnapshotRecord) -> Space:
    """A snapshot's data against what its backup newly stored."""
    return Space(record.size, record.stats.zero_bytes, record.stats.stored_bytes)


def repository_space(totals: RepositoryTotals) -> Space:
    """Every snapshot's data against the bytes of every pack."""
    return Space(totals.logical_bytes, totals.zero_bytes, totals.stored_bytes)


def config_json(root, config) -> dict:
    """A repository's fixed settings, as ``init`` and ``info --json`` print them."""
    return {"path": str(root), "format_version": config.version,
            "repository_id": config.repository_id, "chunker": vars(config.chunker),
            "compression": vars(config.compression), "encryption": config.encryption,
            "append_only": config.append_only,
            "object_lock": None if config.object_lock is None else vars(config.object_lock)}


def encryption_label(config) -> str:
    """How a repository is encrypted, in words for ``info`` and ``init``."""
    if config.encrypted:
        return "encrypted: AES-256-GCM, key in the repository (repokey) under a passphrase"
    return "not encrypted"


def snapshot_json(record: SnapshotRecord) -> dict:
    """What ``backup``, ``list`` and ``info --json`` print for a snapshot."""
    return {**record.summary(), "space": snapshot_space(record).to_json()}


def print_json(value) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True))


def print_table(headers: list[str], rows: list[list[str]], right: frozenset[int] = frozenset()
                ) -> None:
    """Plain aligned columns; the columns numbered in ``right`` (numbers) align right."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row)]

    def line(cells: list[str]) -> str:
        return "  ".join(cell.rjust(w) if i in right else cell.ljust(w)
                         for i, (cell, w) in enumerate(zip(cells, widths))).rstrip()

    click.echo(line(headers))
    for row in rows:
        click.echo(line(row))


def print_snapshots(records) -> None:
    """The snapshot table of ``list`` (and the demo)."""
    rows = [[r.short_id, r.name, snapshot_when(r), human_bytes(r.size),
             human_bytes(r.stats.stored_bytes), ",".join(r.tags)] for r in records]
    print_table(["ID", "NAME", "TIME (UTC)", "SIZE", "NEW STORED", "TAGS"], rows,
                right=frozenset({3, 4}))


def warn(message: str) -> None:
    click.echo(f"diskvault: warning: {message}", err=True)


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()
