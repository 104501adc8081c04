"""Streaming FastCDC, with or without hints, must cut exactly where one-shot chunking of
the whole stream cuts."""

from __future__ import annotations

import itertools
import random
from concurrent.futures import Future

import blake3
from fastcdc.fastcdc_cy import fastcdc_cy
from hypothesis import given, settings
from hypothesis import strategies as st

from diskvault.store.backup.chunker import (Chunker, Hint, ZeroRun, hash_sequentially,
                                            hints_from_spans, piece_length)
from diskvault.store.format.config import ChunkerParams
from diskvault.store.format.crypto import Keys, chunker_permutation
from diskvault.store.format.manifest import Span

PARAMS = ChunkerParams(min_bytes=256, avg_bytes=1024, max_bytes=4096)


def one_shot_lengths(data: bytes, params: ChunkerParams) -> list[int]:
    chunker = Chunker(params)
    return [piece_length(p) for p in chunker.feed(data) + chunker.finish()]


def streamed(data: bytes, cuts: list[int], params: ChunkerParams, hints=()) -> list:
    chunker = Chunker(params, hints)
    chunks, start = [], 0
    for cut in sorted(set(cuts)) + [len(data)]:
        chunks += chunker.feed(data[start:cut])
        start = cut
    return chunks + chunker.finish()


def streamed_lengths(data: bytes, cuts: list[int], params: ChunkerParams, hints=()) -> list[int]:
    return [piece_length(p) for p in streamed(data, cuts, params, hints)]


def hints_of(data: bytes, params: ChunkerParams) -> list[Hint]:
    """The hints a backup of ``data`` would give the next night."""
    spans, offset = [], 0
    for piece in streamed(data, [], params):
        digest = None if isinstance(piece, ZeroRun) else blake3.blake3(piece[0]).digest()
        spans.append(Span(offset, piece_length(piece), digest))
        offset += piece_length(piece)
    return list(hints_from_spans(spans))


def compressible(rng: random.Random, size: int) -> bytes:
    words = [rng.randbytes(rng.randrange(1, 12)) for _ in range(50)]
    out = bytearray()
    while len(out) < size:
        out += rng.choice(words)
    return bytes(out[:size])


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32), size=st.integers(0, 60_000),
       cuts=st.lists(st.integers(0, 60_000), max_size=12),
       kind=st.sampled_from(["random", "text", "zeros"]))
def test_streaming_cuts_equal_one_shot_cuts(seed, size, cuts, kind):
    rng = random.Random(seed)
    data = {"random": rng.randbytes, "text": lambda n: compressible(rng, n),
            "zeros": bytes}[kind](size)
    cuts = [c for c in cuts if c <= size]
    assert streamed_lengths(data, cuts, PARAMS) == one_shot_lengths(data, PARAMS)


def test_every_buffer_boundary_gives_the_same_cuts():
    data = random.Random(7).randbytes(40_000)
    expected = one_shot_lengths(data, PARAMS)
    for cut in range(0, len(data), 97):
        assert streamed_lengths(data, [cut], PARAMS) == expected


def test_tiny_buffers_one_byte_at_a_time_give_the_same_cuts():
    data = random.Random(3).randbytes(9000)
    assert streamed_lengths(data, list(range(len(data))), PARAMS) == one_shot_lengths(data, PARAMS)


def test_chunks_respect_minimum_and_maximum_and_cover_the_stream():
    data = random.Random(11).randbytes(200_000) + bytes(50_000)
    lengths = one_shot_lengths(data, PARAMS)
    assert sum(lengths) == len(data)
    assert all(length <= PARAMS.max_bytes for length in lengths)
    assert all(length >= PARAMS.min_bytes for length in lengths[:-1])


def test_chunk_boundaries_resynchronise_after_an_insertion():
    rng = random.Random(5)
    data = rng.randbytes(100_000)
    shifted = data[:500] + b"inserted" + data[500:]
    before, after = set(), set()
    for lengths, into in ((one_shot_lengths(data, PARAMS), before),
                          (one_shot_lengths(shifted, PARAMS), after)):
        offset = 0
        for length in lengths:
            offset += length
            into.add(offset)
    resynced = {cut + 8 for cut in before if cut > 10_000}
    assert resynced <= after


EDIT = st.tuples(st.sampled_from(["overwrite", "insert", "delete"]), st.integers(0, 60_000),
                 st.integers(1, 3000))


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32), size=st.integers(0, 60_000), edits=st.lists(EDIT, max_size=4),
       tail=st.integers(-5000, 5000), cuts=st.lists(st.integers(0, 70_000), max_size=8))
def test_hinted_cuts_equal_one_shot_cuts_of_the_new_data(seed, size, edits, tail, cuts):
    rng = random.Random(seed)
    old = compressible(rng, size) if seed % 2 else rng.randbytes(size)
    new = bytearray(old)
    for kind, at, length in edits:
        at = min(at, len(new))
        if kind == "overwrite":
            new[at: at + length] = rng.randbytes(length)[: len(new) - at]
        elif kind == "insert":
            new[at:at] = rng.randbytes(length)
        else:
            del new[at: at + length]
    new = bytes(new[: max(0, len(new) + tail)]) if tail < 0 else bytes(new) + rng.randbytes(tail)
    hints = hints_of(old, PARAMS)
    cuts = [c for c in cuts if c <= len(new)]
    assert streamed_lengths(new, cuts, PARAMS, hints) == one_shot_lengths(new, PARAMS)


def test_unchanged_data_is_taken_from_hints_with_known_digests():
    data = random.Random(8).randbytes(200_000)
    chunks = streamed(data, list(range(0, len(data), 30_000)), PARAMS, hints_of(data, PARAMS))
    hinted = [digest for _, digest in chunks if digest is not None]
    assert len(hinted) == len(chunks) - 1  # all but the last (it ended the data)
    assert all(blake3.blake3(c).digest() == d for c, d in chunks if d is not None)


def test_a_hint_with_changed_bytes_is_not_trusted():
    data = bytearray(random.Random(9).randbytes(50_000))
    hints = hints_of(bytes(data), PARAMS)
    data[20_000] ^= 0xFF
    chunks = streamed(bytes(data), [], PARAMS, hints)
    assert all(blake3.blake3(c).digest() == d for c, d in chunks if d is not None)
    assert [len(c) for c, _ in chunks] == one_shot_lengths(bytes(data), PARAMS)


class CountedHashing:
    """The chunker's two ways of hashing, counted: now (``hash_many``) and ahead
    (``hash_later``, done at once here: the order of threads is not what is tested)."""

    def __init__(self):
        self.now = self.ahead = 0

    def hash_many(self, views: list) -> list[bytes]:
        self.now += len(views)
        return hash_sequentially(views)

    def hash_later(self, views: list) -> Future:
        self.ahead += len(views)
        future: Future = Future()
        future.set_result(hash_sequentially(views))
        return future


def streamed_hashing_ahead(data: bytes, cuts: list[int], params: ChunkerParams, hints,
                           hashing: CountedHashing, depth: int = 2) -> list:
    """Like ``streamed``, each buffer handed to ``hash_ahead`` ``depth`` buffers before it is
    fed, as a backup does."""
    chunker = Chunker(params, hints, hashing.hash_many, hash_later=hashing.hash_later)
    bounds = [0] + sorted(set(cuts)) + [len(data)]
    buffers = [(start, data[start:end]) for start, end in zip(bounds, bounds[1:])]
    chunks = []
    for number, (start, buffer) in enumerate(buffers):
        chunker.hash_ahead(start, buffer)
        if number >= depth:
            chunks += chunker.feed(buffers[number - depth][1])
    for _, buffer in buffers[max(0, len(buffers) - depth):]:
        chunks += chunker.feed(buffer)
    return chunks + chunker.finish()


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32), size=st.integers(0, 60_000), edits=st.lists(EDIT, max_size=4),
       cuts=st.lists(st.integers(0, 60_000), max_size=8), depth=st.integers(0, 3))
def test_hints_hashed_ahead_give_the_chunks_and_digests_of_hashing_on_demand(seed, size, edits,
                                                                              cuts, depth):
    rng = random.Random(seed)
    old = compressible(rng, size) if seed % 2 else rng.randbytes(size)
    new = bytearray(old)
    for kind, at, length in edits:
        at = min(at, len(new))
        if kind == "insert":
            new[at:at] = rng.randbytes(length)
        else:
            new[at: at + length] = rng.randbytes(length)[: len(new) - at]
    new = bytes(new)
    hints, cuts = hints_of(old, PARAMS), [c for c in cuts if c <= len(new)]
    ahead = streamed_hashing_ahead(new, cuts, PARAMS, hints, CountedHashing(), depth)
    assert [piece_length(p) for p in ahead] == one_shot_lengths(new, PARAMS)
    on_demand = streamed(new, cuts, PARAMS, hints)
    assert [(bytes(c), d) for c, d in ahead] == [(bytes(c), d) for c, d in on_demand]


def test_hints_inside_a_buffer_are_hashed_ahead_once_and_only_those_across_two_now():
    rng = random.Random(11)
    data = bytearray(rng.randbytes(400_000))
    hints = hints_of(bytes(data), PARAMS)
    for offset in (50_000, 210_000, 333_000):  # changes: the chunker cuts past hints there
        data[offset: offset + 3000] = rng.randbytes(3000)
    cuts = list(range(0, len(data), 64 * 1024))
    hashing = CountedHashing()
    chunks = streamed_hashing_ahead(bytes(data), cuts, PARAMS, hints, hashing)
    across = [h for h in hints if any(h.offset < cut < h.offset + h.length for cut in cuts)]
    assert hashing.now == len(across)
    assert hashing.ahead == len(hints) - len(across)
    assert [piece_length(p) for p in chunks] == one_shot_lengths(bytes(data), PARAMS)


def test_digests_hashed_ahead_are_forgotten_once_the_chunker_is_past_them():
    """An image changed everywhere: no hint is ever taken, and what was hashed ahead for
    them does not pile up."""
    rng = random.Random(12)
    hints = hints_of(rng.randbytes(300_000), PARAMS)
    chunker = Chunker(PARAMS, hints, hash_later=CountedHashing().hash_later)
    data = rng.randbytes(300_000)
    buffers = [(start, data[start:start + 20_000]) for start in range(0, len(data), 20_000)]
    chunker.hash_ahead(*buffers[0])
    for (_, buffer), (start, after) in zip(buffers, buffers[1:]):
        chunker.hash_ahead(start, after)
        chunker.feed(buffer)
        assert chunker.digests_waiting <= 2 * 20_000 // PARAMS.min_bytes
    chunker.feed(buffers[-1][1])


# -- the keyed chunker (format version 3, encrypted) -----------------------------------------

def permutation_of(seed: int) -> bytes:
    return chunker_permutation(Keys(random.Random(seed).randbytes(32)))


def fastcdc_lengths(data: bytes, params: ChunkerParams, permutation: bytes | None = None) -> list[int]:
    """The oracle: the compiled FastCDC over the whole data (keyed: over its translation)."""
    cuttable = data if permutation is None else data.translate(permutation)
    return [c.length for c in fastcdc_cy(cuttable, params.min_bytes, params.avg_bytes,
                                         params.max_bytes)] if data else []


def keyed_streamed(data: bytes, cuts: list[int], permutation: bytes, hints=(),
                   params: ChunkerParams = PARAMS) -> list:
    chunker = Chunker(params, hints, permutation=permutation)
    chunks, start = [], 0
    for cut in sorted(set(cuts)) + [len(data)]:
        chunks += chunker.feed(data[start:cut])
        start = cut
    return chunks + chunker.finish()


def keyed_hints(data: bytes, permutation: bytes) -> list[Hint]:
    spans, offset = [], 0
    for piece in keyed_streamed(data, [], permutation):
        digest = None if isinstance(piece, ZeroRun) else blake3.blake3(piece[0]).digest()
        spans.append(Span(offset, piece_length(piece), digest))
        offset += piece_length(piece)
    return list(hints_from_spans(spans, holes_as_zeros=True))


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32), key=st.integers(0, 3), size=st.integers(0, 60_000),
       cuts=st.lists(st.integers(0, 60_000), max_size=12),
       kind=st.sampled_from(["random", "text", "zeros", "mixed"]))
def test_streaming_keyed_cuts_equal_one_shot_keyed_cuts(seed, key, size, cuts, kind):
    rng = random.Random(seed)
    data = {"random": rng.randbytes, "text": lambda n: compressible(rng, n), "zeros": bytes,
            "mixed": lambda n: rng.randbytes(n // 3) + bytes(n // 3) + compressible(rng, n - 2 * (n // 3))
            }[kind](size)
    permutation = permutation_of(key)
    cuts = [c for c in cuts if c <= size]
    pieces = keyed_streamed(data, cuts, permutation)
    assert [piece_length(p) for p in pieces] == fastcdc_lengths(data, PARAMS, permutation)
    assert b"".join(bytes(piece_length(p)) if isinstance(p, ZeroRun) else bytes(p[0])
                    for p in pieces) == data


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32), size=st.integers(0, 60_000), edits=st.lists(EDIT, max_size=4),
       cuts=st.lists(st.integers(0, 60_000), max_size=6))
def test_keyed_hinted_cuts_equal_a_full_keyed_read(seed, size, edits, cuts):
    rng = random.Random(seed)
    permutation = permutation_of(seed % 5)
    old = compressible(rng, size)
    new = bytearray(old)
    for kind, at, length in edits:
        at = min(at, len(new))
        if kind == "overwrite":
            new[at: at + length] = rng.randbytes(length)[: len(new) - at]
        elif kind == "insert":
            new[at:at] = rng.randbytes(length)
        else:
            del new[at: at + length]
    new = bytes(new)
    hinted = keyed_streamed(new, [c for c in cuts if c <= len(new)], permutation,
                            keyed_hints(old, permutation))
    assert [piece_length(p) for p in hinted] == fastcdc_lengths(new, PARAMS, permutation)


def test_two_keys_cut_the_same_image_differently():
    data = random.Random(9).randbytes(400_000)
    first, second = (fastcdc_lengths(data, PARAMS, permutation_of(k)) for k in (1, 2))
    assert first != second
    assert first != fastcdc_lengths(data, PARAMS)
    # Not merely shifted: few cut offsets are shared by the two keys.
    offsets = [set(itertools.accumulate(lengths)) for lengths in (first, second)]
    assert len(offsets[0] & offsets[1]) < len(offsets[0]) // 4


def test_plaintext_chunker_cuts_exactly_as_published_fastcdc():
    data = random.Random(12).randbytes(300_000) + bytes(30_000) + compressible(random.Random(2), 50_000)
    assert streamed_lengths(data, [1000, 77_777], PARAMS) == fastcdc_lengths(data, PARAMS)


def test_chunker_permutation_is_a_keyed_permutation_of_the_byte_values():
    first, again, other = permutation_of(1), permutation_of(1), permutation_of(2)
    assert sorted(first) == list(range(256)) and first == again and first != other
