"""exFAT cluster chains damaged on purpose (a loop, a cross-link, a run past the volume): the
damaged file is refused, never served as repeated or foreign bytes; the rest still reads."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

from diskvault.errors import DamagedFilesystem
from diskvault.image.filesystems import open_filesystem
from tests.fsimages import make_exfat

CLUSTER = 4096  # what mkfs.exfat picks for a 16 MiB volume


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """An exFAT image with victim.bin (10 clusters) and other.bin (5 clusters) in its root."""
    folder = tmp_path_factory.mktemp("exfat-chains")
    source = folder / "src"
    source.mkdir()
    (source / "victim.bin").write_bytes(random.Random(1).randbytes(10 * CLUSTER))
    (source / "other.bin").write_bytes(random.Random(2).randbytes(5 * CLUSTER))
    return make_exfat(folder / "exfat.img", source, 16)


class ExfatImage:
    """Byte offsets of an exFAT image's FAT and root folder, to damage them as a bug would."""

    def __init__(self, path: Path):
        self.path = path
        boot = path.read_bytes()[:512]
        sector = 1 << boot[108]
        assert sector << boot[109] == CLUSTER
        self.fat = int.from_bytes(boot[80:84], "little") * sector
        self.heap = int.from_bytes(boot[88:92], "little") * sector
        self.root = self.heap + (int.from_bytes(boot[96:100], "little") - 2) * CLUSTER

    def file_entry(self, name: str) -> tuple[int, int]:
        """(offset of the file entry, its first cluster) of `name` in the root folder."""
        data = self.path.read_bytes()[self.root:self.root + CLUSTER]
        for offset in range(0, CLUSTER, 32):
            if data[offset] == 0x85:
                count = data[offset + 1]
                entries = data[offset:offset + 32 * (count + 1)]
                length = entries[32 + 3]
                names = b"".join(entries[64 + 32 * i + 2: 64 + 32 * i + 32]
                                 for i in range(count - 1))
                if names.decode("utf-16-le")[:length] == name:
                    return self.root + offset, int.from_bytes(entries[32 + 20:32 + 24], "little")
        raise AssertionError(f"{name} not in the root folder")

    def use_fat_chain(self, name: str, links: dict[int, int]) -> int:
        """Clear `name`'s NoFatChain flag (fixing the set's checksum), write `links` into the
        FAT (cluster offsets from the file's first cluster -> absolute next cluster), and
        return the first cluster."""
        entry, first = self.file_entry(name)
        with open(self.path, "r+b") as f:
            f.seek(entry)
            count = f.read(2)[1]
            f.seek(entry)
            entries = bytearray(f.read(32 * (count + 1)))
            entries[33] &= ~0x02
            checksum = 0
            for index, byte in enumerate(entries):
                if index not in (2, 3):
                    checksum = (((checksum << 15) | (checksum >> 1)) + byte) & 0xFFFF
            entries[2:4] = checksum.to_bytes(2, "little")
            f.seek(entry)
            f.write(entries)
            for step, target in links.items():
                f.seek(self.fat + 4 * (first + step))
                f.write(target.to_bytes(4, "little"))
        return first


@pytest.fixture
def image(pristine, tmp_path) -> ExfatImage:
    copy = tmp_path / "exfat.img"
    shutil.copyfile(pristine, copy)
    return ExfatImage(copy)


def read(image: ExfatImage, path: str) -> bytes:
    with open(image.path, "rb") as f:
        return open_filesystem(f, "the image").open(path).read()


def test_a_file_with_an_intact_fat_chain_reads_as_written(image, pristine):
    expected = read(image, "/victim.bin")
    entry, first = image.file_entry("victim.bin")
    image.use_fat_chain("victim.bin", {step: first + step + 1 for step in range(9)}
                        | {9: 0xFFFFFFFF})
    assert read(image, "/victim.bin") == expected


def test_a_looping_chain_is_refused_not_served_as_the_loop_repeated(image):
    expected_other = read(image, "/other.bin")
    _, first = image.file_entry("victim.bin")
    image.use_fat_chain("victim.bin", {step: first + step + 1 for step in range(4)}
                        | {4: first})  # 81 -> 82 -> 83 -> 84 -> 85 -> 81
    with pytest.raises(DamagedFilesystem, match=f"loops back to {first:#x}"):
        read(image, "/victim.bin")
    assert read(image, "/other.bin") == expected_other


def test_a_chain_entering_another_files_clusters_is_refused(image):
    expected_other = read(image, "/other.bin")
    _, other_first = image.file_entry("other.bin")
    _, first = image.file_entry("victim.bin")
    image.use_fat_chain("victim.bin", {step: first + step + 1 for step in range(4)}
                        | {4: other_first + 1})
    with pytest.raises(DamagedFilesystem, match=f"which the file at {other_first:#x} owns"):
        read(image, "/victim.bin")
    assert read(image, "/other.bin") == expected_other


def test_a_chain_running_past_the_volume_is_refused(image):
    _, first = image.file_entry("victim.bin")
    image.use_fat_chain("victim.bin", {step: first + step + 1 for step in range(4)}
                        | {4: 0x00FFFFFF})
    with pytest.raises(DamagedFilesystem, match="leaves the volume"):
        read(image, "/victim.bin")


def test_a_file_in_clusters_past_the_end_of_a_truncated_volume_is_refused(image):
    _, first = image.file_entry("victim.bin")
    with open(image.path, "r+b") as f:
        f.truncate(image.heap + (first - 2 + 5) * CLUSTER)  # keeps half of victim.bin
    with pytest.raises(DamagedFilesystem, match="outside the cluster heap"):
        read(image, "/victim.bin")
