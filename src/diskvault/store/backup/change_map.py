"""Change maps: which byte ranges of an image changed since a named snapshot.

Two inputs are read (docs/change-maps.md): a text format of ``OFFSET LENGTH`` lines
(decimal or 0x hex, ``#`` comments, an optional ``base SNAPSHOT`` line), and the JSON list
that ``nbdinfo --map=qemu:dirty-bitmap:NAME --json`` prints (an entry is changed when bit 0
of its ``type`` is set). Pure: text in, sorted and merged ranges out.
"""

from __future__ import annotations

import bisect
import json
import re
from dataclasses import dataclass

from ...errors import BadInput

# nbdinfo's descriptions of base:allocation extents: such a map says where data is, not
# what changed, and bit 0 there means "hole".
_ALLOCATION_DESCRIPTIONS = {"data", "hole", "zero", "hole,zero"}

# A byte count in the text format: ASCII decimal or 0x hex digits only (int() would also
# take "1_000", "+5" and other scripts' digits).
_TEXT_NUMBER = re.compile(r"(?:0[xX][0-9a-fA-F]+|[0-9]+)")


@dataclass(frozen=True)
class ChangeMap:
    """Changed ranges [start, end), sorted and merged, and the snapshot they are relative
    to, if the map names it."""

    ranges: tuple[tuple[int, int], ...]
    base: str | None = None

    @property
    def changed_bytes(self) -> int:
        return sum(end - start for start, end in self.ranges)


class ChangedRanges:
    """Questions about a change map over one image, including a grown tail (new bytes
    past the base's end count as changed)."""

    def __init__(self, ranges: tuple[tuple[int, int], ...], base_size: int, size: int):
        grown = ((base_size, size),) if size > base_size else ()
        self._ranges = merge_ranges([*ranges, *grown])
        self._starts = [start for start, _ in self._ranges]

    def overlaps(self, start: int, end: int) -> bool:
        """Whether any changed byte lies in [start, end)."""
        index = bisect.bisect_left(self._starts, end) - 1
        return index >= 0 and self._ranges[index][1] > start

    def next_change_start(self, position: int) -> int | float:
        """Where the first changed range ending after ``position`` starts (at or before
        ``position`` if it is inside one); infinity if none does."""
        index = bisect.bisect_right(self._starts, position) - 1
        if index >= 0 and self._ranges[index][1] > position:
            return self._ranges[index][0]
        index += 1
        return self._ranges[index][0] if index < len(self._ranges) else float("inf")

    def next_change_end(self, position: int) -> int:
        """The end of the first changed range ending after ``position`` (or ``position``)."""
        index = bisect.bisect_right(self._starts, position) - 1
        if index >= 0 and self._ranges[index][1] > position:
            return self._ranges[index][1]
        index += 1
        return self._ranges[index][1] if index < len(self._ranges) else position


def merge_ranges(ranges) -> tuple[tuple[int, int], ...]:
    """Sorted, with overlapping and touching ranges joined and empty ones dropped."""
    merged: list[list[int]] = []
    for start, end in sorted(r for r in ranges if r[1] > r[0]):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return tuple((start, end) for start, end in merged)


def parse_change_map(text: str, where: str) -> ChangeMap:
    """The map in ``text`` (JSON when it starts with ``[``); BadInput naming ``where`` and
    the line or entry otherwise."""
    if text.lstrip().startswith("["):
        return _parse_nbdinfo_json(text, where)
    return _parse_text(text, where)


def _parse_text(text: str, where: str) -> ChangeMap:
    ranges, base = [], None
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if words[0] == "base" and len(words) == 2 and base is None:
            base = words[1]
            continue
        if len(words) != 2:
            raise BadInput(f"change map {where}, line {number}: expected 'OFFSET LENGTH' "
                           f"(or 'base SNAPSHOT' once), got {line.strip()!r}")
        offset, length = (_number(word, where, number) for word in words)
        ranges.append((offset, offset + length))
    return ChangeMap(merge_ranges(ranges), base)


def _number(word: str, where: str, line: int) -> int:
    if not _TEXT_NUMBER.fullmatch(word):
        raise BadInput(f"change map {where}, line {line}: {word!r} is not a byte count "
                       f"(decimal or 0x hex, not negative)")
    return int(word, 16) if word.lower().startswith("0x") else int(word, 10)


def _parse_nbdinfo_json(text: str, where: str) -> ChangeMap:
    try:
        entries = json.loads(text)
        ranges = []
        for entry in entries:
            description = entry.get("description")
            if description in _ALLOCATION_DESCRIPTIONS:
                raise BadInput(f"change map {where} is an allocation map (base:allocation), "
                               f"not a dirty bitmap: run nbdinfo --map=qemu:dirty-bitmap:NAME "
                               f"--json")
            offset, length, kind = (_json_count(entry, key)
                                    for key in ("offset", "length", "type"))
            if kind & 1:  # NBD_STATE_DIRTY
                ranges.append((offset, offset + length))
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise BadInput(f"change map {where} is not the JSON list nbdinfo --map --json prints "
                       f"({error}); see docs/change-maps.md for the formats") from None
    return ChangeMap(merge_ranges(ranges))


def _json_count(entry: dict, key: str) -> int:
    """The entry's ``key`` as a JSON integer that is not negative: a float, string or
    boolean (or Infinity) is refused, never rounded into a different range."""
    value = entry[key]
    if type(value) is not int or value < 0:
        raise ValueError(f"{key} {json.dumps(value)} is not a whole byte count")
    return value


def check_fits(changes: ChangeMap, size: int) -> None:
    """BadInput if a range reaches past the image's end: the map is for another image."""
    if changes.ranges and changes.ranges[-1][1] > size:
        end = changes.ranges[-1][1]
        raise BadInput(f"the change map names bytes up to {end}, past the end of the "
                       f"image ({size} bytes): it belongs to another image or size")
