"""A chunk looked up while another thread catches the index up (a rebuild empties the index
and fills it again in batches) is looked up again once the catch-up ends, instead of failing
as missing: a mount's reads beside its own rebuild after a compaction elsewhere."""

from __future__ import annotations

import dataclasses
import threading

import pytest

from diskvault.errors import MissingChunk
from diskvault.store.format.packs import read_footer
from diskvault.store.read.chunk_reader import ChunkReader

from .test_pack_windows import data_digests

MIB = 1 << 20
NO_SUCH_PACK = "0" * 32


def test_a_chunk_missing_during_a_catch_up_is_found_when_it_ends(repo, make_image):
    record = repo.backup(make_image(2 * MIB))
    hidden, trigger = data_digests(repo, record)[:2]
    index = repo.storage.index
    location = index.lookup(hidden)
    answers: list[object] = []

    def look_up_hidden() -> None:
        try:
            answers.append(reader.locate(hidden))
        except MissingChunk as missing:
            answers.append(missing)

    def rebuild_under_way() -> None:
        """As a rebuild: the chunk is gone from the index while another thread reads."""
        index.sweep_out([location.pack_id])
        looker = threading.Thread(target=look_up_hidden)
        looker.start()
        looker.join(2.0)  # the old code answered at once; now it waits for the catch-up
        packs = repo.storage.packs
        index.add_pack(location.pack_id, read_footer(packs, location.pack_id),
                       packs.size(location.pack_id))
        reader_threads.append(looker)

    reader_threads: list[threading.Thread] = []
    reader = ChunkReader(repo.storage.packs, index, repo.storage.codec,
                         on_missing_pack=rebuild_under_way)
    gone = dataclasses.replace(index.lookup(trigger), pack_id=NO_SUCH_PACK)
    assert reader.get(trigger, gone) == repo.storage.chunks.get(trigger)
    reader_threads[0].join()
    assert answers == [location]


def test_a_chunk_not_in_the_index_is_still_missing_when_no_catch_up_finds_it(repo, make_image):
    record = repo.backup(make_image(1 * MIB))
    digest = data_digests(repo, record)[0]
    location = repo.storage.index.lookup(digest)
    repo.storage.index.sweep_out([location.pack_id])
    with pytest.raises(MissingChunk, match="is not in the index"):
        repo.storage.chunks.locate(digest)
