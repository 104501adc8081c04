"""check: proving that every snapshot can be restored, and repairing what can be."""

from __future__ import annotations

import click

from ...errors import CorruptData
from ...maintenance import check as checking
from ...maintenance import repair as repairing
from ...maintenance.check import CheckReport
from ...maintenance.compact import DEFAULT_THRESHOLD
from ...maintenance.repair import RepairReport
from ...store.backends.location import parse_location
from ..common import CommandPassphrase, json_option, lock_wait_option, opened, repo_option
from ..output.formatting import (count_of, human_bytes, human_rate, print_json,
                                 print_table, snapshot_when)
from ..output.progress import ProgressLine
from ..output.run_records import note_figures, recorded


@recorded("check", lambda params: None)
@click.command()
@repo_option
@click.option("--read-data", is_flag=True,
              help="Also read every stored record, decompress it and verify its digest.")
@click.option("--repair", is_flag=True,
              help="Rebuild the index from the packs (with --read-data: leaving damaged "
                   "records out) and report what cannot be restored.")
@json_option
@click.option("--progress/--no-progress", "show_progress", default=None,
              help="Show a progress line for --read-data (default: only on a terminal).")
@lock_wait_option
def check(repo, read_data, repair, as_json, show_progress, lock_wait_s) -> None:
    """Check that every snapshot can be restored; exit 1 if anything is damaged."""
    repaired = None
    if repair:
        repaired = repairing.repair_repository(parse_location(repo), read_data, lock_wait_s,
                                                CommandPassphrase())
        report = repaired.after
        if not as_json:
            _print_repair(repaired)
    else:
        line = ProgressLine("check --read-data", 0, show_progress if read_data else False)

        def progress(done: int, total: int) -> None:
            line.total = total
            line(done)

        with opened(repo) as repository:
            try:
                report = checking.check(repository.storage, read_data, progress)
            finally:
                line.close()
    note_figures(read_data=read_data, problems=len(report.problems),
                 damaged_snapshots=len(report.damaged_snapshots))
    if as_json:
        print_json(_report_json(report) | ({"repair": _repair_json(repaired)} if repaired
                                           else {}))
    else:
        _print_check(report)
    if report.damaged:
        lost = len(report.damaged_snapshots)
        raise CorruptData(f"check found damage: {count_of(len(report.problems), 'problem')}, "
                          f"{count_of(lost, 'snapshot')} cannot be restored in full"
                          + ("" if repair else f"; see above, then run 'diskvault check "
                                               f"--repair{' --read-data' * read_data}'"))


def _print_check(report: CheckReport) -> None:
    click.echo(f"checked {report.snapshots} snapshots, {report.manifest_blocks} manifest "
               f"blocks, {report.chunks_referenced} chunks in use, {report.packs} packs "
               f"({human_bytes(report.stored_bytes)})")
    if report.read_data:
        click.echo(f"read {report.records_read} records, {human_bytes(report.bytes_read)} in "
                   f"{report.duration_s:.1f} s "
                   f"({human_rate(report.bytes_read, report.duration_s)})")
    for problem in report.problems:
        click.echo(f"damaged: {problem.where}: {problem.message}")
    if report.damaged_snapshots:
        click.echo("snapshots that cannot be restored in full:")
        rows = [[d.record.short_id, d.record.name, snapshot_when(d.record),
                 f"{count_of(d.lost_chunks, 'chunk')}, {human_bytes(d.lost_bytes)}",
                 str(d.unindexed_chunks), str(d.first_offset)]
                for d in report.damaged_snapshots]
        print_table(["ID", "NAME", "TIME (UTC)", "LOST", "UNINDEXED (repair recovers)",
                     "FIRST DAMAGED BYTE"], rows, right=frozenset({4, 5}))
    if report.orphan_packs:
        click.echo(f"{len(report.orphan_packs)} packs are not in the index (left by an "
                   f"interrupted writer, or a lost index): the next backup, compact or "
                   f"check --repair indexes them")
    if report.half_deleted_packs:
        click.echo(f"{len(report.half_deleted_packs)} packs were being deleted when a compact "
                   f"stopped: the next compact finishes")
    if report.damaged_unused_records:
        click.echo(f"{report.damaged_unused_records} damaged records are copies nothing "
                   f"uses: harmless, compact --threshold 0 removes them")
    if report.stray_entries:
        click.echo(f"{len(report.stray_entries)} stray entries are not diskvault's (not "
                   f"damage; diskvault leaves them alone, remove them if unneeded): "
                   f"{', '.join(report.stray_entries)}")
    unreferenced = _unreferenced_hint(report)
    if unreferenced:
        click.echo(unreferenced)
    if not report.damaged:
        click.echo("no damage found")


def _unreferenced_hint(report: CheckReport) -> str | None:
    """What frees the chunks no snapshot uses, as compact decides it: a pack is rewritten
    only when more than the threshold of it is unused. None when there are none."""
    if not report.unreferenced_chunks:
        return None
    found = (f"{count_of(report.unreferenced_chunks, 'chunk')} "
             f"({human_bytes(report.unreferenced_bytes)}) are used by no snapshot")
    threshold = f"{DEFAULT_THRESHOLD * 100:g} %"
    if report.reclaimable_chunks == report.unreferenced_chunks:
        return f"{found}: compact removes them"
    if not report.reclaimable_chunks:
        return (f"{found}, in packs at most {threshold} unused, which compact keeps: "
                f"'compact --threshold 0' removes them")
    return (f"{found}: compact removes {report.reclaimable_chunks} of them "
            f"({human_bytes(report.reclaimable_bytes)}), 'compact --threshold 0' all "
            f"(the others are in packs at most {threshold} unused)")


def _print_repair(report: RepairReport) -> None:
    if report.index_set_aside:
        click.echo(f"repair: the index could not be read; it was moved to "
                   f"{report.index_set_aside}")
    click.echo(f"repair: rebuilt the index from {report.packs_indexed} packs: "
               f"{report.chunks_indexed} chunks (it held {report.chunks_before})")
    for pack_id in report.missing_packs:
        click.echo(f"repair: pack {pack_id} is missing; its chunks are gone from the index")
    for pack_id, why in report.damaged_packs:
        where = ("moved to damaged/" if pack_id in report.set_aside_packs else
                 f"left in place ({report.kept_in_place})" if report.kept_in_place else
                 "left in place while readers run (repair again later to move it)")
        click.echo(f"repair: pack {pack_id}: {why}; {where}")
    if report.chunks_salvaged:
        click.echo(f"repair: {report.chunks_salvaged} intact chunks rescued from damaged "
                   f"packs into new ones")
    for pack_id, digest, why in report.dropped_records:
        click.echo(f"repair: left out chunk {digest.hex()[:16]} of pack {pack_id}: it {why}")
    if report.after and report.after.damaged_snapshots:
        click.echo("repair: what remains lost comes back if a later backup meets the same "
                   "data; the snapshots below are restorable in full again then")


def _report_json(report: CheckReport) -> dict:
    return {
        "damaged": report.damaged, "read_data": report.read_data,
        "snapshots": report.snapshots, "manifest_blocks": report.manifest_blocks,
        "chunks_referenced": report.chunks_referenced, "packs": report.packs,
        "stored_bytes": report.stored_bytes, "records_read": report.records_read,
        "bytes_read": report.bytes_read, "duration_s": report.duration_s,
        "problems": [{"where": p.where, "message": p.message} for p in report.problems],
        "damaged_snapshots": [
            {"id": d.record.id, "name": d.record.name, "time": d.record.time.isoformat(),
             "lost_chunks": d.lost_chunks, "lost_bytes": d.lost_bytes,
             "unindexed_chunks": d.unindexed_chunks, "first_offset": d.first_offset}
            for d in report.damaged_snapshots],
        "orphan_packs": report.orphan_packs, "half_deleted_packs": report.half_deleted_packs,
        "damaged_unused_records": report.damaged_unused_records,
        "stray_entries": report.stray_entries,
        "unreferenced_chunks": report.unreferenced_chunks,
        "unreferenced_bytes": report.unreferenced_bytes,
        "reclaimable_chunks": report.reclaimable_chunks,
        "reclaimable_bytes": report.reclaimable_bytes,
    }


def _repair_json(report: RepairReport) -> dict:
    return {
        "index_set_aside": str(report.index_set_aside) if report.index_set_aside else None,
        "chunks_before": report.chunks_before, "chunks_indexed": report.chunks_indexed,
        "packs_indexed": report.packs_indexed, "missing_packs": report.missing_packs,
        "damaged_packs": [{"pack": p, "problem": why} for p, why in report.damaged_packs],
        "set_aside_packs": report.set_aside_packs, "chunks_salvaged": report.chunks_salvaged,
        "dropped_records": [{"pack": p, "chunk": d.hex(), "problem": why}
                            for p, d, why in report.dropped_records],
    }
