"""The read plan: records merged into few range reads in pack order, windows of the image,
and whole images read back through it bit-exact with windows of any size."""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from diskvault.store.format.manifest import Span
from diskvault.store.index.records import ChunkLocation
from diskvault.store.read.image_map import image_spans
from diskvault.store.read.pack_ranges import coalesce
from diskvault.store.read.read_plan import data_windows, planned_pieces

from ...conftest import write_image

records = st.lists(st.tuples(st.sampled_from(["aa", "bb", "cc"]), st.integers(0, 50),
                             st.integers(1, 8)), max_size=40)


def locations_of(layout) -> dict[bytes, ChunkLocation]:
    """Records laid out without overlap: (pack, slot, size) -> offset slot * 10."""
    unique = {(pack, slot): size for pack, slot, size in layout}
    return {f"{pack}{slot}".encode(): ChunkLocation(pack, slot * 10, size, size, 0)
            for (pack, slot), size in unique.items()}


@settings(max_examples=100, deadline=None)
@given(records, st.integers(0, 30), st.integers(1, 100))
def test_every_record_is_read_once_by_a_range_of_its_pack_in_offset_order(layout, gap,
                                                                           max_bytes):
    locations = locations_of(layout)
    ranges = coalesce(locations, gap=gap, max_bytes=max_bytes)
    covered = [digest for pack_range in ranges for digest, _ in pack_range.records]
    assert sorted(covered) == sorted(locations)
    assert [(r.pack_id, r.offset) for r in ranges] == sorted((r.pack_id, r.offset) for r in ranges)
    for pack_range in ranges:
        for _, location in pack_range.records:
            assert location.pack_id == pack_range.pack_id
            assert pack_range.offset <= location.offset
            assert location.offset + location.stored_size <= pack_range.offset + pack_range.length
        assert pack_range.length <= max_bytes or len(pack_range.records) == 1


def test_neighbours_within_the_gap_share_one_read_and_others_do_not():
    locations = {b"a": ChunkLocation("p", 0, 100, 100, 0),
                 b"b": ChunkLocation("p", 150, 100, 100, 0),   # 50 after a: merged
                 b"c": ChunkLocation("p", 1000, 100, 100, 0),  # 750 after b: its own read
                 b"d": ChunkLocation("q", 250, 10, 10, 0)}     # another pack
    ranges = coalesce(locations, gap=64, max_bytes=10_000)
    assert [(r.pack_id, r.offset, r.length) for r in ranges] == [
        ("p", 0, 250), ("p", 1000, 100), ("q", 250, 10)]


def test_windows_hold_about_the_data_asked_and_zero_runs_cost_nothing():
    spans = [Span(i * 10, 10, b"d") if i % 2 else Span(i * 10, 10, None) for i in range(10)]
    windows = list(data_windows(spans, window_bytes=20))
    assert [span for window in windows for span in window] == spans
    assert [sum(s.length for s in w if s.digest) for w in windows] == [20, 20, 10]


def test_windows_of_many_small_chunks_hold_a_bounded_number_of_spans():
    """Memory follows the spans a window holds, not only its bytes: 64 MiB of 256-byte
    chunks in two windows took 0.5 GiB of Python objects."""
    spans = [Span(i * 10, 10, b"d" if i % 3 else None) for i in range(100)]
    windows = list(data_windows(spans, window_bytes=1 << 30, window_spans=16))
    assert [span for window in windows for span in window] == spans
    assert [len(w) for w in windows] == [16] * 6 + [4]


def test_an_image_of_repeated_chunks_reads_back_bit_exact_through_small_windows(repo, tmp_path):
    image = write_image(tmp_path / "mixed.img", 3_000_000, "mixed", seed=21)
    record = repo.backup(image)
    chunks = repo.storage.chunks
    for window_bytes in (1, 50_000, 1 << 30):
        pieces = planned_pieces(chunks, record, image_spans(chunks, record), repo.storage.pool,
                                window_bytes=window_bytes)
        digest = hashlib.sha256()
        for span, data in pieces:
            digest.update(bytes(span.length) if data is None else data)
        assert digest.hexdigest() == hashlib.sha256(image.read_bytes()).hexdigest()
