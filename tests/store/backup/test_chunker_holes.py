"""A hole is chunked as the zeros it stands for: the cuts equal those of the fastcdc package
cutting the same bytes written out, whatever its size settings, with or without hints, keyed
(cutting the bytes' keyed translation) or not."""

from __future__ import annotations

import itertools
import random

import blake3
from fastcdc.fastcdc_cy import fastcdc_cy
from hypothesis import given, settings
from hypothesis import strategies as st

from diskvault.store.backup.chunker import Chunker, Hint, ZeroRun, hints_from_spans
from diskvault.store.format.config import ChunkerParams
from diskvault.store.format.crypto import Keys, chunker_permutation
from diskvault.store.format.manifest import Span

# Sizes that exercise FastCDC's two masks (normalisation), none (min = avg: no small-mask
# stretch), max = avg, and sizes that are not powers of two.
PARAM_SETS = [ChunkerParams(256, 1024, 4096), ChunkerParams(64, 256, 1024),
              ChunkerParams(1024, 1024, 4096), ChunkerParams(64, 4096, 4096),
              ChunkerParams(1000, 2048, 5000)]

SEGMENT = st.tuples(st.sampled_from(["data", "zeros", "hole"]),
                    st.one_of(st.integers(1, 300), st.integers(1, 6000), st.integers(1, 40_000)))


def dense_bytes(segments, seed: int) -> tuple[bytes, list]:
    """The image written out, and its pieces as a sparse reader gives them ("hole", n).
    A segment is (kind, length, *salt); its random bytes depend on its place and salt."""
    data, pieces = bytearray(), []
    for index, (kind, length, *salt) in enumerate(segments):
        if kind == "hole":
            pieces.append(("hole", length))
            data += bytes(length)
            continue
        rng = random.Random(f"{seed}:{index}:{salt}")
        piece = rng.randbytes(length) if kind == "data" else bytes(length)
        pieces.append(("data", piece))
        data += piece
    return bytes(data), pieces


# None: FastCDC as published (plaintext and format version 2); else keyed by a test key.
PERMUTATIONS = [None] + [chunker_permutation(Keys(bytes([seed]) * 32)) for seed in (1, 2)]


def reference_cuts(data: bytes, params: ChunkerParams, permutation: bytes | None = None) -> list[int]:
    """Where the fastcdc package cuts the whole image at once (keyed: its translation)."""
    cuttable = data if permutation is None else data.translate(permutation)
    lengths = [c.length for c in fastcdc_cy(cuttable, params.min_bytes, params.avg_bytes,
                                            params.max_bytes)]
    return list(itertools.accumulate(lengths))


def chunk_pieces(pieces, params: ChunkerParams, hints=(), split: int = 0,
                 permutation: bytes | None = None) -> list:
    """Our chunker over the pieces (data buffers split every ``split`` bytes if given)."""
    chunker, out = Chunker(params, hints, permutation=permutation), []
    for kind, value in pieces:
        if kind == "hole":
            out += chunker.feed_zeros(value)
            continue
        step = split or max(1, len(value))
        for start in range(0, max(1, len(value)), step):
            out += chunker.feed(value[start:start + step])
    return out + chunker.finish()


def placed(out) -> list[tuple[int, int, bool]]:
    """(start, end, is a ZeroRun) of each piece."""
    result, offset = [], 0
    for piece in out:
        length = piece.length if isinstance(piece, ZeroRun) else len(piece[0])
        result.append((offset, offset + length, isinstance(piece, ZeroRun)))
        offset += length
    return result


def assert_same_cuts_as_fastcdc(data: bytes, out, params: ChunkerParams,
                                permutation: bytes | None = None) -> None:
    """Every cut we make is fastcdc's; fastcdc's other cuts lie inside our ZeroRuns, which
    cover only zeros; data chunks hold the image's bytes."""
    reference = reference_cuts(data, params, permutation)
    spans = placed(out)
    ours = [end for _, end, _ in spans]
    assert set(ours) <= set(reference)
    for cut in set(reference) - set(ours):
        assert any(start < cut < end and zero for start, end, zero in spans), cut
    for (start, end, zero), piece in zip(spans, out):
        if zero:
            assert data[start:end].count(0) == end - start
        else:
            assert bytes(piece[0]) == data[start:end]


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32), segments=st.lists(SEGMENT, max_size=8),
       params=st.sampled_from(PARAM_SETS), split=st.sampled_from([0, 777, 4096]),
       permutation=st.sampled_from(PERMUTATIONS))
def test_holes_are_cut_exactly_as_fastcdc_cuts_the_zeros_written_out(seed, segments, params,
                                                                      split, permutation):
    data, pieces = dense_bytes(segments, seed)
    assert_same_cuts_as_fastcdc(data, chunk_pieces(pieces, params, split=split,
                                                   permutation=permutation), params, permutation)


def test_a_long_zero_run_is_cut_every_max_bytes_by_fastcdc_itself():
    """The periodic pattern the chunker computes, checked on fastcdc's own cuts: past the
    first chunk that reaches the zeros, every chunk inside them is max_bytes long (zeros
    never match either mask of this fastcdc, whatever the random bytes before them)."""
    rng = random.Random(4)
    for params in PARAM_SETS:
        for _ in range(20):
            head = rng.randbytes(rng.randrange(0, 3 * params.max_bytes))
            zeros_end = len(head) + 20 * params.max_bytes
            data = head + bytes(20 * params.max_bytes) + rng.randbytes(params.max_bytes)
            cuts = [0] + reference_cuts(data, params)
            inside = [(a, b) for a, b in zip(cuts, cuts[1:])
                      if a + params.min_bytes >= len(head) and b <= zeros_end]
            assert len(inside) >= 18
            assert all(b - a == params.max_bytes for a, b in inside)


def test_a_huge_hole_costs_a_few_pieces_not_its_bytes():
    params = PARAM_SETS[0]
    chunker = Chunker(params)
    out = chunker.feed(random.Random(1).randbytes(10_000))
    out += chunker.feed_zeros(1 << 40)
    out += chunker.feed(b"tail") + chunker.finish()
    assert len(out) < 20
    assert placed(out)[-1][1] == 10_000 + (1 << 40) + 4
    assert sum(piece.length for piece in out if isinstance(piece, ZeroRun)) > (1 << 40) - 3 * 4096


def spans_of(out) -> list[Span]:
    """A manifest's spans for the chunks: data with digests, merged zero runs as None."""
    result: list[Span] = []
    for (start, end, zero), piece in zip(placed(out), out):
        if zero or not any(piece[0]):
            if result and result[-1].digest is None:
                start = result.pop().offset
            result.append(Span(start, end - start, None))
        else:
            result.append(Span(start, end - start, blake3.blake3(piece[0]).digest()))
    return result


def old_style_spans(pieces, params: ChunkerParams) -> list[Span]:
    """The spans of a snapshot made before holes were chunked as zeros: every data extent
    chunked on its own (a hole ended the chunk)."""
    result, offset = [], 0
    for is_hole, run in itertools.groupby(pieces, key=lambda piece: piece[0] == "hole"):
        if is_hole:
            length = sum(value for _, value in run)
            result.append(Span(offset, length, None))
            offset += length
            continue
        chunker = Chunker(params)
        for piece in [c for _, value in run for c in chunker.feed(value)] + chunker.finish():
            length = placed([piece])[0][1]
            zero = isinstance(piece, ZeroRun) or not any(piece[0])
            result.append(Span(offset, length, None if zero else blake3.blake3(piece[0]).digest()))
            offset += length
    return result


def edited(segments, edits):
    """The segments with some replaced: a hole appears or goes, data changes."""
    segments = list(segments)
    for index, kind in edits:
        at = index % len(segments)
        segments[at] = (kind, segments[at][1], "edited")
    return segments


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32), segments=st.lists(SEGMENT, min_size=1, max_size=8),
       edits=st.lists(st.tuples(st.integers(0, 7), st.sampled_from(["data", "zeros", "hole"])),
                      max_size=3),
       params=st.sampled_from(PARAM_SETS), old_style=st.booleans(),
       permutation=st.sampled_from(PERMUTATIONS))
def test_hints_from_the_previous_snapshot_give_the_same_cuts_around_holes(seed, segments, edits,
                                                                         params, old_style,
                                                                         permutation):
    """Hints from last night (made by this chunker or the one that ended chunks at holes)
    never change a cut, whatever holes came or went. Keyed chunking is younger than holes
    chunked as zeros, so it has no old-style snapshots."""
    old_style = old_style and permutation is None
    _, old_pieces = dense_bytes(segments, seed)
    old_spans = (old_style_spans(old_pieces, params) if old_style
                 else spans_of(chunk_pieces(old_pieces, params, permutation=permutation)))
    hints = list(hints_from_spans(old_spans, holes_as_zeros=not old_style))
    new_data, new_pieces = dense_bytes(edited(segments, edits), seed)
    assert_same_cuts_as_fastcdc(new_data, chunk_pieces(new_pieces, params, hints,
                                                       permutation=permutation),
                                params, permutation)


def test_an_unchanged_sparse_image_is_taken_from_hints_away_from_its_holes():
    params = PARAM_SETS[0]
    segments = [("data", 50_000), ("hole", 100_000), ("data", 60_000), ("hole", 3000),
                ("data", 40_000)]
    _, pieces = dense_bytes(segments, 12)
    hints = list(hints_from_spans(spans_of(chunk_pieces(pieces, params)), holes_as_zeros=True))
    out = chunk_pieces(pieces, params, hints)
    data_chunks = [piece for piece in out if not isinstance(piece, ZeroRun) and any(piece[0])]
    cut_fresh = [piece for piece in data_chunks if piece[1] is None]
    assert len(data_chunks) > 50
    # Only the last chunk of the image is cut afresh (it ended the data), not the chunks
    # that run into the holes: this chunker made them, so they end at real cuts.
    assert len(cut_fresh) == 1
    assert all(blake3.blake3(c).digest() == d for c, d in data_chunks if d is not None)


def test_hint_at_a_hole_of_an_old_snapshot_is_not_taken_when_the_hole_is_gone():
    """Old snapshots' chunks ended at holes; those ends are not cuts, and a chunk followed by
    a zero run is never a hint."""
    spans = [Span(0, 100, b"a" * 32), Span(100, 50, b"b" * 32), Span(150, 1000, None),
             Span(1150, 70, b"c" * 32), Span(1220, 30, b"d" * 32)]
    assert list(hints_from_spans(spans)) == [Hint(0, 100, b"a" * 32), Hint(1150, 70, b"c" * 32)]


def test_a_chunk_followed_by_zeros_is_a_hint_when_the_snapshot_chunked_holes_as_zeros():
    spans = [Span(0, 100, b"a" * 32), Span(100, 50, b"b" * 32), Span(150, 1000, None),
             Span(1150, 70, b"c" * 32), Span(1220, 30, b"d" * 32)]
    assert list(hints_from_spans(spans, holes_as_zeros=True)) == [
        Hint(0, 100, b"a" * 32), Hint(100, 50, b"b" * 32), Hint(1150, 70, b"c" * 32)]


def test_written_zeros_come_out_as_zero_runs_as_a_hole_does():
    """Zeros that were read (a dense image, a block device) need no cutting or hashing
    either: each chunk of them is a ZeroRun, cut where the hole's would be."""
    params = PARAM_SETS[0]
    head = random.Random(5).randbytes(10_000)
    data = head + bytes(50 * params.max_bytes) + b"tail"
    read = chunk_pieces([("data", data)], params, split=params.max_bytes + 7)
    assert_same_cuts_as_fastcdc(data, read, params)
    zeros_read = sum(piece.length for piece in read if isinstance(piece, ZeroRun))
    assert zeros_read >= 48 * params.max_bytes
