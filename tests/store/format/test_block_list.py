"""A record's block list packed (~40 B a block): the same JSON byte for byte as the list of
pairs it replaced, read back into the same blocks, by either way of reading."""

from __future__ import annotations

import json
import tracemalloc
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diskvault.errors import CorruptData
from diskvault.store.format.block_list import BlockList, BlockRef
from diskvault.store.format.snapshots import (CHECKSUM_KEY, RECORD_VERSION, BackupStats,
                                              SnapshotRecord, record_checksum)

T0 = datetime(2026, 11, 1, 3, 15, tzinfo=timezone.utc)
STEP = 20 << 20


def pair_list_json(record: SnapshotRecord) -> bytes:
    """The encoder as it was: the block list as a list of [hex, offset] pairs in the body."""
    body = {"version": RECORD_VERSION, **record.summary(),
            "blocks": [[b.digest.hex(), b.offset] for b in record.blocks]}
    body[CHECKSUM_KEY] = record_checksum(body)
    return json.dumps(body, separators=(",", ":")).encode()


def made(blocks, size: int, name: str = "vm", tags=()) -> SnapshotRecord:
    return SnapshotRecord(id="0123456789abcdef", name=name, time=T0, source="/images/vm.img",
                          size=size, host="h", tags=list(tags), stats=BackupStats(chunks=3),
                          blocks=blocks)


@st.composite
def records(draw) -> SnapshotRecord:
    gaps = draw(st.lists(st.integers(1, 1 << 40), max_size=40))
    offsets = [0]
    for gap in gaps:
        offsets.append(offsets[-1] + gap)
    if not gaps and draw(st.booleans()):
        offsets = []  # an empty image
    digests = draw(st.lists(st.binary(min_size=32, max_size=32), min_size=len(offsets),
                            max_size=len(offsets)))
    size = offsets[-1] + draw(st.integers(1, 1 << 30)) if offsets else 0
    return made([BlockRef(d, o) for d, o in zip(digests, offsets)], size,
                name=draw(st.text(min_size=1, max_size=8)),
                tags=draw(st.lists(st.text(max_size=6), max_size=3)))


@settings(max_examples=150, deadline=None)
@given(records())
def test_the_json_is_the_pair_lists_byte_for_byte_and_reads_back_either_way(record):
    old = pair_list_json(record)
    assert record.to_json() == old
    read = SnapshotRecord.from_json(old, "test")
    assert read == record and list(read.blocks) == list(record.blocks)
    assert read.to_json() == old
    # A writer that spaced its JSON differently is read the general way, checksum and all.
    spaced = SnapshotRecord.from_json(json.dumps(json.loads(old), indent=1).encode(), "test")
    assert spaced == record


def test_a_block_list_answers_as_the_list_of_refs_it_packs():
    refs = [BlockRef(bytes([n]) * 32, n * STEP) for n in range(5)]
    blocks = BlockList(refs)
    assert list(blocks) == refs and blocks == refs and len(blocks) == 5
    assert blocks[-1] == refs[-1] and blocks[1:3] == refs[1:3] and blocks[::2] == refs[::2]
    with pytest.raises(IndexError):
        blocks[5]
    assert [blocks.find(p) for p in (0, STEP - 1, STEP, 4 * STEP + 7)] == [0, 0, 1, 4]
    assert list(blocks.ends(5 * STEP)) == [1 * STEP, 2 * STEP, 3 * STEP, 4 * STEP, 5 * STEP]
    assert list(BlockList().ends(0)) == []
    with pytest.raises(ValueError):
        blocks.append(b"short", 9 * STEP)


@pytest.mark.parametrize("edit, message", [
    (lambda pairs: pairs[1].__setitem__(0, "ab" * 31), "has no valid digest"),
    (lambda pairs: pairs[1].__setitem__(1, -1), "outside any image"),
    (lambda pairs: pairs[1].__setitem__(0, "zz" * 32), "cannot be read"),
    (lambda pairs: pairs[1].__setitem__(0, "AB" * 32), None)])  # upper-case hex reads
def test_a_list_not_in_the_canonical_form_is_read_and_judged_the_general_way(edit, message):
    record = made([BlockRef(bytes([n]) * 32, n * STEP) for n in range(3)], 3 * STEP)
    body = json.loads(record.to_json())
    edit(body["blocks"])
    body[CHECKSUM_KEY] = record_checksum(body)
    data = json.dumps(body, separators=(",", ":")).encode()
    if message is None:
        assert SnapshotRecord.from_json(data, "test").blocks[1].digest == b"\xab" * 32
        return
    with pytest.raises(CorruptData, match=message):
        SnapshotRecord.from_json(data, "test")


def test_a_blocks_key_nested_in_another_field_does_not_stand_for_the_list():
    record = made([BlockRef(bytes([n]) * 32, n * STEP) for n in range(3)], 3 * STEP)
    body = json.loads(record.to_json())
    body["zz"] = {"blocks": [["00" * 32, 0]]}  # after the list: the last "blocks" key
    body[CHECKSUM_KEY] = record_checksum(body)
    read = SnapshotRecord.from_json(json.dumps(body, separators=(",", ":")).encode(), "test")
    assert read.blocks == record.blocks


def test_a_decoded_record_holds_about_40_bytes_a_block():
    """(A list of BlockRef held 153 B a block, and decoding peaked at ~530 B a block.)"""
    count = 20_000
    data = made(BlockList(BlockRef(n.to_bytes(32, "big"), n * STEP) for n in range(count)),
                count * STEP).to_json()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        record = SnapshotRecord.from_json(data, "test")
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(record.blocks) == count
    assert (held - before) / count < 48, (held - before) / count
    assert (peak - before) / count < 100, (peak - before) / count
