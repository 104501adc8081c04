"""backup from standard input (`backup -`) and with a change map (`--changed-ranges`), as
a user runs them: real pipes, real files, the real command."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from diskvault.store.repository import Repository
from tests.conftest import SMALL_CHUNKS, run_cli, write_image


@pytest.fixture
def cli_repo(tmp_path: Path) -> str:
    Repository.init(tmp_path / "repo", chunk_size=SMALL_CHUNKS, encryption="none").close()
    return str(tmp_path / "repo")


def records(repo: str, name: str | None = None):
    """The series' records, whole (a listing gives headers, without their blocks)."""
    with Repository.open(Path(repo)) as repository:
        return [repository.load_snapshot(r.id) for r in repository.list_snapshots(name)]


def manifest(record) -> list:
    return [(block.digest, block.offset) for block in record.blocks]


def test_image_piped_through_cat_gives_the_manifest_of_the_file(cli_repo, tmp_path):
    image = write_image(tmp_path / "vm.img", 3 << 20, "mixed", seed=1)
    piped = subprocess.run(f"cat {image} | {sys.executable} -m diskvault backup -r {cli_repo} "
                           f"- --name vm1", shell=True, capture_output=True)
    assert piped.returncode == 0, piped.stderr
    run_cli("backup", "-r", cli_repo, str(image), "--name", "file", check=True)
    (stream,), (file,) = records(cli_repo, "vm1"), records(cli_repo, "file")
    assert stream.source == "-" and stream.size == 3 << 20
    assert manifest(stream) == manifest(file)


def test_second_stream_backup_is_guided_by_the_previous_snapshot(cli_repo, tmp_path):
    image = write_image(tmp_path / "vm.img", 2 << 20, seed=2)
    run_cli("backup", "-r", cli_repo, "-", "--name", "vm1", input=image.read_bytes(),
            check=True)
    data = bytearray(image.read_bytes())
    data[1 << 20: (1 << 20) + 10] = b"0123456789"
    run_cli("backup", "-r", cli_repo, "-", "--name", "vm1", "--size", str(len(data)),
            input=bytes(data), check=True)
    first, second = records(cli_repo, "vm1")
    assert second.stats.new_chunks <= 4 and second.stats.chunks > 100


def test_stream_shorter_than_its_size_fails_and_records_nothing(cli_repo):
    result = run_cli("backup", "-r", cli_repo, "-", "--name", "vm1", "--size", "100000",
                     input=b"x" * 99_999)
    assert result.returncode == 1
    assert result.stderr.decode().count("\n") == 1
    assert "ended after 99999 bytes" in result.stderr.decode()
    assert records(cli_repo) == []


def test_stream_without_a_series_name_is_refused(cli_repo):
    result = run_cli("backup", "-r", cli_repo, "-", input=b"x" * 10)
    assert result.returncode == 2 and b"--name" in result.stderr


def test_killed_stream_backup_records_nothing_and_a_rerun_completes(cli_repo, tmp_path):
    data = write_image(tmp_path / "vm.img", 4 << 20, seed=3).read_bytes()
    process = subprocess.Popen([sys.executable, "-m", "diskvault", "backup", "-r", cli_repo,
                                "-", "--name", "vm1"], stdin=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    process.stdin.write(data[: len(data) // 2])
    process.stdin.flush()
    deadline = time.monotonic() + 60
    while not [*(Path(cli_repo) / "writers").glob("*.json")]:  # the backup has registered
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    process.stdin.close()
    assert records(cli_repo) == []
    run_cli("backup", "-r", cli_repo, "-", "--name", "vm1", input=data, check=True)
    run_cli("check", "-r", cli_repo, "--read-data", check=True)
    assert records(cli_repo)[0].size == len(data)


def test_nbdinfo_map_since_the_latest_snapshot_reads_only_the_changes(cli_repo, tmp_path):
    image = write_image(tmp_path / "vm.img", 4 << 20, seed=4)
    run_cli("backup", "-r", cli_repo, str(image), "--name", "vm1", check=True)
    base = records(cli_repo, "vm1")[0]
    with open(image, "r+b") as handle:
        handle.seek(65536)
        handle.write(b"changed" * 100)
    dirty = [{"offset": 0, "length": 65536, "type": 0, "description": "clean"},
             {"offset": 65536, "length": 65536, "type": 1, "description": "dirty"},
             {"offset": 131072, "length": (4 << 20) - 131072, "type": 0,
              "description": "clean"}]
    (tmp_path / "map.json").write_text(json.dumps(dirty))
    result = run_cli("backup", "-r", cli_repo, str(image), "--name", "vm1", "--json",
                     "--changed-ranges", str(tmp_path / "map.json"),
                     "--changed-since", base.short_id, "--verify-unchanged", "8", check=True)
    body = json.loads(result.stdout)
    assert body["base_id"] == base.id
    assert body["stats"]["bytes_read"] < 512 * 1024
    info = run_cli("info", "-r", cli_repo, body["id"], check=True).stdout.decode()
    assert f"taken from snapshot {base.id}" in info


def test_map_since_an_older_snapshot_exits_2_with_one_line(cli_repo, tmp_path):
    image = write_image(tmp_path / "vm.img", 1 << 20, seed=5)
    run_cli("backup", "-r", cli_repo, str(image), "--name", "vm1", check=True)
    older = records(cli_repo, "vm1")[0]
    run_cli("backup", "-r", cli_repo, str(image), "--name", "vm1", check=True)
    (tmp_path / "map.txt").write_text(f"base {older.id}\n0 4096\n")
    result = run_cli("backup", "-r", cli_repo, str(image), "--name", "vm1",
                     "--changed-ranges", str(tmp_path / "map.txt"))
    assert result.returncode == 2
    assert result.stderr.decode().count("\n") == 1 and older.short_id in result.stderr.decode()
    assert len(records(cli_repo, "vm1")) == 2


def test_map_that_hides_a_change_fails_verification_naming_offsets(cli_repo, tmp_path):
    image = write_image(tmp_path / "vm.img", 1 << 20, seed=6)
    run_cli("backup", "-r", cli_repo, str(image), "--name", "vm1", check=True)
    with open(image, "r+b") as handle:
        handle.seek(500_000)
        handle.write(b"\xff" * 32)
    (tmp_path / "map.txt").write_text("0 16\n")
    result = run_cli("backup", "-r", cli_repo, str(image), "--name", "vm1",
                     "--changed-ranges", str(tmp_path / "map.txt"), "--changed-since", "vm1",
                     "--verify-unchanged", "100000")
    assert result.returncode == 1
    assert b"differ from the previous snapshot (offset+length: " in result.stderr
    assert len(records(cli_repo, "vm1")) == 1


@pytest.mark.parametrize("argv", [["vm.img", "--size", "10"],
                                  ["vm.img", "--changed-since", "latest"],
                                  ["vm.img", "--verify-unchanged", "3"],
                                  ["-", "--name", "vm1", "--changed-ranges", "map.txt"]])
def test_options_that_do_not_go_together_exit_2(cli_repo, tmp_path, argv):
    write_image(tmp_path / "vm.img", 4096)
    (tmp_path / "map.txt").write_text("0 1\n")
    argv = [str(tmp_path / a) if a in ("vm.img", "map.txt") else a for a in argv]
    result = run_cli("backup", "-r", cli_repo, *argv, input=b"x")
    assert result.returncode == 2, result.stderr
    assert records(cli_repo) == []


def test_json_map_with_an_infinite_length_exits_2_with_one_line(cli_repo, tmp_path):
    image = write_image(tmp_path / "vm.img", 1 << 20, seed=8)
    run_cli("backup", "-r", cli_repo, str(image), "--name", "vm1", check=True)
    (tmp_path / "map.json").write_text(
        '[{"offset": 0, "length": Infinity, "type": 1, "description": "dirty"}]')
    result = run_cli("backup", "-r", cli_repo, str(image), "--name", "vm1",
                     "--changed-ranges", str(tmp_path / "map.json"))
    assert result.returncode == 2
    assert result.stderr.decode().count("\n") == 1 and "Infinity" in result.stderr.decode()
    assert len(records(cli_repo, "vm1")) == 1


def test_empty_stream_is_refused_and_the_series_latest_stays(cli_repo, tmp_path):
    image = write_image(tmp_path / "vm.img", 1 << 20, seed=9)
    run_cli("backup", "-r", cli_repo, str(image), "--name", "vm1", check=True)
    for extra in ([], ["--size", "0"], ["--allow-shrink"]):
        piped = subprocess.run(f": | {sys.executable} -m diskvault backup -r {cli_repo} - "
                               f"--name vm1 {' '.join(extra)}", shell=True,
                               capture_output=True)
        assert piped.returncode == 1, piped.stderr
        assert piped.stderr.decode().count("\n") == 1
        assert "standard input was empty" in piped.stderr.decode()
    assert [r.size for r in records(cli_repo, "vm1")] == [1 << 20]


def _pipe_from_producer_killed_after(data_path: Path, length: int, *args: str):
    """Run `backup -` fed by a producer that writes `length` bytes of the file and is then
    killed with SIGKILL: (the producer's return code, the backup's CompletedProcess)."""
    producer = subprocess.Popen(
        [sys.executable, "-c", "import os, signal, sys\n"
         f"sys.stdout.buffer.write(open({str(data_path)!r}, 'rb').read({length}))\n"
         "sys.stdout.flush()\nos.kill(os.getpid(), signal.SIGKILL)\n"],
        stdout=subprocess.PIPE)
    backup = subprocess.run([sys.executable, "-m", "diskvault", "backup", *args],
                            stdin=producer.stdout, capture_output=True, timeout=120)
    producer.stdout.close()
    return producer.wait(timeout=60), backup


def test_stream_cut_short_by_a_killed_producer_is_refused_unless_a_shrink_is_allowed(
        cli_repo, tmp_path):
    image = write_image(tmp_path / "vm.img", 4 << 20, seed=10)
    run_cli("backup", "-r", cli_repo, "-", "--name", "vm1", input=image.read_bytes(),
            check=True)
    killed, refused = _pipe_from_producer_killed_after(image, 2 << 20, "-r", cli_repo, "-",
                                                       "--name", "vm1")
    assert killed == -signal.SIGKILL
    assert refused.returncode == 1 and refused.stderr.decode().count("\n") == 1
    assert f"ended after {2 << 20} bytes, short of the series' previous snapshot " \
           f"({4 << 20} bytes)" in refused.stderr.decode()
    assert [r.size for r in records(cli_repo, "vm1")] == [4 << 20]

    _, other_series = _pipe_from_producer_killed_after(image, 1 << 20, "-r", cli_repo, "-",
                                                       "--name", "vm2")
    assert other_series.returncode == 0, other_series.stderr  # nothing to compare with
    _, allowed = _pipe_from_producer_killed_after(image, 3 << 20, "-r", cli_repo, "-",
                                                  "--name", "vm1", "--allow-shrink")
    assert allowed.returncode == 0, allowed.stderr
    assert [r.size for r in records(cli_repo, "vm1")] == [4 << 20, 3 << 20]


def test_allow_shrink_is_for_streams_only(cli_repo, tmp_path):
    image = write_image(tmp_path / "vm.img", 1 << 20, seed=11)
    result = run_cli("backup", "-r", cli_repo, str(image), "--allow-shrink")
    assert result.returncode == 2 and b"--allow-shrink" in result.stderr
