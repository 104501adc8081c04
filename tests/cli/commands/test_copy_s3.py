"""`diskvault copy` and `init --copy-chunker-params-from` between a local repository and an
s3:// one on a real Ceph radosgw (tests/ceph.py), both directions, plaintext and encrypted:
only what is missing is sent, the copies read back bit-exact, a SIGKILLed copy resumes."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import uuid

import pytest

from diskvault.store.format.config import PLAINTEXT_MODE, REPOKEY_MODE, read_config, write_config
from diskvault.store.format.packs import PackStore
from diskvault.store.repository import Repository

from ...conftest import init_args, run_cli, write_image
from ...store.copy_support import file_sha, image_sha, new_repository
from ...store.test_crash import cli_command, wait_until

MiB = 1024 * 1024
FROM_PASSWORD = {"DISKVAULT_FROM_PASSWORD": os.environ["DISKVAULT_PASSWORD"]}


@pytest.fixture
def url(s3_environment, tmp_path, monkeypatch) -> str:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return f"s3://{s3_environment.bucket}/copy-{uuid.uuid4().hex[:12]}"


def copy(source, destination, *args: str) -> dict:
    """One passphrase for both sides (the test session's): each reads its own variable."""
    return json.loads(run_cli("copy", "--from", str(source), "--to", str(destination),
                              "--json", *args, check=True,
                              env=FROM_PASSWORD).stdout)


def init_like(target, model, mode: str) -> None:
    run_cli("init", "-r", str(target), *init_args(mode), "--copy-chunker-params-from",
            str(model), check=True)


@pytest.mark.parametrize("local_mode, s3_mode", [(PLAINTEXT_MODE, REPOKEY_MODE),
                                                 (REPOKEY_MODE, PLAINTEXT_MODE)],
                         ids=["plain-to-encrypted", "encrypted-to-plain"])
def test_copies_to_s3_and_back_send_only_what_is_missing(url, tmp_path, local_mode, s3_mode):
    image = write_image(tmp_path / "disk.img", 2 * MiB, "mixed", seed=11)
    with new_repository(tmp_path / "local", local_mode, chunk_size=8192) as local:
        first, second = [local.backup(image, "vm1").id for _ in range(2)]
    init_like(url, tmp_path / "local", s3_mode)
    init_like(tmp_path / "back", url, local_mode)

    up_first = copy(tmp_path / "local", url, first)
    up_rest = copy(tmp_path / "local", url)
    down = copy(url, tmp_path / "back")
    down_again = copy(url, tmp_path / "back")

    assert up_first["chunks_sent"] > 0
    assert [s["id"] for s in up_rest["copied"]] == [second] and up_rest["chunks_sent"] == 0
    assert [s["id"] for s in down["copied"]] == [first, second]
    assert down_again["copied"] == [] and down_again["chunks_sent"] == 0
    for where in (url, tmp_path / "back"):
        with Repository.open(where) as repository:
            assert repository.chunker_params(where).avg_bytes == 8192
            assert image_sha(repository, second) == file_sha(image)


def test_a_sigkilled_copy_to_s3_resumes_and_sends_only_the_rest(url, tmp_path):
    image = write_image(tmp_path / "disk.img", 8 * MiB, "random", seed=12)
    with new_repository(tmp_path / "local", REPOKEY_MODE, chunk_size=16384) as local:
        snapshot = local.backup(image, "vm1").id
    init_like(url, tmp_path / "local", PLAINTEXT_MODE)
    with Repository.open(url) as destination:  # small packs: many uploads, time to die
        backend = destination.storage.backend
        write_config(backend, dataclasses.replace(read_config(backend),
                                                  pack_target_bytes=64 * 1024))
        packs = PackStore(backend)

        process = subprocess.Popen(cli_command("copy", "--from", str(tmp_path / "local"),
                                               "--to", url),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                   env={**os.environ, **FROM_PASSWORD})
        wait_until(lambda: len(packs.list()) >= 3, process)
        process.send_signal(signal.SIGKILL)
        process.wait()
        process.stderr.close()
        assert process.returncode == -signal.SIGKILL, "the copy ended before it was killed"
    with Repository.open(url) as destination:
        assert destination.list_snapshots() == []
        landed = destination.totals().chunks

    rerun = copy(tmp_path / "local", url)

    with Repository.open(url) as destination:
        assert image_sha(destination, snapshot) == file_sha(image)
        total = destination.totals().chunks
    assert landed > 0 and 0 < rerun["chunks_sent"] <= total - landed
