"""Streaming FastCDC, optionally guided by the previous snapshot's chunks.

Cuts are exactly those of chunking the whole stream at once. FastCDC decides a cut
by looking at most ``max_bytes`` past a chunk's start, so the unfinished tail of one
buffer is carried over and re-cut with the head of the next.

Hints make a nightly backup of a mostly unchanged image cheap: where the previous
snapshot had a chunk starting at the current position, the same bytes are hashed
(which releases the GIL and runs on all cores) instead of being cut (which does not).
If the digest matches, FastCDC would have made the very same cut, because a cut
depends only on the bytes from the chunk's start to the cut. Only hints that were
followed by another chunk are used: their end was a real cut, not the end of the data
(nor, in snapshots made before holes were chunked as zeros, a hole: such a snapshot's
chunks followed by zeros are not used). On a mismatch, content-defined cutting resumes
until a cut lands on the start of a previous chunk again. Knows nothing of storage.

With ``hash_later``, hints are hashed ahead (hint_digests.py): ``hash_ahead`` is given
each buffer before it is fed. A hint reached without its digest waiting (one across two
buffers) is hashed then (``hash_many``).

A hole is the zeros it stands for, fed without being read (``feed_zeros``): the cuts
are those of the zeros written out, so a sparse file, its dense copy and a block device
over it chunk alike. FastCDC never looks at a chunk's first ``min_bytes``, so once a
chunk starts less than that before the zeros (or in them), its cut depends on zeros
alone: it comes a fixed distance from its start, and so does every next one while the
zeros last. Only the chunk open at the hole's start meets real zeros (about
``max_bytes`` of them, from one preallocated buffer); the rest of a long hole is computed.
Zeros that were read (a dense image, a block device) are taken the same way: a chunk that
starts with that many zeros is a ZeroRun, found by one compare instead of a cut and a hash.

Keyed (format version 3, encrypted): cuts are those of FastCDC over ``data.translate(table)``
for the repository's secret byte permutation, the same as FastCDC with a permuted gear table
(the compiled chunker's table is fixed). Chunks are still the untranslated bytes. Only the
part about to be cut is translated: a window that starts at the minimum plus two average
chunks (where most chunks end) and doubles while content-defined cutting goes on, so where
hints resume after a change little is translated.
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import blake3

from ...errors import DiskvaultError
from ..format.config import ChunkerParams
from .hint_digests import HashLater, HintDigests

try:
    from fastcdc.fastcdc_cy import fastcdc_cy as _fastcdc
except ImportError:  # pragma: no cover - depends on the installed wheel
    _fastcdc = None

MAX_HINT_BATCH = 256


@dataclass(frozen=True)
class Hint:
    """A chunk of the previous snapshot: where it started, how long, its digest."""

    offset: int
    length: int
    digest: bytes


Chunk = tuple[memoryview | bytes, bytes | None]  # (bytes, digest when already known)


@dataclass(frozen=True)
class ZeroRun:
    """Whole chunks inside a hole: known zeros, never read or hashed."""

    length: int


Piece = Chunk | ZeroRun
HashMany = Callable[[list], list[bytes]]
ChunkId = Callable[[object], bytes]  # blake3; keyed in an encrypted repository


def plain_chunk_id(data) -> bytes:
    return blake3.blake3(data).digest()



def hash_sequentially(views: list, chunk_id: ChunkId = plain_chunk_id) -> list[bytes]:
    return [chunk_id(view) for view in views]


def _require_compiled_chunker():
    if _fastcdc is None:
        raise DiskvaultError(
            "the fastcdc package's compiled chunker (fastcdc.fastcdc_cy) is not importable; "
            "only its slow pure-Python fallback is: reinstall with 'pip install --force-reinstall "
            "fastcdc' on a machine with a C compiler and Python headers")
    return _fastcdc


class Chunker:
    """Feed buffers in order (``feed``) and holes (``feed_zeros``), end the data with
    ``finish``. Each call returns the chunks completed so far, chunks of zeros as ZeroRuns.

    Chunks are memoryviews into the caller's buffers (or small bytes objects for a chunk
    that straddles two buffers), valid as long as the buffer is kept alive.
    """

    def __init__(self, params: ChunkerParams, hints: Iterable[Hint] = (),
                 hash_many: HashMany = hash_sequentially, permutation: bytes | None = None,
                 hash_later: HashLater | None = None):
        self._cut = _require_compiled_chunker()
        self._min, self._avg, self._max = params.min_bytes, params.avg_bytes, params.max_bytes
        self._permutation = permutation  # the keyed chunker's table (crypto.chunker_permutation)
        # A keyed window's first size: most chunks end within it (a longer one doubles it).
        self._first_keyed_window = min(self._max, self._min + 2 * self._avg)
        self._keyed_window = self._first_keyed_window
        self._hints: Iterator[Hint] = iter(hints)
        self._lookahead: deque[Hint] = deque()
        self._hash_many = hash_many
        # Hints are verified in batches that double while they match and shrink to one
        # after a mismatch: a batch's hashes past a mismatch are wasted work.
        self._hint_batch = 1
        self._ahead = HintDigests(hash_later) if hash_later is not None else None
        self._pos = 0                 # absolute offset of the next chunk's start
        self._carry = b""             # bytes [carry_start, buffer_start) not yet chunked
        self._carry_start = 0
        self._buffer = memoryview(b"")
        self._buffer_start = 0
        self._zeros, self._zero_chunk = _zero_constants(self._min, self._avg, self._max,
                                                        permutation)
        self._zero_chunk_bytes = len(self._zero_chunk)

    # -- public ------------------------------------------------------------------------
    @property
    def zero_chunk_bytes(self) -> int:
        """The length of every chunk that starts at a cut and is zeros to its end."""
        return self._zero_chunk_bytes

    @property
    def digests_waiting(self) -> int:
        """How many hints hashed ahead wait to be taken: at most those of the buffers
        from the one being fed to the last one given to ``hash_ahead``."""
        return len(self._ahead) if self._ahead is not None else 0

    def hash_ahead(self, offset: int, buffer) -> None:
        """Start hashing the hints wholly inside ``buffer``, which will be fed at ``offset``
        (buffers in order, each after everything fed before it); without ``hash_later``,
        nothing is done."""
        if self._ahead is not None:
            self._ahead.start(offset, buffer, self._hints_from(max(offset, self._ahead.end)),
                              self._pos)

    def feed(self, buffer) -> list[Piece]:
        self._begin(memoryview(buffer))
        out: list[Piece] = []
        self._run(out, final=False)
        self._carry = bytes(self._span(self._pos, self._end()))
        self._carry_start = self._pos
        return out

    def finish(self) -> list[Piece]:
        """Everything left, the last piece included (the data ends here)."""
        self._begin(memoryview(b""))
        out: list[Piece] = []
        self._run(out, final=True)
        self._carry, self._carry_start = b"", self._pos
        return out

    def feed_zeros(self, length: int) -> list[Piece]:
        """Continue the data with ``length`` zeros that were not read (a hole): the same
        cuts as feeding them, with the chunks wholly inside them as ZeroRuns."""
        first, hole_start = self._pos, self._fed_end()
        hole_end, fed = hole_start + length, hole_start
        out: list[Piece] = []
        while fed < hole_end and self._pos + self._min < hole_start:
            piece = min(len(self._zeros), hole_end - fed)
            out += self.feed(self._zeros[:piece])
            fed += piece
        if fed < hole_end:
            out += self._repeat_zero_chunks(fed, hole_end)
        return _zero_runs_inside(out, first, hole_start)

    # -- positions -----------------------------------------------------------------------
    def _fed_end(self) -> int:
        """Offset just past everything fed so far (between calls, the carry ends there)."""
        return self._carry_start + len(self._carry)

    def _begin(self, view: memoryview) -> None:
        self._buffer = view
        self._buffer_start = self._fed_end()

    def _end(self) -> int:
        return self._buffer_start + len(self._buffer)

    def _span(self, start: int, end: int):
        """Bytes [start, end): a view into the buffer, or a small copy across the carry."""
        base = self._buffer_start
        if start >= base:
            return self._buffer[start - base: end - base]
        head = self._carry[start - self._carry_start: end - self._carry_start]
        return head + self._buffer[: end - base].tobytes() if end > base else head

    # -- holes ---------------------------------------------------------------------------
    def _repeat_zero_chunks(self, fed: int, hole_end: int) -> list[Piece]:
        """The chunks of zeros up to ``hole_end``, computed: the open chunk hashes only
        zeros (it starts at most min_bytes before them), so it and every next one is cut
        ``zero_chunk_bytes`` from its start. Bytes [pos, fed) are in the carry."""
        step = self._zero_chunk_bytes
        count = (hole_end - self._pos) // step
        if not count:
            return self.feed(self._zeros[: hole_end - fed])
        start = self._pos
        first = (self._carry + self._zeros[: max(0, start + step - fed)])[:step]
        out: list[Piece] = [(first, None)]
        if count > 1:
            out.append(ZeroRun((count - 1) * step))
        self._pos = start + count * step
        self._carry, self._carry_start = bytes(hole_end - self._pos), self._pos
        return out

    def _zero_chunk_at(self, position: int, end: int) -> bool:
        """Whether the chunk starting at ``position`` is ``zero_chunk_bytes`` of zeros,
        all fed already: then it is cut there, as in a hole (its cut depends on those
        zeros alone). One byte tells most data apart; then one compare, far cheaper
        than cutting (written zeros of a dense image or a block device)."""
        step = self._zero_chunk_bytes
        if position + step > end or self._span(position, position + 1)[0] != 0:
            return False
        view = self._span(position, position + step)
        # bytes == bytes is a memcmp; comparing a memoryview goes byte by byte.
        return view[-1] == 0 and bytes(view) == self._zero_chunk

    def _take_zero_chunks(self, out: list[Piece], end: int) -> bool:
        """Written zeros, one ZeroRun per chunk (each chunk end may be where hints or a
        change map's entries fall in step again), neither cut nor hashed."""
        taken = False
        while self._zero_chunk_at(self._pos, end):
            out.append(ZeroRun(self._zero_chunk_bytes))
            self._pos += self._zero_chunk_bytes
            taken = True
        return taken

    # -- hints ---------------------------------------------------------------------------
    def _hints_from(self, position: int) -> Iterator[Hint]:
        """The hints at or past ``position``, in order (kept in the lookahead as they are
        read, so that ``_hint_at`` sees them too)."""
        for hint in self._lookahead:
            if hint.offset >= position:
                yield hint
        while (hint := next(self._hints, None)) is not None:
            self._lookahead.append(hint)
            if hint.offset >= position:
                yield hint

    def _hint_at(self, position: int, index: int = 0) -> Hint | None:
        """The ``index``-th hint from ``position`` on, if hints continue unbroken from it."""
        while self._lookahead and self._lookahead[0].offset < position:
            self._lookahead.popleft()
        while len(self._lookahead) <= index:
            hint = next(self._hints, None)
            if hint is None:
                return None
            if hint.offset >= position:
                self._lookahead.append(hint)
        hint = self._lookahead[index]
        expected = position if index == 0 else self._lookahead[index - 1].offset + \
            self._lookahead[index - 1].length
        return hint if hint.offset == expected else None

    def _follow_hints(self, out: list[Piece], end: int) -> bool | None:
        """Accept hinted chunks whose bytes are unchanged. True: all matched (more may
        follow); False: a mismatch at the current position; None: the next hint needs
        more data than we have."""
        batch: list[Hint] = []
        while len(batch) < self._hint_batch:
            hint = self._hint_at(self._pos, len(batch))
            if hint is None or hint.offset + hint.length > end:
                break
            batch.append(hint)
        if not batch:
            return None
        views = [self._span(h.offset, h.offset + h.length) for h in batch]
        digests = self._hash_many(views) if self._ahead is None else \
            self._ahead.digests(batch, views, self._hash_many)
        for hint, view, digest in zip(batch, views, digests):
            if digest != hint.digest:
                self._hint_batch = 1
                return False
            out.append((view, digest))
            self._pos += hint.length
        self._hint_batch = min(2 * self._hint_batch, MAX_HINT_BATCH)
        return True

    # -- content-defined cuts ------------------------------------------------------------
    def _cut_by_content(self, out: list[Piece], end: int, final: bool) -> bool:
        """Cut chunks from the current position until a hint starts again. False when the
        rest is an unfinished chunk that needs more data."""
        start = self._pos
        # Inside the carry only the first chunk is cut (from a small copy), so that the
        # buffer itself is never copied.
        in_carry = start < self._buffer_start
        window_end = min(end, start + self._max) if in_carry else end
        if self._permutation is not None:
            window_end = min(window_end, start + self._keyed_window)
        window = self._span(start, window_end)
        offset = 0
        for chunk in self._cut(self._cuttable(window), self._min, self._avg, self._max):
            length = chunk.length
            if start + offset + length == window_end and length < self._max:
                if window_end < end:  # cut short by the keyed window, not by the data
                    self._keyed_window *= 2
                    return True
                if not final:
                    return False
            out.append((window[offset: offset + length], None))
            offset += length
            self._pos = start + offset
            if in_carry or self._hint_at(self._pos) is not None \
                    or self._zero_chunk_at(self._pos, end):
                self._keyed_window = self._first_keyed_window
                return True
        return True

    def _cuttable(self, window):
        """What FastCDC cuts: the window itself, or its keyed translation."""
        if self._permutation is None:
            return window
        return bytes(window).translate(self._permutation)

    def _run(self, out: list[Piece], final: bool) -> None:
        end = self._end()
        while self._pos < end:
            if self._hint_at(self._pos) is not None:
                followed = self._follow_hints(out, end)
                if followed:
                    continue
                if followed is None and not final:
                    return
            if self._take_zero_chunks(out, end):
                continue
            if not self._cut_by_content(out, end, final):
                return


def piece_length(piece: Piece) -> int:
    return piece.length if isinstance(piece, ZeroRun) else len(piece[0])


def _zero_runs_inside(pieces: list[Piece], offset: int, hole_start: int) -> list[Piece]:
    """``pieces`` (starting at ``offset``) with each chunk that starts inside the hole as a
    ZeroRun: its bytes are the hole's zeros, so they need no hash to be known as zeros."""
    out: list[Piece] = []
    for piece in pieces:
        length = piece_length(piece)
        inside = offset >= hole_start and not isinstance(piece, ZeroRun)
        out.append(ZeroRun(length) if inside else piece)
        offset += length
    return out


@functools.lru_cache(maxsize=4)
def _zero_constants(min_bytes: int, avg_bytes: int, max_bytes: int,
                    permutation: bytes | None) -> tuple[memoryview, bytes]:
    """``max_bytes`` of zeros, and the chunk FastCDC cuts from zeros: where it cuts a chunk
    whose hashed part is all zeros, asked of the compiled chunker itself (unkeyed, with this
    fastcdc, it is max_bytes: zeros never match a mask; keyed, zeros are cut as the byte
    the key maps them to). Cached: a change-map backup makes a chunker per changed range,
    and this costs a cut over 256 KiB."""
    zeros = memoryview(bytes(max_bytes))
    cut = _require_compiled_chunker()
    cuttable = zeros if permutation is None else bytes(zeros).translate(permutation)
    length = next(iter(cut(cuttable, min_bytes, avg_bytes, max_bytes))).length
    return zeros, bytes(length)


def hints_from_spans(spans: Iterable, holes_as_zeros: bool = False) -> Iterator[Hint]:
    """Hints from a previous manifest's spans (offset, length, digest or None for zeros):
    data chunks whose end was a real cut. The image's last chunk ended the data, so it is
    never a hint; nor, unless the snapshot chunked holes as zeros (its record says so), is
    a chunk followed by zeros, which may have ended at a hole."""
    held = None
    for span in spans:
        if span.digest is None:
            if holes_as_zeros and held is not None:
                yield Hint(held.offset, held.length, held.digest)
            held = None
            continue
        if held is not None:
            yield Hint(held.offset, held.length, held.digest)
        held = span
