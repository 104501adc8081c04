"""copy: snapshots from one repository into another, sending only what is missing."""

from __future__ import annotations

import os
from pathlib import Path

import click

from ...errors import BadInput
from ...store.backends.location import parse_location
from ...store.copy import CopyReport
from ...store.keys.passphrase import SOURCE_NAMES
from ..common import CommandPassphrase, json_option, lock_wait_option, opened, password_file_option
from ..output.formatting import human_bytes, print_json, snapshot_json

FROM_PASSWORD_FILE_KEY = "diskvault.from_password_file"


def _remember_from_password_file(ctx: click.Context, _param, value: Path | None) -> None:
    if value is not None:
        ctx.meta[FROM_PASSWORD_FILE_KEY] = value


@click.command("copy")
@click.option("--from", "source", required=True, metavar="REPO",
              help="The repository to copy snapshots from (read only).")
@click.option("--to", "destination", required=True, metavar="REPO",
              help="The repository to copy them into (an initialised one).")
@click.option("--from-password-file", type=click.Path(path_type=Path, dir_okay=False),
              default=None, expose_value=False, callback=_remember_from_password_file,
              help="The source's passphrase, from this file's first line (or set "
                   "DISKVAULT_FROM_PASSWORD_FILE, DISKVAULT_FROM_PASSWORD_COMMAND or "
                   "DISKVAULT_FROM_PASSWORD).")
@password_file_option()
@click.argument("selectors", nargs=-1, metavar="[SNAPSHOT]...")
@json_option
@lock_wait_option
def copy(source: str, destination: str, selectors: tuple[str, ...], as_json: bool,
         lock_wait_s: float) -> None:
    """Copy snapshots (default: every one the destination lacks) with their ids, names,
    times and tags; only chunks the destination lacks are written. The destination's
    passphrase comes from --password-file or DISKVAULT_PASSWORD*."""
    _refuse_one_folder(source, destination)
    source_passphrase = CommandPassphrase(names=SOURCE_NAMES,
                                          password_file_key=FROM_PASSWORD_FILE_KEY)
    # The destination is a writer's: its index is caught up under the writer lock, and
    # only if there is something to copy.
    with opened(source, source_passphrase) as origin, \
            opened(destination, writer=True) as target:
        report = target.copy_from(origin, selectors, lock_wait_s)
        where = target.location
    if as_json:
        print_json(report_json(report))
        return
    for record in report.skipped:
        click.echo(f"snapshot {record.short_id} ({record.name}, {record.time_label}) is "
                   f"already in {where}: skipped")
    for record in report.copied:
        click.echo(f"snapshot {record.short_id} ({record.name}, {record.time_label}) copied")
    for record in report.protected:
        click.echo(f"snapshot {record.short_id} ({record.name}, {record.time_label}) "
                   f"protected in {where}, as in {origin.location}")
    click.echo(f"copied {len(report.copied)} snapshot(s) to {where}: {report.chunks_sent} "
               f"chunks sent ({human_bytes(report.bytes_sent)}, "
               f"{human_bytes(report.stored_bytes)} stored), {report.chunks_skipped} skipped "
               f"(already there)")


def _refuse_one_folder(source: str, destination: str) -> None:
    """BadInput when --from and --to name one folder (the index opens once per process)."""
    source_location, destination_location = parse_location(source), parse_location(destination)
    source_path, destination_path = source_location.folder, destination_location.folder
    if source_path is None or destination_path is None:
        return  # object-store repositories are told apart by their repository ids
    if (source_path.exists() and destination_path.exists()
            and os.path.samefile(source_path, destination_path)):
        raise BadInput(f"--from {source} and --to {destination} are the same repository: "
                       f"copy needs two different ones")


def report_json(report: CopyReport) -> dict:
    return {"copied": [snapshot_json(record) for record in report.copied],
            "skipped": [snapshot_json(record) for record in report.skipped],
            "chunks_sent": report.chunks_sent, "bytes_sent": report.bytes_sent,
            "stored_bytes": report.stored_bytes, "chunks_skipped": report.chunks_skipped,
            "same_chunk_ids": report.same_chunk_ids, "same_cuts": report.same_cuts,
            "protected": [record.id for record in report.protected]}

