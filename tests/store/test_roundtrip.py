"""Backup then restore/cat/random reads give back the image bit for bit."""

from __future__ import annotations

import hashlib
import io
import os
import random
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diskvault.store.repository import Repository

from ..conftest import in_both_modes

encryption = in_both_modes()

PIECE = st.one_of(
    st.tuples(st.just("random"), st.integers(1, 70_000)),
    st.tuples(st.just("zeros"), st.integers(1, 90_000)),
    st.tuples(st.just("hole"), st.integers(1, 90_000)),
    st.tuples(st.just("repeat"), st.integers(1, 8)),
    st.tuples(st.just("text"), st.integers(1, 40_000)),
)


def build_image(path: Path, pieces, seed: int) -> bytes:
    """Write pieces (holes made with seek) and return the expected bytes."""
    rng = random.Random(seed)
    block = rng.randbytes(5000)
    expected = bytearray()
    with open(path, "wb") as handle:
        for kind, size in pieces:
            if kind == "hole":
                handle.seek(size, os.SEEK_CUR)
                expected += bytes(size)
                continue
            data = {"random": lambda: rng.randbytes(size), "zeros": lambda: bytes(size),
                    "repeat": lambda: block * size,
                    "text": lambda: (b"line %d\n" % size * size)[:size]}[kind]()
            handle.write(data)
            expected += data
        handle.truncate(len(expected))
    return bytes(expected)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pieces=st.lists(PIECE, max_size=10), seed=st.integers(0, 1000))
def test_restore_is_bit_exact_for_any_mix_of_data_zeros_and_holes(tmp_path, pieces, seed):
    workdir = Path(tempfile.mkdtemp(dir=tmp_path))
    image = workdir / "disk.img"
    expected = build_image(image, pieces, seed)
    with Repository.init(workdir / "repo", chunk_size=4096) as repo:
        record = repo.backup(image)
        assert record.size == len(expected)
        repo.restore(record, workdir / "out.img")
        assert (workdir / "out.img").read_bytes() == expected
        stream = io.BytesIO()
        repo.cat(record, stream)
        assert stream.getvalue() == expected


@pytest.mark.parametrize("size", [0, 1, 1023, 1024, 4095, 4096, 16384, 16385,
                                  4 * 1024 * 1024 - 1, 4 * 1024 * 1024, 4 * 1024 * 1024 + 1])
def test_sizes_around_chunk_and_buffer_boundaries_round_trip(repo, make_image, tmp_path, size):
    image = make_image(size, "mixed", seed=size)
    record = repo.backup(image)
    target = tmp_path / "restored.img"
    repo.restore(record, target)
    assert hashlib.sha256(target.read_bytes()).digest() == hashlib.sha256(image.read_bytes()).digest()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_access_reads_equal_the_image(repo_with_image, data):
    repo, record, expected = repo_with_image
    reader = repo.open_image(record, chunk_cache_bytes=200_000)
    offset = data.draw(st.integers(0, len(expected) + 10))
    length = data.draw(st.integers(0, 300_000))
    assert reader.read(offset, length) == expected[offset: offset + length]


@pytest.fixture(scope="module")
def repo_with_image(tmp_path_factory):
    from tests.conftest import write_image
    folder = tmp_path_factory.mktemp("random-access")
    image = write_image(folder / "disk.img", 3_000_000, "mixed", seed=42)
    with open(image, "r+b") as handle:  # a hole in the middle
        handle.seek(1_000_000)
        handle.write(bytes(200_000))
    repo = Repository.init(folder / "repo", chunk_size=4096)
    record = repo.backup(image)
    yield repo, record, image.read_bytes()
    repo.close()


def test_image_file_object_reads_and_seeks_like_a_file(repo, make_image):
    image = make_image(500_000, "mixed", seed=9)
    expected = image.read_bytes()
    handle = repo.open_image(repo.backup(image)).open()
    handle.seek(123_456)
    assert handle.read(1000) == expected[123_456:124_456]
    assert handle.tell() == 124_456
    handle.seek(-10, io.SEEK_END)
    assert handle.read() == expected[-10:]
    buffer = bytearray(64)
    handle.seek(5)
    assert handle.readinto(buffer) == 64 and bytes(buffer) == expected[5:69]
