"""Random reads of a snapshot in an S3 repository, on a real radosgw: a reader's small
scattered reads (a filesystem's metadata) are answered from windows of the packs, one range
GET per window rather than one per chunk, and still return the image's exact bytes."""

from __future__ import annotations

import random
import uuid

from diskvault.store.repository import Repository

from ...conftest import SMALL_CHUNKS, run_cli, write_image

MIB = 1 << 20
IMAGE_BYTES = 8 * MIB
READ_BYTES = 4096


def gets(repository: Repository) -> int:
    return repository.storage.requests_made().get("GetObject", 0)


def test_scattered_small_reads_cost_one_range_get_per_pack_window_not_per_chunk(
        s3_environment, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    url = f"s3://{s3_environment.bucket}/windows-{uuid.uuid4().hex[:12]}"
    run_cli("init", "-r", url, "--encryption", "none", "--chunk-size", str(SMALL_CHUNKS),
            check=True)
    image = write_image(tmp_path / "vm.img", IMAGE_BYTES, seed=5)  # ~2,000 chunks, 1 pack
    run_cli("backup", "-r", url, str(image), "--name", "vm", check=True)
    expected = image.read_bytes()
    offsets = list(range(0, IMAGE_BYTES, 32 * 1024))  # 256 reads, each in another chunk
    random.Random(1).shuffle(offsets)

    with Repository.open(url) as repository:
        reader = repository.open_image(repository.find_snapshot("latest"))
        before = gets(repository)
        for offset in offsets:
            assert reader.read(offset, READ_BYTES) == expected[offset:offset + READ_BYTES]
        made = gets(repository) - before

    # the image's 8 MiB of packs in 1 MiB windows, plus those of its manifest blocks
    assert made <= len(offsets) // 10
