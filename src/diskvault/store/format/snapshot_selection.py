"""Choosing a snapshot among records (or their summaries): by id, unique id prefix,
``latest``, or series name. Pure: plain values in, a record out."""

from __future__ import annotations

from collections.abc import Sequence

from ...errors import AmbiguousSnapshot, SnapshotNotFound

# Shorter id prefixes are refused: "5" is more likely a typo than a snapshot.
MIN_PREFIX_DIGITS = 4


def newest_of_series(records: Sequence, series: str):
    """The newest of the records (or summaries) in ``series``; None if it has none."""
    in_series = [r for r in records if r.name == series]
    return _newest(in_series) if in_series else None


def select_snapshot(records: Sequence, selector: str):
    """Resolve a selector among records (or summaries): exact id, ``latest``, a series name
    (its latest), or an id prefix of at least MIN_PREFIX_DIGITS characters. A selector that
    is both a series name and an id prefix is refused: guessing could restore, or delete,
    the wrong snapshot."""
    if not records:
        raise SnapshotNotFound("the repository holds no snapshots yet")
    for record in records:
        if record.id == selector:
            return record
    if selector == "latest":
        return _newest(records)
    in_series = [r for r in records if r.name == selector]
    long_enough = len(selector) >= MIN_PREFIX_DIGITS
    matches = [r for r in records if r.id.startswith(selector.lower())] if long_enough else []
    if in_series and matches:
        shown = ", ".join(r.short_id for r in matches[:5])
        raise AmbiguousSnapshot(f"snapshot {selector!r} is ambiguous: it is the name of a series "
                                f"(latest {_newest(in_series).short_id}) and an id prefix of "
                                f"{shown}; give a full id (see 'diskvault list')")
    if in_series:
        return _newest(in_series)
    if len(matches) == 1:
        return matches[0]
    if matches:
        shown = ", ".join(r.short_id for r in matches[:5])
        raise AmbiguousSnapshot(f"snapshot {selector!r} is ambiguous: it matches {len(matches)} "
                                f"snapshots ({shown}); give more of the id")
    if not long_enough and any(r.id.startswith(selector.lower()) for r in records):
        raise AmbiguousSnapshot(f"snapshot {selector!r} is too short an id prefix: give at "
                                f"least {MIN_PREFIX_DIGITS} characters of the id "
                                f"(see 'diskvault list')")
    raise SnapshotNotFound(f"no snapshot {selector!r}: not an id, id prefix, series name or "
                           f"'latest' (see 'diskvault list')")


def _newest(records: Sequence):
    return max(records, key=lambda r: (r.time, r.id))
