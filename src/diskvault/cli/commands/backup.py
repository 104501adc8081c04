"""backup: an image file, block device, NBD export, running guest's drive or standard input
made into a new snapshot."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import click

from ...sources.disk_source import names_no_file, opened_disk_source
from ...sources.guest_freeze import DEFAULT_FREEZE_LIMIT_S
from ...sources.running_guest import Freeze, is_qmp_uri
from ...store.backup.stream_source import STDIN_LABEL
from ...store.format.snapshots import SnapshotRecord, series_name
from ..common import json_option, lock_wait_option, opened, progress_option, repo_option
from ..options.change_maps import read_change_map
from ..options.completers import complete_series, complete_snapshot
from ..options.point_in_time import point_in_time_options, source_opener
from ..options.sizes import NON_NEGATIVE_SIZE
from ..output.formatting import human_bytes, human_rate, print_json, snapshot_json, snapshot_space
from ..output.progress import ProgressLine
from ..output.run_records import note_figures, recorded


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
