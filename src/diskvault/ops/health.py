"""Which series are healthy, from plain values: the newest snapshot of each series (the
repository's truth) and the runs this host remembers (its failures). No repository, no
clock: the caller passes ``now``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from .runs import Run


@dataclass(frozen=True)
class LatestSnapshot:
    id: str
    time: datetime


@dataclass(frozen=True)
class SeriesHealth:
    """One series: its newest snapshot (None: it has none), how old that is, its newest
    failed run, whether it is failing (its newest run failed, after its newest snapshot: a
    snapshot made since, from another host, clears it) and whether it is older than
    allowed."""

    series: str
    latest: LatestSnapshot | None
    age: timedelta | None
    last_failure: Run | None
    failing: bool
    overdue: bool


def series_health(latest: Mapping[str, LatestSnapshot], runs: Sequence[Run], now: datetime,
                  max_age: timedelta | None = None) -> list[SeriesHealth]:
    """Every series that has a snapshot or a remembered run, by name. A series is overdue
    when ``max_age`` is given and its newest snapshot is older, or it has none."""
    names = sorted(set(latest) | {run.series for run in runs if run.series is not None})
    health = []
    for name in names:
        own = sorted((run for run in runs if run.series == name), key=lambda r: r.finished)
        failures = [run for run in own if not run.succeeded]
        snapshot = latest.get(name)
        age = now - snapshot.time if snapshot else None
        health.append(SeriesHealth(
            series=name, latest=snapshot, age=age,
            last_failure=failures[-1] if failures else None,
            failing=bool(own) and not own[-1].succeeded
            and (snapshot is None or own[-1].finished > snapshot.time),
            overdue=max_age is not None and (age is None or age > max_age)))
    return health


def overdue_series(health: Sequence[SeriesHealth]) -> list[str]:
    return [entry.series for entry in health if entry.overdue]


def last_check(runs: Sequence[Run]) -> Run | None:
    """The newest run of ``check``: when the repository was last checked, and how it went."""
    checks = [run for run in runs if run.command == "check"]
    return max(checks, key=lambda run: run.finished) if checks else None


def describe_age(age: timedelta) -> str:
    """'3d 4h', '5h 12m', '40s': short enough for a table column."""
    seconds = max(0, int(age.total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m" if minutes else f"{seconds}s"
