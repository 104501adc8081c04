"""list, info, diff: what the repository's snapshots are, hold and differ by."""

from __future__ import annotations

import click

from ...errors import CorruptData
from ..common import json_option, opened, repo_option
from ..options.completers import complete_series, complete_snapshot
from ..output.formatting import (config_json, encryption_label, human_bytes, human_rate,
                                 print_json, print_snapshots, repository_space, snapshot_json,
                                 snapshot_space, warn)

# How `info` says what a record's "consistency" means (docs/point-in-time.md).
CONSISTENCY_WORDS = {
    "reflink": "read from a reflink clone made at the start",
    "lvm": "read from an LVM snapshot made at the start",
    "checked": "read in place, and unchanged at the end of the read",
    "unchecked": "no: a block device read in place (a change during the read cannot be seen)",
    "qemu": "QEMU's point-in-time view of the running guest's drive (crash-consistent)",
    "qemu-frozen": "QEMU's point-in-time view, made while the guest agent held the guest's "
                   "filesystems frozen",
}


@click.command("list")
@repo_option
@click.option("--name", default=None, shell_complete=complete_series,
              help="Only this series.")
@click.option("--accept-missing", is_flag=True,
              help="Forget the snapshots this host saw that are gone, and take a "
                   "generation counter lower than the one seen (an older copy of the "
                   "repository put back, or snapshots deleted from another host, on "
                   "purpose), instead of refusing to go on.")
@json_option
def list_snapshots(repo, name, accept_missing, as_json) -> None:
    """List snapshots, oldest first. Exit 1 if a snapshot this host saw is gone, or the
    repository's generation counter is below the one seen here."""
    with opened(repo, reader=True) as repository:
        if accept_missing:
            for seen in repository.accept_missing_snapshots():
                warn(f"snapshot {seen.id[:8]} of {seen.series}, seen here on "
                     f"{seen.seen_on}, is gone: forgotten here")
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
@click.argument("snapshot", required=False, shell_complete=complete_snapshot)
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
    if record.consistency:
        click.echo(f"held still   {CONSISTENCY_WORDS.get(record.consistency, record.consistency)}")
    if record.base_id:
        click.echo(f"change map   unchanged ranges taken from snapshot {record.base_id}")
    if record.dirty_bitmap:
        click.echo(f"dirty bitmap {record.dirty_bitmap} (counts the changes since this read "
                   f"began)")
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
@click.argument("snapshot_a", shell_complete=complete_snapshot)
@click.argument("snapshot_b", shell_complete=complete_snapshot)
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
