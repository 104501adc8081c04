"""status and report: how each series stands — its newest snapshot and its age from the
repository, its failures and the last check from what this host remembers (ops/runs.py)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import click

from ...errors import SeriesOverdue
from ...maintenance.retention import describe_duration, parse_duration
from ..common import json_option, opened, repo_option
from ..output.formatting import human_bytes, print_json, print_table, warn
from ..output.run_records import location_text


def _when(time: datetime) -> str:
    return f"{time.astimezone(timezone.utc):%Y-%m-%d %H:%M} UTC"


def _gathered(repo):
    """The repository's snapshots and this host's runs of it, and the repository's totals."""
    from ...ops.runs import load_runs, repository_keys
    with opened(repo) as repository:
        records, damaged = repository.scan_snapshots()
        totals = repository.totals()
        repository_id = repository.config.repository_id
    location = location_text(repo)
    if damaged:
        warn(f"{len(damaged)} snapshot record(s) could not be read, first: {damaged[0][1]}; "
             f"run 'diskvault check'")
    return location, records, load_runs(*repository_keys(location, repository_id)), totals


def _run_json(run) -> dict | None:
    return None if run is None else run.to_json()


@click.command()
@repo_option
@click.option("--max-age", default=None, metavar="DURATION",
              help="Exit 3 if a series' newest snapshot is older than this (e.g. 36h, 2d), "
                   "or it has none: for monitoring.")
@json_option
def status(repo, max_age, as_json) -> None:
    """Show each series' newest snapshot, its age, its last failure and the last check."""
    from ...ops.health import LatestSnapshot, describe_age, last_check, series_health
    limit = parse_duration(max_age) if max_age else None
    location, records, runs, _ = _gathered(repo)
    latest = {record.name: LatestSnapshot(record.id, record.time)
              for record in sorted(records, key=lambda r: r.time)}
    health = series_health(latest, runs, datetime.now(timezone.utc), limit)
    check = last_check(runs)
    if as_json:
        print_json({"repository": location, "max_age_s": limit.total_seconds() if limit
                    else None,
                    "series": [{"series": h.series,
                                "latest": h.latest.id if h.latest else None,
                                "time": h.latest.time.isoformat() if h.latest else None,
                                "age_s": h.age.total_seconds() if h.age else None,
                                "overdue": h.overdue, "failing": h.failing,
                                "last_failure": _run_json(h.last_failure)} for h in health],
                    "last_check": _run_json(check)})
    else:
        rows = [[h.series, h.latest.id[:8] if h.latest else "-",
                 _when(h.latest.time) if h.latest else "never",
                 describe_age(h.age) if h.age is not None else "-",
                 "OVERDUE" if h.overdue else ("FAILING" if h.failing else "ok"),
                 _failure_text(h.last_failure)] for h in health]
        if rows:
            print_table(["SERIES", "LATEST", "TIME", "AGE", "STATE", "LAST FAILURE"], rows)
        else:
            click.echo("no series yet: no snapshot, and no run remembered on this host")
        click.echo(_check_text(check))
    late = [h for h in health if h.overdue]
    if late:
        raise SeriesOverdue(
            f"{len(late)} series overdue (newer than {describe_duration(limit)} wanted): "
            + ", ".join(f"{h.series} ({describe_age(h.age) + ' old' if h.age else 'none'})"
                        for h in late))


def _failure_text(run) -> str:
    if run is None:
        return "-"
    return f"{_when(run.finished)} {run.command} exit {run.exit_code}: {run.error}"


def _check_text(run) -> str:
    if run is None:
        return "check: never run from this host"
    scope = "structure and data" if run.figures.get("read_data") else "structure"
    outcome = "no damage found" if run.succeeded else f"FAILED (exit {run.exit_code}): {run.error}"
    return f"check: {_when(run.finished)}, {scope}: {outcome}"


@click.command()
@repo_option
@click.option("--html", "html_file", required=True,
              type=click.Path(path_type=Path, dir_okay=False),
              help="Write the page to this file (replaced whole).")
def report(repo, html_file: Path) -> None:
    """Write a status page: each series' snapshots, bytes per night, dedup, checks, failures."""
    from ...ops.report_page import render_report
    from ...store.host.durable import atomic_replacement, write_all
    location, records, runs, totals = _gathered(repo)
    page = render_report(location, records, runs, totals.stored_bytes,
                         datetime.now(timezone.utc), human_bytes)
    with atomic_replacement(html_file) as fd:
        write_all(fd, page.encode())
    click.echo(f"wrote {html_file}")
