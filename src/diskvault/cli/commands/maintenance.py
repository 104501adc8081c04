"""delete, prune, protect, compact, extend-retention: forgetting snapshots, keeping some,
and giving their space back (check, proving the rest restorable, is check.py)."""

from __future__ import annotations

from datetime import datetime, timezone

import click

from ...maintenance import compact as compaction
from ...maintenance import prune as pruning
from ...maintenance.protection import set_protection
from ...maintenance.compact import DEFAULT_THRESHOLD, CompactResult
from ...maintenance.compact_plan import CompactionPlan
from ...maintenance.compact_requests import PlannedRequests
from ...maintenance.object_lock import allow_bypass, date_label, extend_packs_in_use
from ...maintenance.prune import PrunePlan
from ...maintenance.retention import KeepPolicy, parse_duration
from ..options.completers import complete_series, complete_snapshot
from ..common import json_option, lock_wait_option, opened, repo_option
from ..output.formatting import (count_of, human_bytes, print_json,
                                 print_table, snapshot_json, snapshot_when, warn)
from ..output.run_records import recorded

COMPACT_HINT = "run 'diskvault compact' to give their space back"
bypass_governance_option = click.option(
    "--bypass-governance", "bypass", is_flag=True,
    help="S3 Object Lock in governance mode: delete objects whose retention still holds "
         "(the credentials need s3:BypassGovernanceRetention).")


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
        click.echo(f"{verb} snapshot {record.short_id} ({record.name}, "
                   f"{snapshot_when(record)} UTC)")
    if dry_run:
        click.echo(f"{count_of(len(records), 'snapshot')} to delete (dry run: nothing was "
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
            click.echo(f"snapshot {record.short_id} ({record.name}, {snapshot_when(record)} UTC): "
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
    rows = [[d.record.short_id, d.record.name, snapshot_when(d.record),
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
        click.echo(f"retention of {count_of(extended, 'pack')} extended (to {date_label(until)} "
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
        click.echo(f"{count_of(result.packs_locked, 'pack')} locked by S3 Object Lock until "
                   f"{date_label(datetime.fromisoformat(result.locked_until))}: a compact "
                   f"after that gives their space back")
    if result.packs_retained:
        click.echo(f"retention of {count_of(result.packs_retained, 'pack')} in use extended")
