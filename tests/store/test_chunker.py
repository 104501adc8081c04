"""Streaming FastCDC must cut exactly where one-shot chunking of the whole stream cuts."""

from __future__ import annotations

import random

from hypothesis import given, settings, strategies as st

from diskvault.store.chunker import StreamChunker
from diskvault.store.config import ChunkerParams

PARAMS = ChunkerParams(min_bytes=256, avg_bytes=1024, max_bytes=4096)


def one_shot_lengths(data: bytes, params: ChunkerParams) -> list[int]:
    chunker = StreamChunker(params)
    return [len(c) for c in chunker.feed(data) + chunker.finish()]


def streamed_lengths(data: bytes, cuts: list[int], params: ChunkerParams) -> list[int]:
    chunker = StreamChunker(params)
    lengths, start = [], 0
    for cut in sorted(set(cuts)) + [len(data)]:
        lengths += [len(c) for c in chunker.feed(data[start:cut])]
        start = cut
    return lengths + [len(c) for c in chunker.finish()]


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
