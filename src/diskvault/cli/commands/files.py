"""ls and pull: the files inside a snapshot's image, read without restoring or mounting it
(no root, no loop device). Only the chunks under what is listed or pulled are read."""

from __future__ import annotations

import dataclasses
import stat
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import click

from ...errors import DiskvaultError
from ...image.extract import PullProgress, PullReport
from ...image.extract import pull as pull_files
from ...image.filesystems import Entry
from ...image.locations import VolumeSummary
from ...store.format.snapshots import SnapshotRecord
from ...store.read.browse import Listing
from ..options.completers import complete_snapshot
from ..common import json_option, opened, progress_option, repo_option
from ..output.formatting import human_bytes, print_json, print_table
from ..output.progress import ProgressLine

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@click.command("ls")
@repo_option
@click.argument("snapshot", shell_complete=complete_snapshot)
@click.argument("location", required=False)
@json_option
def ls(repo, snapshot, location, as_json) -> None:
    """List the volumes of a snapshot's image and their filesystems, or, with LOCATION, a
    folder inside one like `ls -l` (a file or symlink shows itself).

    LOCATION is p2:/etc (partition 2), vg0/root:/srv (an LVM2 logical volume), or /etc
    (an image that is one filesystem, without a partition table).
    """
    with opened(repo, reader=True) as repository, repository.reader_lock():
        record = repository.find_snapshot(snapshot)
        files = repository.browse(record)
        if location is None:
            show_volumes(record, files.survey(), as_json)
            return
        listing = files.listing(location)
        show_listing(location, listing, as_json)
    report_problems("damaged entry", listing.problems, "damaged")


def report_problems(label: str, problems: list[str], what: str) -> None:
    """One line on stderr per entry that was left out or flagged, then exit 1 if any."""
    for problem in problems:
        click.echo(f"diskvault: {label}: {printable(problem)}", err=True)
    if problems:
        count = len(problems)
        raise DiskvaultError(f"{count} {'entry was' if count == 1 else 'entries were'} "
                             f"{what} (each said above)")


def volume_rows(record: SnapshotRecord, volumes: list[VolumeSummary]) -> list[dict]:
    """One plain row per volume: what to type as a location prefix, and what it holds."""
    rows = []
    for index, volume in enumerate(volumes):
        row = {"filesystem": volume.filesystem, "label": volume.label, "problem": volume.problem}
        if volume.partition is not None:
            part = volume.partition
            row.update(location=f"p{part.number}:", size=part.size, type=part.type_name,
                       offset=part.offset, partition_name=part.name)
        elif volume.logical_volume is not None:
            row.update(location=f"{volume.logical_volume.name}:", size=volume.logical_volume.size,
                       type="LVM2 logical volume")
        elif index == 0:  # survey_image lists the whole image first when it has no table
            row.update(location="/", size=record.size, type="whole image")
        else:  # LVM2 metadata that could not be read
            row.update(location=None, size=None, type="LVM2")
        rows.append(row)
    return rows


def show_volumes(record: SnapshotRecord, volumes: list[VolumeSummary], as_json: bool) -> None:
    rows = volume_rows(record, volumes)
    if as_json:
        print_json({"snapshot": record.id, "volumes": rows})
        return
    print_table(["LOCATION", "SIZE", "TYPE", "FILESYSTEM", "LABEL", "NOTE"],
                [[row["location"] or "-", human_bytes(row["size"]) if row["size"] else "-",
                  printable(row["type"] or "-"), row["filesystem"] or "-",
                  printable(row["label"] or "-"), printable(row["problem"] or "")]
                 for row in rows], right=frozenset({1}))


def show_listing(location: str, listing: Listing, as_json: bool) -> None:
    entries = [listing.entry] if listing.children is None else \
        sorted(listing.children, key=lambda e: e.name)
    if as_json:
        print_json({"location": location, "entry": entry_json(listing.entry),
                    "entries": None if listing.children is None else
                    [entry_json(e) for e in entries], "problems": listing.problems})
        return
    print_table(["MODE", "UID", "GID", "SIZE", "MODIFIED (UTC)", "NAME"],
                [[stat.filemode(e.mode), owner(e.uid), owner(e.gid), str(e.size),
                  f"{utc(e.mtime_ns):%Y-%m-%d %H:%M:%S}", shown_name(e)] for e in entries],
                right=frozenset({1, 2, 3}))


def entry_json(entry: Entry) -> dict:
    return {**dataclasses.asdict(entry), "mtime": utc(entry.mtime_ns).isoformat()}


def utc(time_ns: int) -> datetime:
    return EPOCH + timedelta(microseconds=time_ns // 1000)


def owner(number: int | None) -> str:
    return "-" if number is None else str(number)


def shown_name(entry: Entry) -> str:
    name = printable(entry.name)
    return f"{name} -> {printable(entry.symlink_target)}" if entry.kind == "symlink" else name


def printable(text: str) -> str:
    """Names come from the image, which may be hostile: control characters (a terminal's
    escape sequences) and undecodable bytes are shown escaped, never sent to the terminal."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape", "backslashreplace")
                   .decode("ascii") for c in text)


@click.command()
@repo_option
@click.argument("snapshot", shell_complete=complete_snapshot)
@click.argument("location")
@click.argument("destination", type=click.Path(path_type=Path))
@progress_option
@click.option("--keep-setuid", "keep_set_id", is_flag=True,
              help="As root, keep setuid and setgid bits (dropped by default, as tar without -p).")
@json_option
def pull(repo, snapshot, location, destination: Path, show_progress, keep_set_id,
         as_json) -> None:
    """Copy a file or a whole folder out of a snapshot's image to DESTINATION, like `cp -a`.

    An existing folder DESTINATION receives the copy under its own name; otherwise the copy
    is made as DESTINATION. Modes, times and symlinks (exactly as they are, wherever they
    point) are kept, owners when run as root; setuid/setgid bits only with --keep-setuid.
    Names with '..' and device files are refused, each with one line on stderr; the rest is
    copied, and the exit code is 1. Nothing is ever written through a symlink.
    LOCATION is named as for `ls`: p2:/etc/nginx, vg0/root:/srv, or /etc.
    """
    started = time.monotonic()
    with opened(repo, reader=True) as repository, repository.reader_lock():
        record = repository.find_snapshot(snapshot)
        fs, path = repository.browse(record).open_location(location)
        top = fs.stat(path)
        line = ProgressLine("pull", top.size if top.kind == "file" else None, show_progress)
        try:
            report = pull_files(fs, path, destination, lambda done: show(line, done),
                                keep_set_id)
        finally:
            line.close()
    if as_json:
        print_json({"snapshot": record.id, "location": location,
                    "destination": str(destination), **dataclasses.asdict(report)})
    else:
        click.echo(pull_summary(record, location, destination, report,
                                time.monotonic() - started))
    report_problems("not copied", [problem.message for problem in report.problems], "not copied")


def show(line: ProgressLine, done: PullProgress) -> None:
    if line.total is None:
        line.label = f"pull ({done.files} files)"
    line(done.bytes)


def pull_summary(record: SnapshotRecord, location: str, destination: Path, report: PullReport,
                 seconds: float) -> str:
    return (f"pulled {location} from snapshot {record.short_id} ({record.name}, "
            f"{record.time_label}) to {destination}: {report.files} files, {report.folders} "
            f"folders, {report.symlinks} symlinks, {human_bytes(report.bytes)} in {seconds:.1f} s")
