"""restore, cat: a snapshot's image written back to a file, a block device or a stream."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ...sources.disk_formats import WRITABLE_FORMATS, written_as
from ..common import json_option, opened, progress_option, repo_option
from ..options.completers import complete_snapshot
from ..output.formatting import human_bytes, print_json, snapshot_json
from ..output.progress import ProgressLine


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
    with opened(repo, reader=True) as repository:
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
    with opened(repo, reader=True) as repository:
        record = repository.find_snapshot(snapshot)
        repository.cat(record, sys.stdout.buffer)
