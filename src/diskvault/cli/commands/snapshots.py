"""backup, list, info, restore, cat, diff: making snapshots and reading them back."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import click

from ...errors import CorruptData
from ...sources.disk_formats import WRITABLE_FORMATS, written_as
from ...sources.disk_source import names_no_file, opened_disk_source
from ...sources.guest_freeze import DEFAULT_FREEZE_LIMIT_S
from ...sources.running_guest import Freeze, is_qmp_uri
from ...store.backup.stream_source import STDIN_LABEL
from ...store.format.snapshots import SnapshotRecord, series_name
from ..options.change_maps import read_change_map
from ..options.completers import complete_series, complete_snapshot
from ..common import json_option, lock_wait_option, opened, repo_option
from ..output.formatting import (config_json, encryption_label, human_bytes, human_rate,
                                 print_json, print_snapshots, repository_space, snapshot_json,
                                 snapshot_space, warn)
from ..output.progress import ProgressLine
from ..output.run_records import note_figures, recorded
from ..options.sizes import NON_NEGATIVE_SIZE
from ..options.point_in_time import point_in_time_options, source_opener

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


@recorded("backup", lambda params: series_name(params["source"], params["name"]))
@click.command()
@repo_option
@click.argument("source")
@click.option("--name", default=None, shell_complete=complete_series,
              help="Series name (default: the source's file name; required for '-', NBD "
              "and QMP URIs).")
@click.option("--raw", is_flag=True,
              help="Back up a qcow2, vmdk, vhdx or vdi file as its container bytes, not as "
                   "the disk it holds (docs/vm-sources.md).")
@click.option("--tag", "tags", multiple=True, help="A tag to attach (repeatable).")
@click.option("--changed-ranges", "changes_file", default=None,
              type=click.Path(path_type=Path, dir_okay=False),
              help="Read only these ranges; take the rest from the previous snapshot "
                   "(docs/change-maps.md).")
@click.option("--changed-since", default=None, metavar="SNAPSHOT",
              shell_complete=complete_snapshot,
              help="The snapshot the change map counts from (must be the series' latest).")
@click.option("--dirty-bitmap", default=None, metavar="BITMAP",
              help="With a QMP or NBD URI: read only what QEMU's dirty bitmap BITMAP marks; "
                   "take the rest from the series' latest snapshot made with it. Through "
                   "QMP, the bitmap is rotated once the snapshot is recorded "
                   "(docs/vm-sources.md).")
@click.option("--verify-unchanged", default=0, type=click.IntRange(min=0), metavar="N",
              help="With --changed-ranges or --dirty-bitmap: read N random unchanged chunks "
                   "and fail if any differs from the previous snapshot.")
@click.option("--size", "stream_size", default=None, type=NON_NEGATIVE_SIZE, metavar="SIZE",
              help="With '-': the stream's size (bytes, or 20G, 512MiB...); a shorter "
                   "stream fails.")
@click.option("--allow-shrink", is_flag=True,
              help="With '-' and no --size: record a stream shorter than the series' "
                   "previous snapshot (refused by default: a producer that died half way "
                   "looks just like that).")
@point_in_time_options
@click.option("--freeze", "agent_socket", default=None, metavar="AGENT_SOCKET",
              type=click.Path(path_type=Path),
              help="With a QMP URI: freeze the guest's filesystems through the "
                   "qemu-guest-agent at this socket while the view is made.")
@click.option("--freeze-timeout", "freeze_limit_s", default=None,
              type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help=f"With --freeze: the longest the guest stays frozen, whatever happens "
                   f"(default {DEFAULT_FREEZE_LIMIT_S:g}).")
@json_option
@progress_option
@lock_wait_option
def backup(repo, source: str, name, raw, tags, changes_file, changed_since, dirty_bitmap,
           verify_unchanged, stream_size, allow_shrink, view_method, lvm_size, pre_command,
           post_command, command_timeout_s, agent_socket, freeze_limit_s, as_json,
           show_progress, lock_wait_s) -> None:
    """Back up an image file, block device, NBD export or running QEMU guest's drive (or
    '-': standard input) as a new snapshot.

    A qcow2, vmdk, vhdx or vdi file is read as the disk it holds (unless --raw). NBD URIs:
    nbd://HOST[:PORT]/EXPORT, nbd+unix:///EXPORT?socket=PATH. A running guest, through
    its QMP socket: qmp+unix:///PATH?drive=NAME (docs/vm-sources.md)."""
    from_stdin = source == STDIN_LABEL
    _check_bitmap_options(source, dirty_bitmap, changes_file)
    changes = read_change_map(changes_file, changed_since,
                              verify_unchanged if dirty_bitmap is None else 0)
    _check_stream_options(from_stdin, name, changes, stream_size, allow_shrink)
    if names_no_file(source) and not name:
        raise click.UsageError("a URI names no file: give the series with --name")
    if raw and (names_no_file(source) or from_stdin):
        raise click.UsageError("--raw is for a disk-image file (qcow2, vmdk, vhdx, vdi); an "
                               "NBD export, a running guest or a stream is read as the "
                               "bytes it serves")
    freeze = _freeze_request(source, agent_socket, freeze_limit_s)
    open_source = source_opener(from_stdin, view_method, lvm_size, pre_command, post_command,
                                command_timeout_s)
    with opened(repo, writer=True) as repository:
        with opened_disk_source(source, raw, freeze, dirty_bitmap) as disk:
            if disk is not None and changes is not None:
                raise click.UsageError("--changed-ranges reads a raw file or block device, "
                                       "not an NBD export or a disk-image format")
            if disk is not None and not names_no_file(source):
                repository.check_backup_source(Path(source))  # backup() checks plain files
            size = disk.size if disk else (stream_size or 0) if from_stdin \
                else _source_size(Path(source))
            progress = ProgressLine("backup", size, show_progress)
            new_series: list[str] = []  # said once the snapshot is saved: errors are one line
            try:
                if disk is not None:
                    record = repository.backup_source(
                        disk, series_name(source, name), tags=tuple(tags),
                        lock_wait_s=lock_wait_s, progress=progress,
                        on_new_series=new_series.append, bitmap=dirty_bitmap,
                        verify_unchanged=verify_unchanged)
                    disk.recorded(record.id)
                elif from_stdin:
                    record = repository.backup_stream(
                        sys.stdin.buffer, name=name, tags=tuple(tags), size=stream_size,
                        lock_wait_s=lock_wait_s, progress=progress, allow_shrink=allow_shrink,
                        on_new_series=new_series.append)
                else:
                    record = repository.backup(
                        Path(source), name=name, tags=tuple(tags), lock_wait_s=lock_wait_s,
                        progress=progress, changes=changes, verify_unchanged=verify_unchanged,
                        open_source=open_source, on_new_series=new_series.append)
            finally:
                progress.close()
        requests = repository.storage.requests_made()
    note_figures(snapshot=record.id, size=record.size, bytes_read=record.stats.bytes_read,
                 new_bytes=record.stats.new_bytes, stored_bytes=record.stats.stored_bytes)
    if new_series:  # a forgotten --name starts a series named after the file without a word
        choose = "" if name else ": use --name to choose one"
        click.echo(f"new series {record.name}{choose}", err=True)
    if as_json:
        print_json(snapshot_json(record) if requests is None
                   else dict(snapshot_json(record), requests=requests))
    else:
        click.echo(backup_summary(record))


def _check_bitmap_options(source: str, dirty_bitmap, changes_file) -> None:
    if dirty_bitmap is None:
        return
    if not names_no_file(source):
        raise click.UsageError("--dirty-bitmap reads a bitmap QEMU keeps: give a running "
                               "guest's drive (qmp+unix:///PATH?drive=NAME) or an NBD URI "
                               "(nbd+unix:///EXPORT?socket=PATH or nbd://HOST/EXPORT)")
    if changes_file is not None:
        raise click.UsageError("--dirty-bitmap and --changed-ranges both say what changed: "
                               "give one")


def _freeze_request(source: str, agent_socket: Path | None,
                    freeze_limit_s: float | None) -> Freeze | None:
    if agent_socket is None:
        if freeze_limit_s is not None:
            raise click.UsageError("--freeze-timeout bounds a --freeze: give the guest "
                                   "agent's socket with --freeze")
        return None
    if not is_qmp_uri(source):
        raise click.UsageError("--freeze freezes a running QEMU guest: give its drive as "
                               "qmp+unix:///PATH?drive=NAME")
    return Freeze(agent_socket, freeze_limit_s or DEFAULT_FREEZE_LIMIT_S)


def _check_stream_options(from_stdin: bool, name, changes, stream_size, allow_shrink) -> None:
    if from_stdin:
        if not name:
            raise click.UsageError("backup - reads the image from standard input: give the "
                                   "series with --name")
        if changes is not None:
            raise click.UsageError("--changed-ranges needs a file or block device to read "
                                   "ranges from, not standard input")
        if sys.stdin.isatty():
            raise click.UsageError("refusing to read a disk image from a terminal; pipe it "
                                   "in (cat vm1.img | diskvault backup - --name vm1)")
    elif stream_size is not None or allow_shrink:
        raise click.UsageError("--size and --allow-shrink are for '-' (standard input) only; "
                               "a file's size is known")


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
    with opened(repo) as repository:
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
@click.argument("snapshot", shell_complete=complete_snapshot)
@click.argument("target", type=click.Path(path_type=Path))
@click.option("--force", is_flag=True,
              help="Overwrite an existing file or block device: it is compared chunk by chunk "
                   "and only what differs is written.")
@click.option("--full", is_flag=True,
              help="With --force: write every byte, without reading the target first.")
@click.option("--in-place", is_flag=True,
              help="With --force, for a file: patch it where it is, without a copy (not "
                   "atomic: an interrupted restore is recorded, as for a block device).")
@click.option("--format", "image_format", default="raw", type=click.Choice(WRITABLE_FORMATS),
              help="Write a new image file in this format (qcow2: sparse, for a VM); "
                   "default raw.")
@progress_option
@json_option
def restore(repo, snapshot, target: Path, force, full, in_place, image_format, show_progress,
            as_json) -> None:
    """Restore a snapshot to a new sparse file, an existing file, or a block device."""
    if (full or in_place) and not force:
        raise click.UsageError("--full and --in-place rewrite an existing target: they go "
                               "with --force")
    if full and in_place:
        raise click.UsageError("--full and --in-place exclude each other: --in-place writes "
                               "only what differs")
    if force and image_format != "raw":
        raise click.UsageError("--format writes a new file; --force is for raw targets")
    with opened(repo) as repository:
        record = repository.find_snapshot(snapshot)
        progress = ProgressLine("restore", record.size, show_progress)
        try:
            with written_as(target, image_format) as raw_target:
                result = repository.restore(record, raw_target, force, full, in_place,
                                            progress)
        finally:
            progress.close()
    if result.interrupted_before:
        click.echo(f"note: {result.interrupted_before}; this restore completed it", err=True)
    if as_json:
        print_json({"snapshot": snapshot_json(record), "target": str(target),
                    "image_bytes": record.size, "method": result.method,
                    "compared_bytes": result.compared_bytes,
                    "written_bytes": result.written_bytes, "clone": result.clone,
                    "cloned_bytes": result.cloned_bytes,
                    "known_snapshot": result.known_snapshot})
        return
    click.echo(f"restored snapshot {record.short_id} ({record.name}, "
               f"{human_bytes(record.size)}) to {target}: {_restore_summary(result)}", err=True)


def _restore_summary(result) -> str:
    written = f"{human_bytes(result.written_bytes)} written"
    if result.method == "full":
        return written
    summary = f"{human_bytes(result.compared_bytes)} compared, {written}"
    if result.known_snapshot:
        summary += f" (the target held snapshot {result.known_snapshot}: only where the " \
                   f"two differ was compared)"
    if result.clone == "copy":
        summary += f" (after an in-kernel copy of {human_bytes(result.cloned_bytes)}: " \
                   f"this filesystem has no reflinks)"
    return summary


@click.command()
@repo_option
@click.argument("snapshot", shell_complete=complete_snapshot)
def cat(repo, snapshot) -> None:
    """Write a snapshot's image to standard output."""
    if sys.stdout.isatty():
        raise click.UsageError("refusing to write a disk image to a terminal; redirect it")
    with opened(repo) as repository:
        record = repository.find_snapshot(snapshot)
        repository.cat(record, sys.stdout.buffer)


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
