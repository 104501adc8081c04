"""backup, list, info, restore, cat, diff: making snapshots and reading them back."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import click

from ..errors import CorruptData
from ..store.snapshots import SnapshotRecord
from .common import json_option, lock_wait_option, opened, repo_option
from .output import (config_json, encryption_label, human_bytes, human_rate, print_json,
                     print_snapshots,
                     repository_space, snapshot_json, snapshot_space)
from .progress import ProgressLine

progress_option = click.option(
    "--progress/--no-progress", "show_progress", default=None,
    help="Show a progress line (default: only on a terminal).")


def backup_summary(record: SnapshotRecord) -> str:
    stats = record.stats
    space = snapshot_space(record)
    return (f"snapshot {record.short_id} ({record.name}) saved: {human_bytes(record.size)} image "
            f"= {space.parts}; {human_bytes(stats.bytes_read)} read, "
            f"{human_bytes(stats.new_bytes)} new, {human_bytes(stats.stored_bytes)} stored "
            f"(data/stored {space.ratio}), {stats.duration_s:.1f} s, "
            f"{human_rate(record.size, stats.duration_s)}")


@click.command()
@repo_option
@click.argument("source", type=click.Path(path_type=Path, readable=False))
@click.option("--name", default=None, help="Series name (default: the source's file name).")
@click.option("--tag", "tags", multiple=True, help="A tag to attach (repeatable).")
@json_option
@progress_option
@lock_wait_option
def backup(repo, source: Path, name, tags, as_json, show_progress, lock_wait_s) -> None:
    """Back up an image file or block device as a new snapshot."""
    with opened(repo) as repository:
        size = _source_size(source)
        progress = ProgressLine("backup", size, show_progress)
        try:
            record = repository.backup(source, name, tuple(tags), lock_wait_s, progress)
        finally:
            progress.close()
    if as_json:
        print_json(snapshot_json(record))
    else:
        click.echo(backup_summary(record))


def _source_size(source: Path) -> int:
    """The size for the progress line, without blocking on a FIFO or reading anything."""
    try:
        mode = source.stat().st_mode
        if stat.S_ISREG(mode):
            return source.stat().st_size
        if stat.S_ISBLK(mode):
            fd = os.open(source, os.O_RDONLY | os.O_NONBLOCK)
            try:
                return os.lseek(fd, 0, os.SEEK_END)
            finally:
                os.close(fd)
    except OSError:
        pass  # the store reports the real problem with the source
    return 0


@click.command("list")
@repo_option
@click.option("--name", default=None, help="Only this series.")
@json_option
def list_snapshots(repo, name, as_json) -> None:
    """List snapshots, oldest first."""
    with opened(repo) as repository:
        records, damaged = repository.scan_snapshots()
    records = [r for r in records if r.name == name] if name else records
    if as_json:
        print_json([snapshot_json(r) for r in records])
    else:
        print_snapshots(records)
    if damaged:
        raise CorruptData(f"{len(damaged)} snapshot record(s) could not be read, first: "
                          f"{damaged[0][1]}; run 'diskvault check'")



@click.command()
@repo_option
@click.argument("snapshot", required=False)
@json_option
def info(repo, snapshot, as_json) -> None:
    """Show a snapshot's sizes and dedup figures (or the repository's, without SNAPSHOT)."""
    with opened(repo) as repository:
        totals = repository.totals()
        record = repository.find_snapshot(snapshot) if snapshot else None
        config = repository.config
    space = repository_space(totals)
    repo_body = {**config_json(repository.location, config), "snapshots": totals.snapshots,
                 "logical_bytes": totals.logical_bytes, "stored_bytes": totals.stored_bytes,
                 "chunks": totals.chunks, "packs": totals.packs, "space": space.to_json()}
    if as_json:
        print_json({"repository": repo_body, "snapshot": snapshot_json(record) if record
                    else None})
        return
    if record is None:
        click.echo(f"repository   {repository.location} (format {config.version})")
        click.echo(f"encryption   {encryption_label(config)}")
        click.echo(f"snapshots    {totals.snapshots}")
        click.echo(f"images       {human_bytes(totals.logical_bytes)} in all = {space.parts} "
                   f"(never stored)")
        click.echo(f"stored       {human_bytes(totals.stored_bytes)} in {totals.packs} packs, "
                   f"{totals.chunks} chunks")
        click.echo(f"saving       {space.ratio} data / stored (dedup and compression; zeros "
                   f"not counted)")
        return
    stats, own = record.stats, snapshot_space(record)
    click.echo(f"snapshot     {record.id} ({record.name})")
    click.echo(f"time         {record.time:%Y-%m-%d %H:%M:%S} UTC, host {record.host}")
    click.echo(f"source       {record.source}")
    click.echo(f"tags         {', '.join(record.tags) or '-'}")
    click.echo(f"image        {human_bytes(record.size)} ({record.size} bytes), "
               f"{stats.chunks} chunks, {stats.manifest_blocks} manifest blocks")
    click.echo(f"data         {human_bytes(own.data_bytes)} (the image without its zero runs)")
    click.echo(f"zeros        {human_bytes(own.zero_bytes)} (never stored)")
    click.echo(f"new data     {human_bytes(stats.new_bytes)} in {stats.new_chunks} chunks, "
               f"{human_bytes(stats.stored_bytes)} stored after compression")
    click.echo(f"dedup        {own.ratio} data / new stored (zeros not counted)")
    click.echo(f"duration     {stats.duration_s:.1f} s "
               f"({human_rate(record.size, stats.duration_s)})")
    click.echo(f"repository   {human_bytes(totals.stored_bytes)} stored for "
               f"{human_bytes(space.data_bytes)} of data in images ({space.ratio}; "
               f"{human_bytes(space.zero_bytes)} zeros not counted)")


@click.command()
@repo_option
@click.argument("snapshot")
@click.argument("target", type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite an existing file or block device.")
@progress_option
@json_option
def restore(repo, snapshot, target: Path, force, show_progress, as_json) -> None:
    """Restore a snapshot to a new sparse file, an existing file, or a block device."""
    with opened(repo) as repository:
        record = repository.find_snapshot(snapshot)
        progress = ProgressLine("restore", record.size, show_progress)
        try:
            repository.restore(record, target, force, progress)
        finally:
            progress.close()
    if as_json:
        print_json({"snapshot": snapshot_json(record), "target": str(target),
                    "image_bytes": record.size})
    else:
        click.echo(f"restored snapshot {record.short_id} ({record.name}, "
                   f"{human_bytes(record.size)}) to {target}", err=True)


@click.command()
@repo_option
@click.argument("snapshot")
def cat(repo, snapshot) -> None:
    """Write a snapshot's image to standard output."""
    if sys.stdout.isatty():
        raise click.UsageError("refusing to write a disk image to a terminal; redirect it")
    with opened(repo) as repository:
        record = repository.find_snapshot(snapshot)
        repository.cat(record, sys.stdout.buffer)


@click.command()
@repo_option
@click.argument("snapshot_a")
@click.argument("snapshot_b")
@json_option
def diff(repo, snapshot_a, snapshot_b, as_json) -> None:
    """List the byte ranges that differ between two snapshots (from manifests only)."""
    with opened(repo) as repository:
        a = repository.find_snapshot(snapshot_a)
        b = repository.find_snapshot(snapshot_b)
        ranges = repository.diff(a, b)
    changed = sum(end - start for start, end in ranges)
    if as_json:
        print_json({"a": a.id, "b": b.id, "changed_bytes": changed,
                    "ranges": [{"start": s, "end": e} for s, e in ranges]})
        return
    for start, end in ranges:
        click.echo(f"{start:>15} {end:>15}  {human_bytes(end - start)}")
    click.echo(f"{len(ranges)} changed ranges, {human_bytes(changed)} "
               f"({changed} bytes) between {a.short_id} and {b.short_id}")


def register(group: click.Group) -> None:
    for command in (backup, list_snapshots, info, restore, cat, diff):
        group.add_command(command)
