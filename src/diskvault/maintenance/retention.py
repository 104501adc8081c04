"""Which snapshots `prune` keeps: a pure function of snapshot times, a keep policy and `now`.

No repository and no I/O here, so every rule is tested on plain values. docs/retention.md
is the user-facing statement of these semantics; keep the two in step.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta, timezone

from ..errors import BadInput


@dataclass(frozen=True)
class SnapshotTime:
    """The little a retention decision needs to know about one snapshot."""

    id: str
    series: str
    time: datetime  # timezone-aware; periods are cut in UTC
    tags: frozenset[str] = frozenset()


@dataclass(frozen=True)
class KeepPolicy:
    """How many periods of each kind to keep (0: rule not given), an optional window, and
    tags whose snapshots are all kept."""

    last: int = 0
    hourly: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0
    within: timedelta | None = None
    tags: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if field.name not in ("within", "tags") and value < 0:
                raise BadInput(f"--keep-{field.name} must be 0 or more, not {value}")
        if self.within is not None and self.within <= timedelta(0):
            raise BadInput(f"--keep-within must be a positive duration, not {self.within}")
        if "" in self.tags:
            raise BadInput("--keep-tag needs a tag name, not an empty text")

    def is_empty(self) -> bool:
        """True when no rule is given: such a policy keeps nothing, so callers refuse it."""
        return self.within is None and not self.tags and not any(
            getattr(self, name) for name, _ in COUNTED_RULES
        )


def _utc(time: datetime) -> datetime:
    if time.tzinfo is None or time.utcoffset() is None:
        raise ValueError(f"retention needs timezone-aware times, got naive {time.isoformat()}")
    return time.astimezone(timezone.utc)


# Rules that keep the newest snapshot of each of the N newest periods holding a snapshot.
# A period key only has to be equal for snapshots in the same period and to change
# monotonically with time; "last" makes every snapshot a period of its own.
COUNTED_RULES: tuple[tuple[str, Callable[[SnapshotTime], Hashable]], ...] = (
    ("last", lambda s: (s.time, s.id)),
    ("hourly", lambda s: _utc(s.time).replace(minute=0, second=0, microsecond=0)),
    ("daily", lambda s: _utc(s.time).date()),
    ("weekly", lambda s: _utc(s.time).isocalendar()[:2]),  # ISO year and week: weeks start Monday
    ("monthly", lambda s: (_utc(s.time).year, _utc(s.time).month)),
    ("yearly", lambda s: _utc(s.time).year),
)

# Months and years are the longest ones (31 and 366 days), so "--keep-within 1m" never
# forgets a snapshot that a calendar reading of "one month" would have kept.
DURATION_UNITS = {"y": timedelta(days=366), "m": timedelta(days=31), "w": timedelta(weeks=1),
                  "d": timedelta(days=1), "h": timedelta(hours=1)}
_DURATION = re.compile(r"(?:([0-9]+)y)?(?:([0-9]+)m)?(?:([0-9]+)w)?(?:([0-9]+)d)?(?:([0-9]+)h)?")


def parse_duration(text: str) -> timedelta:
    """Read "1y2m3d", "3w", "12h" (units largest first, each at most once) as a timedelta."""
    match = _DURATION.fullmatch(text.strip())
    if not text.strip() or match is None:
        raise BadInput(f"cannot read duration {text!r}: use a number and a unit, largest first, "
                       f"e.g. 12h, 7d, 3w, 1m (31 days), 1y (366 days) or 1y2m3d")
    try:
        duration = sum((int(count) * unit for count, unit in
                        zip(match.groups(), DURATION_UNITS.values()) if count), timedelta(0))
    except OverflowError:
        raise BadInput(f"duration {text!r} is too long") from None
    if duration == timedelta(0):
        raise BadInput(f"duration {text!r} is zero; give a positive duration such as 1d")
    return duration


def describe_duration(duration: timedelta) -> str:
    """Render a duration compactly in days and hours ("2d", "1d12h") for reasons and messages."""
    hours, rest = divmod(duration, timedelta(hours=1))
    days, hours = divmod(hours, 24)
    text = (f"{days}d" if days else "") + (f"{hours}h" if hours else "")
    if rest:
        text += f"{rest.total_seconds():g}s"
    return text or "0s"


def select_kept(snapshots: Sequence[SnapshotTime], policy: KeepPolicy,
                now: datetime) -> dict[str, str]:
    """Map each kept snapshot id to every rule that kept it, e.g. "last #1, daily #1".

    Ids not in the map are to be removed. Each series is judged on its own and every rule
    sees all snapshots of the series (a rule is not affected by what another rule keeps),
    so adding a rule or raising a count never removes a snapshot. The map is ordered by
    series name, then newest first. Equal times are ordered by id, the greater id counting
    as the newer, so the answer never depends on the order of `snapshots`.
    """
    _utc(now)
    by_series: dict[str, list[SnapshotTime]] = {}
    seen_ids: set[str] = set()
    for snapshot in snapshots:
        if snapshot.id in seen_ids:
            raise ValueError(f"snapshot id {snapshot.id!r} appears twice")
        seen_ids.add(snapshot.id)
        _utc(snapshot.time)
        by_series.setdefault(snapshot.series, []).append(snapshot)

    kept: dict[str, str] = {}
    for series in sorted(by_series):
        newest_first = sorted(by_series[series], key=lambda s: (s.time, s.id), reverse=True)
        reasons = _reasons_in_series(newest_first, policy, now)
        kept.update((s.id, ", ".join(reasons[s.id])) for s in newest_first if s.id in reasons)
    return kept


def _reasons_in_series(newest_first: list[SnapshotTime], policy: KeepPolicy,
                       now: datetime) -> dict[str, list[str]]:
    reasons: dict[str, list[str]] = {}
    for rule, period_of in COUNTED_RULES:
        chosen = _newest_per_period(newest_first, period_of, getattr(policy, rule))
        for rank, snapshot in enumerate(chosen, start=1):
            reasons.setdefault(snapshot.id, []).append(f"{rule} #{rank}")
    if policy.within is not None:
        try:
            cutoff = now - policy.within
        except OverflowError:  # a window reaching before year 1 keeps everything
            cutoff = datetime.min.replace(tzinfo=timezone.utc)
        label = f"within {describe_duration(policy.within)}"
        for snapshot in newest_first:
            if snapshot.time >= cutoff:
                reasons.setdefault(snapshot.id, []).append(label)
    for snapshot in newest_first:
        for tag in sorted(policy.tags & snapshot.tags):
            reasons.setdefault(snapshot.id, []).append(f"tag {tag}")
    return reasons


def _newest_per_period(newest_first: list[SnapshotTime],
                       period_of: Callable[[SnapshotTime], Hashable],
                       count: int) -> list[SnapshotTime]:
    """The newest snapshot of each of the `count` newest periods that hold a snapshot.

    Only periods with a snapshot are counted, so a week without backups does not use up
    one of the seven days that --keep-daily 7 keeps.
    """
    chosen: list[SnapshotTime] = []
    previous_period: Hashable = object()  # equal to no period
    for snapshot in newest_first:
        if len(chosen) == count:
            break
        period = period_of(snapshot)
        if period != previous_period:  # newest first, so the first one seen is the newest
            chosen.append(snapshot)
            previous_period = period
    return chosen
