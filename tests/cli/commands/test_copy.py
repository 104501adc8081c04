"""`diskvault copy` and `init --copy-chunker-params-from` as a user runs them: real
subprocesses, each repository's own passphrase, --json, and a copy killed with SIGKILL."""

from __future__ import annotations

import json
import signal
import subprocess

import pytest

from diskvault.maintenance.check import check
from diskvault.store.format.config import PLAINTEXT_MODE, REPOKEY_MODE
from diskvault.store.repository import Repository

from ...conftest import run_cli, write_image
from ...maintenance.support import rewrite_config
from ...store.copy_support import file_sha, image_sha, new_repository
from ...store.test_crash import cli_command, finished_packs, unfinished_packs, wait_until

MiB = 1024 * 1024


def source_with_snapshots(root, image, mode=PLAINTEXT_MODE, **options) -> list[str]:
    with new_repository(root, mode, **options) as source:
        return [source.backup(image, "vm1", ("nightly",)).id for _ in range(2)]


def test_copy_json_lists_copied_and_skipped_snapshots_and_what_was_sent(tmp_path):
    image = write_image(tmp_path / "disk.img", 2 * MiB, "mixed", seed=5)
    first, second = source_with_snapshots(tmp_path / "source", image)
    run_cli("init", "-r", str(tmp_path / "copy"), "--encryption", "none", check=True)
    source, destination = str(tmp_path / "source"), str(tmp_path / "copy")

    one = json.loads(run_cli("copy", "--from", source, "--to", destination, first, "--json",
                             check=True).stdout)
    rest = run_cli("copy", "--from", source, "--to", destination, check=True).stdout.decode()

    assert [s["id"] for s in one["copied"]] == [first] and one["skipped"] == []
    assert one["chunks_sent"] > 0 and one["bytes_sent"] > 0 and one["stored_bytes"] > 0
    assert f"snapshot {first[:8]} (vm1, " in rest and "already in" in rest
    assert f"snapshot {second[:8]} (vm1, " in rest and "copied 1 snapshot(s)" in rest
    assert "0 chunks sent" in rest  # the second snapshot is the same image


def test_each_repository_reads_its_own_passphrase(tmp_path):
    image = write_image(tmp_path / "disk.img", MiB, "random", seed=6)
    (tmp_path / "from.txt").write_text("alpha\n")
    (tmp_path / "to.txt").write_text("beta\n")
    with Repository.init(tmp_path / "source", encryption=REPOKEY_MODE,
                         passphrase="alpha") as source:
        snapshot = source.backup(image, "vm1").id
    run_cli("init", "-r", str(tmp_path / "destination"), env={"DISKVAULT_PASSWORD": "beta"},
            check=True)

    copied = run_cli("copy", "--from", str(tmp_path / "source"), "--to",
                     str(tmp_path / "destination"), "--password-file", str(tmp_path / "to.txt"),
                     "--json", env={"DISKVAULT_PASSWORD": "wrong",
                                    "DISKVAULT_FROM_PASSWORD_FILE": str(tmp_path / "from.txt")},
                     check=True)

    assert [s["id"] for s in json.loads(copied.stdout)["copied"]] == [snapshot]
    with Repository.open(tmp_path / "destination", passphrase="beta") as destination:
        assert image_sha(destination, snapshot) == file_sha(image)


def test_copy_without_the_source_passphrase_fails_in_one_line_naming_its_variables(tmp_path):
    image = write_image(tmp_path / "disk.img", MiB, "random", seed=7)
    source_with_snapshots(tmp_path / "source", image, REPOKEY_MODE)
    run_cli("init", "-r", str(tmp_path / "destination"), "--encryption", "none", check=True)

    result = run_cli("copy", "--from", str(tmp_path / "source"), "--to",
                     str(tmp_path / "destination"), input=b"")

    assert result.returncode == 2
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "DISKVAULT_FROM_PASSWORD_FILE" in lines[0], lines
    assert "--from-password-file" in lines[0]


def test_copy_from_a_folder_into_itself_is_refused(tmp_path):
    run_cli("init", "-r", str(tmp_path / "repo"), "--encryption", "none", check=True)
    result = run_cli("copy", "--from", str(tmp_path / "repo"), "--to",
                     str(tmp_path / "." / "repo"))
    assert result.returncode == 2
    assert "same repository" in result.stderr.decode()


def test_init_copies_chunker_params_and_refuses_them_with_chunk_size(tmp_path):
    run_cli("init", "-r", str(tmp_path / "source"), "--encryption", "none", "--chunk-size",
            "8192", check=True)
    made = json.loads(run_cli("init", "-r", str(tmp_path / "twin"), "--copy-chunker-params-from",
                              str(tmp_path / "source"), "--json", check=True).stdout)
    both = run_cli("init", "-r", str(tmp_path / "other"), "--chunk-size", "4096",
                   "--copy-chunker-params-from", str(tmp_path / "source"))

    assert made["chunker"] == {"min_bytes": 2048, "avg_bytes": 8192, "max_bytes": 32768}
    assert both.returncode == 2 and not (tmp_path / "other").exists()


@pytest.mark.parametrize("destination_mode", [PLAINTEXT_MODE, REPOKEY_MODE],
                         ids=["same-ids", "new-ids"])
def test_killed_copy_leaves_destination_consistent_and_rerun_sends_only_the_rest(
        tmp_path, destination_mode):
    image = write_image(tmp_path / "disk.img", 8 * MiB, "random", seed=8)
    source_root, destination_root = tmp_path / "source", tmp_path / "destination"
    with new_repository(source_root, PLAINTEXT_MODE, chunk_size=16384) as source:
        snapshot = source.backup(image, "vm1").id
    with new_repository(destination_root, destination_mode, chunk_size=16384) as destination:
        rewrite_config(destination, pack_target_bytes=32 * 1024)  # ~250 packs: time to die

    process = subprocess.Popen(cli_command("copy", "--from", str(source_root), "--to",
                                           str(destination_root)),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_until(lambda: len(finished_packs(destination_root)) >= 3, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stderr.close()
    assert process.returncode == -signal.SIGKILL, "the copy ended before it could be killed"

    with Repository.open(destination_root) as destination:
        assert destination.list_snapshots() == []
        assert not check(destination.storage).damaged
        # Packs reach the index several at a time: those the kill left unindexed count too.
        destination.storage.catch_up_index()
        landed = destination.totals().chunks

    rerun = json.loads(run_cli("copy", "--from", str(source_root), "--to",
                               str(destination_root), "--json", check=True).stdout)

    with Repository.open(destination_root) as destination:
        total = destination.totals().chunks
        assert image_sha(destination, snapshot) == file_sha(image)
        assert not check(destination.storage, read_data=True).damaged
    assert landed > 0
    assert 0 < rerun["chunks_sent"] <= total - landed
    assert not unfinished_packs(destination_root)


def test_copy_into_a_locked_repository_fails_naming_the_writer_and_copies_nothing(tmp_path):
    image = write_image(tmp_path / "disk.img", MiB, "random", seed=9)
    source_with_snapshots(tmp_path / "source", image)
    run_cli("init", "-r", str(tmp_path / "destination"), "--encryption", "none", check=True)

    with Repository.open(tmp_path / "destination") as destination, \
            destination.writer_lock("backup /dev/vda"):
        result = run_cli("copy", "--from", str(tmp_path / "source"), "--to",
                         str(tmp_path / "destination"))

    assert result.returncode == 73
    assert "backup /dev/vda" in result.stderr.decode()
    with Repository.open(tmp_path / "destination") as destination:
        assert destination.list_snapshots() == []


def test_copy_carries_protect_marks_also_to_snapshots_copied_before(tmp_path):
    image = write_image(tmp_path / "disk.img", MiB, "mixed", seed=8)
    first, second = source_with_snapshots(tmp_path / "source", image)
    run_cli("init", "-r", str(tmp_path / "copy"), "--encryption", "none", check=True)
    source, destination = str(tmp_path / "source"), str(tmp_path / "copy")
    run_cli("protect", "-r", source, first, check=True)

    one = json.loads(run_cli("copy", "--from", source, "--to", destination, "--json",
                             check=True).stdout)
    run_cli("protect", "-r", source, second, check=True)  # after its copy was made
    again = json.loads(run_cli("copy", "--from", source, "--to", destination, "--json",
                               check=True).stdout)
    third = json.loads(run_cli("copy", "--from", source, "--to", destination, "--json",
                               check=True).stdout)

    assert one["protected"] == [first] and again["copied"] == []
    assert again["protected"] == [second] and third["protected"] == []
    refused = run_cli("delete", "-r", destination, first)
    assert refused.returncode == 1 and "protected" in refused.stderr.decode()
    with Repository.open(tmp_path / "copy") as copy:
        assert {r.id for r in copy.list_snapshots()} == {first, second}
