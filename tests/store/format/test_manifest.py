"""Manifest blocks on their own: encoding round trips, damage is refused, and block
boundaries depend on the entries, so an edit moves only the blocks around it."""

from __future__ import annotations

import blake3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diskvault.errors import CorruptData
from diskvault.store.format.manifest import (MAX_BLOCK_ENTRIES, MIN_BLOCK_ENTRIES, ManifestBuilder,
                                             ManifestEntry, decode_block, encode_block,
                                             placed_entries)

entries_strategy = st.lists(st.builds(
    ManifestEntry, st.integers(1, 2**40),
    st.one_of(st.none(), st.binary(min_size=32, max_size=32))), max_size=200)


@given(entries_strategy)
def test_a_block_decodes_to_the_entries_it_was_encoded_from(entries):
    assert decode_block(encode_block(entries)) == entries


@given(entries_strategy.filter(bool), st.data())
def test_a_block_cut_inside_an_entry_is_refused(entries, data):
    encoded = encode_block(entries)
    entry_ends = {len(encode_block(entries[:count])) for count in range(len(entries) + 1)}
    cut = data.draw(st.integers(5, len(encoded) - 1).filter(lambda cut: cut not in entry_ends))
    with pytest.raises(CorruptData):
        decode_block(encoded[:cut])


def test_a_block_without_its_header_is_refused():
    with pytest.raises(CorruptData, match="bad header"):
        decode_block(b"XXXX" + encode_block([ManifestEntry(10, None)])[4:])


def test_a_block_placed_over_the_wrong_range_is_refused():
    encoded = encode_block([ManifestEntry(100, None), ManifestEntry(50, bytes(32))])
    assert len(placed_entries(encoded, 1000, 1150)) == 2
    with pytest.raises(CorruptData, match="covers 150 bytes"):
        placed_entries(encoded, 1000, 1151)


def digest_of(number: int) -> bytes:
    return blake3.blake3(number.to_bytes(8, "little")).digest()


class Blocks(list):
    """Collects the encoded blocks a ManifestBuilder stores."""

    def store(self, encoded: bytes) -> bytes:
        self.append(encoded)
        return blake3.blake3(encoded).digest()


def build(digests: list[bytes]) -> list[bytes]:
    """The encoded blocks a builder cuts from data entries of 4 KiB each."""
    blocks = Blocks()
    builder = ManifestBuilder(blocks.store)
    for digest in digests:
        builder.add_data(digest, 4096)
    builder.finish()
    return blocks


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 9_999))
def test_one_changed_entry_changes_few_blocks(position):
    digests = [digest_of(n) for n in range(10_000)]
    changed = list(digests)
    changed[position] = digest_of(1_000_000 + position)
    before, after = build(digests), build(changed)
    # The boundaries resynchronise at the first content-defined cut after the change.
    assert len(set(after) - set(before)) <= 3


@given(st.lists(st.binary(min_size=32, max_size=32), max_size=3000))
def test_blocks_hold_between_min_and_max_entries_and_cut_after_a_low_byte_of_zero(digests):
    blocks = [decode_block(block) for block in build(digests)]
    assert [e.digest for block in blocks for e in block] == digests
    for block in blocks[:-1]:
        assert MIN_BLOCK_ENTRIES <= len(block) <= MAX_BLOCK_ENTRIES
        assert len(block) == MAX_BLOCK_ENTRIES or block[-1].digest[0] == 0


def test_zero_runs_in_a_row_become_one_entry():
    blocks = Blocks()
    builder = ManifestBuilder(blocks.store)
    builder.add_zeros(100)
    builder.add_zeros(28)
    builder.add_data(digest_of(1), 10)
    builder.finish()
    assert decode_block(blocks[0]) == [ManifestEntry(128, None), ManifestEntry(10, digest_of(1))]
    assert builder.size == 138



@pytest.mark.parametrize("data_before", [MAX_BLOCK_ENTRIES - 2, MAX_BLOCK_ENTRIES - 1,
                                         MAX_BLOCK_ENTRIES, 2 * MAX_BLOCK_ENTRIES - 1])
def test_zeros_give_the_same_blocks_however_they_arrive(data_before):
    """A hole, all-zero chunks or both: the same zeros give the same blocks, also when the
    zero run is the entry that fills a block."""
    def blocks_with(zero_calls: list[int]) -> list[bytes]:
        blocks = Blocks()
        builder = ManifestBuilder(blocks.store)
        for number in range(data_before):
            builder.add_data(bytes([1]) + digest_of(number)[1:], 10)  # no content cut
        for length in zero_calls:
            builder.add_zeros(length)
        builder.add_data(digest_of(10**6), 10)
        builder.finish()
        return list(blocks)
    assert blocks_with([3, 4, 5]) == blocks_with([12])
    assert all(len(decode_block(block)) <= MAX_BLOCK_ENTRIES for block in blocks_with([12]))
