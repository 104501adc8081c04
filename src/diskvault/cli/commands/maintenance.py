"""delete, prune, compact, check: forgetting snapshots, giving their space back, and
proving that what is stored can be restored."""

from __future__ import annotations

from datetime import datetime, timezone

import click

from ...errors import CorruptData
from ...maintenance import check as checking
from ...maintenance import compact as compaction
from ...maintenance import prune as pruning
from ...maintenance.protection import set_protection
from ...maintenance import repair as repairing
from ...maintenance.check import CheckReport
from ...maintenance.compact import DEFAULT_THRESHOLD, CompactResult
from ...maintenance.compact_plan import CompactionPlan
from ...maintenance.compact_requests import PlannedRequests
from ...maintenance.object_lock import allow_bypass, date_label, extend_packs_in_use
from ...maintenance.prune import PrunePlan
from ...maintenance.repair import RepairReport
from ...maintenance.retention import KeepPolicy, parse_duration
from ...store.backends.location import parse_location
from ...store.format.snapshots import SnapshotRecord
from ..options.completers import complete_series, complete_snapshot
from ..common import CommandPassphrase, json_option, lock_wait_option, opened, repo_option
from ..output.formatting import (human_bytes, human_rate, print_json, print_table,
                                 snapshot_json, warn)
from ..output.progress import ProgressLine
from ..output.run_records import note_figures, recorded

COMPACT_HINT = "run 'diskvault compact' to give their space back"
bypass_governance_option = click.option(
    "--bypass-governance", "bypass", is_flag=True,
    help="S3 Object Lock in governance mode: delete objects whose retention still holds "
         "(the credentials need s3:BypassGovernanceRetention).")


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def _when(record: SnapshotRecord) -> str:
    return f"{record.time:%Y-%m-%d %H:%M:%S}"


@click.command()
@repo_option
@click.argument("snapshots", nargs=-1, required=True, metavar="SNAPSHOT...",
                shell_complete=complete_snapshot)
@click.option("--all-of-series", is_flag=True,
              help="A series name deletes every snapshot of that series (without this flag "
                   "a series name is refused: name snapshots by id).")
@click.option("--dry-run", is_flag=True, help="Show what would be deleted; change nothing.")
@bypass_governance_option
@lock_wait_option
@json_option
def delete(repo, snapshots, all_of_series, dry_run, bypass, lock_wait_s, as_json) -> None:
    """Delete snapshots (id, id prefix, 'latest', or a whole series with --all-of-series);
    compact frees the space."""
    with opened(repo) as repository:
        allow_bypass(repository.storage, bypass)
        records = pruning.delete_snapshots(repository.storage, snapshots, lock_wait_s,
                                           all_of_series, dry_run)
    if as_json:
        print_json({"dry_run": dry_run, "deleted": [snapshot_json(r) for r in records]})
        return
    verb = "would delete" if dry_run else "deleted"
    for record in records:
        click.echo(f"{verb} snapshot {record.short_id} ({record.name}, {_when(record)} UTC)")
    if dry_run:
        click.echo(f"{_count(len(records), 'snapshot')} to delete (dry run: nothing was "
                   f"changed)")
    else:
        click.echo(COMPACT_HINT, err=True)


def _protection_command(protect: bool):
    verb = "protect" if protect else "unprotect"

    @click.command(verb)
    @repo_option
    @click.argument("snapshots", nargs=-1, required=True, metavar="SNAPSHOT...",
                    shell_complete=complete_snapshot)
    @lock_wait_option
    def command(repo, snapshots, lock_wait_s) -> None:
        with opened(repo) as repository:
            changed = set_protection(repository.storage, snapshots, protect, lock_wait_s)
        for record, did in changed:
            state = f"{verb}ed" if did else ("already protected" if protect
                                              else "was not protected")
            click.echo(f"snapshot {record.short_id} ({record.name}, {_when(record)} UTC): "
                       f"{state}")
    return command


protect = _protection_command(True)
protect.help = ("Mark snapshots so that prune keeps them and delete refuses them until "
                "unprotected. SNAPSHOT: an id, id prefix, 'latest' or a series (its latest).")
unprotect = _protection_command(False)
unprotect.help = ("Remove the mark 'diskvault protect' set. Prune and delete may then remove "
                  "the snapshots.")


def _count_option(rule: str, period: str):
    return click.option(f"--keep-{rule}", rule, type=click.IntRange(min=0), default=0,
                        metavar="N", help=f"Keep the newest snapshot of each of the N newest "
                                          f"{period} that have one.")


@recorded("prune", lambda params: params["name"])
@click.command()
@repo_option
@click.option("--keep-last", "last", type=click.IntRange(min=0), default=0, metavar="N",
              help="Keep the N newest snapshots.")
@_count_option("hourly", "hours")
@_count_option("daily", "days (UTC)")
@_count_option("weekly", "ISO weeks")
@_count_option("monthly", "months")
@_count_option("yearly", "years")
@click.option("--keep-within", "within", default=None, metavar="DURATION",
              help="Keep every snapshot taken within DURATION of now (e.g. 36h, 7d, 2w, 1m).")
@click.option("--keep-tag", "keep_tags", multiple=True, metavar="TAG",
              help="Keep every snapshot with this tag (repeatable).")
@click.option("--name", default=None, shell_complete=complete_series,
              help="Prune only this series (default: every series).")
@click.option("--dry-run", is_flag=True, help="Show what would be kept and removed; change "
                                              "nothing.")
@click.option("--allow-delete-all", is_flag=True,
              help="Allow removing every snapshot of a series (and a prune with no rule).")
@bypass_governance_option
@lock_wait_option
@json_option
def prune(repo, last, hourly, daily, weekly, monthly, yearly, within, keep_tags, name,
          dry_run, allow_delete_all, bypass, lock_wait_s, as_json) -> None:
    """Remove the snapshots no --keep-* rule keeps, per series; compact frees the space.
    Protected snapshots ('diskvault protect') are always kept."""
    policy = KeepPolicy(last=last, hourly=hourly, daily=daily, weekly=weekly, monthly=monthly,
                        yearly=yearly, within=parse_duration(within) if within else None,
                        tags=frozenset(keep_tags))
    with opened(repo) as repository:
        allow_bypass(repository.storage, bypass)
        plan = pruning.prune(repository.storage, policy, name, dry_run, allow_delete_all,
                             lock_wait_s=lock_wait_s)
    if as_json:
        print_json(_prune_json(plan, dry_run))
    else:
        _print_prune(plan, dry_run)
    for series in plan.protected_series:
        warn(f"the rules keep no snapshot of series {series!r}; its newest one is kept anyway "
             f"(use --allow-delete-all to remove the whole series)")
    if plan.removed and not dry_run:
        click.echo(COMPACT_HINT, err=True)


def _print_prune(plan: PrunePlan, dry_run: bool) -> None:
    rows = [[d.record.short_id, d.record.name, _when(d.record),
             "keep" if d.reason else ("would remove" if dry_run else "removed"),
             d.reason or ""] for d in plan.decisions]
    print_table(["ID", "NAME", "TIME (UTC)", "ACTION", "KEPT BECAUSE"], rows)
    verb = "to remove (dry run: nothing was changed)" if dry_run else "removed"
    click.echo(f"{len(plan.kept)} kept, {len(plan.removed)} {verb}")


def _prune_json(plan: PrunePlan, dry_run: bool) -> dict:
    return {"dry_run": dry_run, "kept": len(plan.kept), "removed": len(plan.removed),
            "protected_series": plan.protected_series,
            "decisions": [{"id": d.record.id, "name": d.record.name,
                           "time": d.record.time.isoformat(), "kept": d.reason is not None,
                           "kept_because": d.reason} for d in plan.decisions]}


@click.command()
@repo_option
@click.option("--threshold", "threshold_percent",
              type=click.FloatRange(min=0, max=100, max_open=True),
              default=DEFAULT_THRESHOLD * 100, show_default=True, metavar="PERCENT",
              help="Rewrite a pack once more than this share of its bytes is unused; "
                   "0 rewrites every pack holding anything unused.")
@click.option("--dry-run", is_flag=True, help="Show which packs would be rewritten or "
                                              "deleted and what that frees; change nothing.")
@bypass_governance_option
@json_option
@lock_wait_option
def compact(repo, threshold_percent, dry_run, bypass, as_json, lock_wait_s) -> None:
    """Give back the space of data no snapshot uses (after delete or prune)."""
    if dry_run:
        with opened(repo) as repository:
            plan = compaction.plan_only(repository.storage, threshold_percent / 100)
            requests = compaction.plan_requests(repository.storage, plan)
        if as_json:
            print_json(_compaction_plan_json(plan, requests))
        else:
            _print_compaction_plan(plan, requests)
        return
    with opened(repo) as repository:
        allow_bypass(repository.storage, bypass)
        result = compaction.compact(repository.storage, threshold_percent / 100,
                                    lock_wait_s)
        stored = repository.totals().stored_bytes
        made = repository.storage.requests_made()
    if as_json:
        print_json({**vars(result), "repository_stored_bytes": stored,
                    **({} if made is None else {"requests": made})})
    else:
        _print_compact(result, stored)


@click.command("extend-retention")
@repo_option
@json_option
def extend_retention(repo, as_json) -> None:
    """Extend the S3 Object Lock retention of every pack in use to the repository's days
    from now (compact does it too)."""
    with opened(repo) as repository:
        extended = extend_packs_in_use(repository.storage)
        until = repository.config.object_lock.until(datetime.now(timezone.utc))
    if as_json:
        print_json({"packs_extended": extended})
    else:
        click.echo(f"retention of {_count(extended, 'pack')} extended (to {date_label(until)} "
                   f"and a day)")


def _print_compaction_plan(plan: CompactionPlan, requests: PlannedRequests | None) -> None:
    rows = [[fate.pack_id, "delete", human_bytes(fate.file_size), "0", "-"]
            for fate in plan.delete]
    rows += [[fate.pack_id, "rewrite", human_bytes(fate.file_size), str(fate.live_records),
              human_bytes(fate.live_bytes)] for fate in plan.rewrite]
    if rows:
        print_table(["PACK", "ACTION", "SIZE", "CHUNKS IN USE", "TO COPY"], rows,
                    right=frozenset({2, 3, 4}))
    click.echo(f"reviewed {plan.packs_reviewed} packs that may hold unused data: would "
               f"delete {len(plan.delete)} with nothing in use and rewrite "
               f"{len(plan.rewrite)} (copying {plan.records_to_copy} chunks in use, "
               f"{human_bytes(plan.bytes_to_copy)})")
    click.echo(f"would free {human_bytes(plan.bytes_to_free)}: delete "
               f"{human_bytes(plan.bytes_to_delete)} of packs (dry run: nothing was changed)")
    if requests is not None:
        click.echo(f"would make about {requests.total} requests: {requests.range_gets} range "
                   f"GETs, {requests.footer_reads} footer reads, {requests.put_requests} "
                   f"PUTs for {requests.new_packs} new packs, {requests.deletes} DELETEs")
    if plan.damaged:
        warn(f"{len(plan.damaged)} damaged packs would be left as they are: run "
             f"'diskvault check --read-data'")


def _compaction_plan_json(plan: CompactionPlan, requests: PlannedRequests | None) -> dict:
    """The plan; on an object store also the requests carrying it out would make."""
    found = {"dry_run": True, "threshold": plan.threshold,
             "packs_reviewed": plan.packs_reviewed,
             "delete": [vars(fate) for fate in plan.delete],
             "rewrite": [vars(fate) for fate in plan.rewrite],
             "packs_kept": len(plan.keep), "packs_damaged": plan.damaged,
             "records_to_copy": plan.records_to_copy, "bytes_to_copy": plan.bytes_to_copy,
             "bytes_to_delete": plan.bytes_to_delete, "bytes_to_free": plan.bytes_to_free}
    if requests is not None:
        found["requests"] = requests.as_dict()
    return found


def _print_compact(result: CompactResult, stored: int) -> None:
    click.echo(f"reviewed {result.packs_reviewed} packs that may hold unused data: rewrote "
               f"{result.packs_rewritten} (copied {result.chunks_copied} chunks in use), "
               f"deleted {result.packs_deleted}")
    click.echo(f"freed {human_bytes(result.bytes_freed - result.bytes_written)}: deleted "
               f"{human_bytes(result.bytes_freed)} of packs, wrote "
               f"{human_bytes(result.bytes_written)}; the repository now stores "
               f"{human_bytes(stored)}")
    if result.packs_waiting:
        warn(f"{result.packs_waiting} packs ({human_bytes(result.bytes_waiting)}) are kept "
             f"while readers (restore, cat, mount, check) run; run compact again after them")
    if result.packs_damaged:
        warn(f"{len(result.packs_damaged)} damaged packs were left as they are: run "
             f"'diskvault check --read-data'")
    if result.packs_kept_as_last_copy:
        warn(f"{len(result.packs_kept_as_last_copy)} packs were kept: they hold the last "
             f"existing copy of chunks in use; run 'diskvault check'")
    if result.packs_locked:
        click.echo(f"{_count(result.packs_locked, 'pack')} locked by S3 Object Lock until "
                   f"{date_label(datetime.fromisoformat(result.locked_until))}: a compact "
                   f"after that gives their space back")
    if result.packs_retained:
        click.echo(f"retention of {_count(result.packs_retained, 'pack')} in use extended")


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
        raise CorruptData(f"check found damage: {_count(len(report.problems), 'problem')}, "
                          f"{_count(lost, 'snapshot')} cannot be restored in full"
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
        rows = [[d.record.short_id, d.record.name, _when(d.record),
                 f"{_count(d.lost_chunks, 'chunk')}, {human_bytes(d.lost_bytes)}",
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
    found = (f"{_count(report.unreferenced_chunks, 'chunk')} "
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
