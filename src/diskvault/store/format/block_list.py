"""A snapshot record's list of manifest blocks, packed: 32 digest bytes and an 8-byte offset a
block (~40 B) instead of a Python object each (~150 B), since a record of a 1 TB image lists
~50,000 blocks and commands may hold records by the hundred. Also its JSON text, the
record's ``"blocks"`` value, written and read straight from and into the packed form.
"""

from __future__ import annotations

import bisect
import re
from array import array
from binascii import hexlify, unhexlify
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

DIGEST_BYTES = 32

# One element of the canonical ``"blocks"`` text -- ``["<64 hex digits>",<offset>]`` -- and
# what follows it: "," before the next, "]" at the end. Text in any other form (upper-case
# hex, spaces, a leading zero) is read the general way (format/snapshots.py).
_ELEMENT = re.compile(rb'\["([0-9a-f]{64})",(0|[1-9][0-9]{0,19})\]([,\]])')


@dataclass(frozen=True, slots=True)  # made on access, one at a time
class BlockRef:
    digest: bytes
    offset: int


class BlockList(Sequence):
    """The blocks in image order; items are BlockRef made on access. ``offsets`` is the
    blocks' starts as an array, for bisection without a list of its own."""

    __slots__ = ("_digests", "offsets")
    __hash__ = None  # mutable while a manifest is built

    def __init__(self, refs: Iterable[BlockRef] = ()):
        self._digests = bytearray()
        self.offsets = array("Q")
        for ref in refs:
            self.append(ref.digest, ref.offset)

    def append(self, digest: bytes, offset: int) -> None:
        """ValueError for a digest of the wrong length (OverflowError: a negative offset or
        one past 2^64): a packed list can hold neither."""
        if len(digest) != DIGEST_BYTES:
            raise ValueError(f"a manifest block digest of {len(digest)} bytes")
        self.offsets.append(offset)
        self._digests += digest

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return BlockList(self[i] for i in range(*index.indices(len(self))))
        offset = self.offsets[index]  # IndexError, and negative indices, as a list's
        start = (index % len(self)) * DIGEST_BYTES
        return BlockRef(bytes(self._digests[start: start + DIGEST_BYTES]), offset)

    def __iter__(self) -> Iterator[BlockRef]:
        digests = memoryview(self._digests)
        for index, offset in enumerate(self.offsets):
            start = index * DIGEST_BYTES
            yield BlockRef(bytes(digests[start: start + DIGEST_BYTES]), offset)

    def __eq__(self, other) -> bool:
        if isinstance(other, BlockList):
            return self.offsets == other.offsets and self._digests == other._digests
        if isinstance(other, Sequence):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    def __repr__(self) -> str:
        return f"BlockList({len(self)} blocks)"

    def find(self, position: int) -> int:
        """Index of the block that holds byte ``position`` (-1 before the first)."""
        return bisect.bisect_right(self.offsets, position) - 1

    def ends(self, size: int) -> array:
        """Where each block's bytes end: at the next block's offset, the last one at
        ``size``."""
        return self.offsets[1:] + array("Q", [size] if self.offsets else [])

    def json_text(self) -> bytes:
        """The canonical JSON of ``[[digest hex, offset], ...]``, as ``json.dumps`` with
        ``separators=(",", ":")`` writes it, without a Python list on the way."""
        text = bytearray(b"[")
        digests = memoryview(self._digests)
        for index, offset in enumerate(self.offsets):
            start = index * DIGEST_BYTES
            text += b'["%s",%d],' % (hexlify(digests[start: start + DIGEST_BYTES]), offset)
        if len(self):
            text[-1:] = b"]"
        else:
            text += b"]"
        return bytes(text)

    @classmethod
    def from_json_text(cls, data: bytes, start: int) -> tuple["BlockList", int] | None:
        """The list whose canonical JSON text (as json_text writes it) begins at ``start``
        in ``data``, and where that text ends; None where the text there is not in that
        form (the caller then reads it the general way)."""
        blocks = cls()
        if data[start: start + 2] == b"[]":
            return blocks, start + 2
        if data[start: start + 1] != b"[":
            return None
        position = start + 1
        while True:
            element = _ELEMENT.match(data, position)
            if element is None:
                return None
            offset = int(element[2])
            if offset >= 1 << 64:
                return None
            blocks.offsets.append(offset)
            blocks._digests += unhexlify(element[1])
            position = element.end()
            if element[3] == b"]":
                return blocks, position
