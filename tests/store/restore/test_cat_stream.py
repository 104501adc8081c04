"""`cat`: the whole image, byte for byte, to a real pipe (gathered writes straight to its
descriptor, the pipe grown first), to a file, and to a stream with no descriptor; plain and
encrypted, for an image with holes, repeated blocks, written zeros and an odd tail."""

from __future__ import annotations

import fcntl
import io
import os
import random
import subprocess
import sys
import threading

import pytest

from diskvault.store.restore.restore import PIPE_BYTES

from ...conftest import in_both_modes

encryption = in_both_modes()
MiB = 1024 * 1024


@pytest.fixture
def snapshot(repo, tmp_path):
    """(repository, record, image bytes): data, a hole, a block repeated, written zeros and
    an odd tail, more than one gathered run long."""
    rng = random.Random(5)
    block = rng.randbytes(48 * 1024)
    image = tmp_path / "disk.img"
    with open(image, "wb") as handle:
        handle.write(rng.randbytes(3 * MiB + 123))
        handle.truncate(6 * MiB)  # a hole of nearly 3 MiB
        handle.seek(6 * MiB)
        handle.write(block * 40)
        handle.write(bytes(MiB + 7))
        handle.write(b"text line\n" * 200_000)
        handle.write(rng.randbytes(4097))
    return repo, repo.backup(image), image.read_bytes()


def drained(read_fd: int) -> tuple[threading.Thread, list[bytes]]:
    """A thread reading ``read_fd`` to its end, as a consumer of the pipe would."""
    received: list[bytes] = []

    def read() -> None:
        with open(read_fd, "rb", buffering=0) as source:
            while data := source.read(MiB):
                received.append(data)

    reader = threading.Thread(target=read)
    reader.start()
    return reader, received


def test_cat_into_a_pipe_is_the_image_and_grows_the_pipe(snapshot):
    repository, record, expected = snapshot
    read_fd, write_fd = os.pipe()
    reader, received = drained(read_fd)
    with open(write_fd, "wb") as out:
        repository.cat(record, out)
        grown = fcntl.fcntl(write_fd, fcntl.F_GETPIPE_SZ)
    reader.join()
    assert b"".join(received) == expected
    # One 64 KiB pipe took a chunk per write and woke the reader for each.
    assert grown == PIPE_BYTES


@pytest.mark.parametrize("sink", ["file", "bytes"])
def test_cat_into_a_file_or_a_stream_without_a_descriptor_is_the_image(snapshot, tmp_path,
                                                                          sink):
    repository, record, expected = snapshot
    if sink == "bytes":
        out = io.BytesIO()
        repository.cat(record, out)
        assert out.getvalue() == expected
        return
    target = tmp_path / "out.img"
    with open(target, "wb") as out:
        out.write(b"head")  # what the stream already holds goes first
        repository.cat(record, out)
    assert target.read_bytes() == b"head" + expected


def test_the_cat_command_into_a_pipe_is_the_image(snapshot):
    repository, record, expected = snapshot
    process = subprocess.run([sys.executable, "-m", "diskvault", "-r",
                              repository.location, "cat", record.id],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    assert process.stderr == b""
    assert process.returncode == 0
    assert process.stdout == expected
