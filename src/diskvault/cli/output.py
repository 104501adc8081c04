"""Formatting for people (sizes, rates, tables) and for scripts (JSON)."""

from __future__ import annotations

import json
import sys

import click

UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]


def human_bytes(size: float) -> str:
    value = float(size)
    for unit in UNITS:
        if abs(value) < 1024 or unit == UNITS[-1]:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def human_rate(size: float, seconds: float) -> str:
    if seconds <= 0:
        return "-"
    return f"{size / seconds / 1e6:.0f} MB/s"


def ratio(numerator: float, denominator: float) -> str:
    return f"{numerator / denominator:.1f}x" if denominator else "-"


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
    rows = [[r.short_id, r.name, f"{r.time:%Y-%m-%d %H:%M:%S}", human_bytes(r.size),
             human_bytes(r.stats.stored_bytes), ",".join(r.tags)] for r in records]
    print_table(["ID", "NAME", "TIME (UTC)", "SIZE", "NEW STORED", "TAGS"], rows,
                right=frozenset({3, 4}))


def warn(message: str) -> None:
    click.echo(f"diskvault: warning: {message}", err=True)


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()
