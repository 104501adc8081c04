"""How the export reads the repository: counted at the backend, the same object nbdkit's
plugin serves from (no nbdkit needed), on a repository made by the real CLI."""

from __future__ import annotations

import random
import threading

from diskvault.nbd.export import SnapshotExport

from diskvault.store.format.config import PLAINTEXT_MODE

from ..conftest import init_args, run_cli, write_image
from .conftest import backed_up

MiB = 1024 * 1024
BLOCK = 4096


def test_random_4k_reads_from_a_cold_export_cost_one_pack_range_read_each(tmp_path,
                                                                           monkeypatch):
    repo = tmp_path / "repo"
    run_cli("init", "-r", str(repo), *init_args(PLAINTEXT_MODE), check=True)
    image = write_image(tmp_path / "disk.img", 32 * MiB)  # default chunks: about 512 of them
    export = SnapshotExport(str(repo), backed_up(repo, image), keys=None)
    backend = export.reader.chunks.packs.backend
    requests, lock = [], threading.Lock()
    get_range = backend.get_range

    def counting(*args) -> bytes:
        with lock:
            requests.append(args)
        return get_range(*args)

    monkeypatch.setattr(backend, "get_range", counting)
    rng = random.Random(1)
    offsets = rng.sample(range(0, 32 * MiB, BLOCK), 64)
    expected = image.read_bytes()
    try:
        for offset in offsets:
            assert export.read(offset, BLOCK) == expected[offset:offset + BLOCK]
    finally:
        export.close()
    assert len(requests) <= len(offsets), (
        f"{len(offsets)} random 4 KiB reads made {len(requests)} range reads")
