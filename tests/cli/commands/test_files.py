"""`diskvault ls` and `diskvault pull` through the real command: real filesystem images (ext4
in GPT, FAT in MBR, a bare ext4 without a table) backed up into a real repository, then listed
and pulled, compared with the source tree; hostile and damaged images fail cleanly."""

from __future__ import annotations

import json
import os
import random
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from diskvault.store.format.config import REPOKEY_MODE
from diskvault.store.repository import Repository
from tests.conftest import SMALL_CHUNKS, run_cli
from tests.fsimages import (FS_KINDS, PartSpec, assert_trees_equal, file_size_mib, flipped_bytes,
                            make_disk, make_ext4, make_fat, metadata_sectors, populate_tree,
                            require_root)

FUZZ_DEADLINE_S = 60
FUZZ_ATTEMPTS = 5


@pytest.fixture(scope="module")
def backed_up(tmp_path_factory):
    """A repository with three snapshots: 'gpt' (p1 empty, p2 ext4), 'mbr' (p1 FAT16) and
    'bare' (the ext4 filesystem alone); and the source trees. Encrypted, as `init` makes
    them by default (plaintext ls/pull run in tests/store/read/test_browse.py and the mount's
    .files/ tests)."""
    folder = tmp_path_factory.mktemp("files")
    tree = populate_tree(folder / "tree", many=40)
    plain_tree = populate_tree(folder / "plain-tree", symlinks=False, many=40)  # FAT: no links
    ext4 = make_ext4(folder / "ext4.img", tree, 24)
    fat = make_fat(folder / "fat.img", plain_tree, 16)
    make_disk(folder / "gpt.img", [PartSpec(None, 1), PartSpec(ext4, file_size_mib(ext4))])
    make_disk(folder / "mbr.img", [PartSpec(fat, file_size_mib(fat), type="6")], "dos")
    with Repository.init(folder / "repo", chunk_size=SMALL_CHUNKS,
                         encryption=REPOKEY_MODE) as repository:
        for name, image in (("gpt", folder / "gpt.img"), ("mbr", folder / "mbr.img"),
                            ("bare", ext4)):
            repository.backup(image, name=name)
    return {"repo": str(folder / "repo"), "tree": tree, "plain_tree": plain_tree,
            "ext4": ext4}


def cli(backed_up, *args: str) -> subprocess.CompletedProcess:
    return run_cli(args[0], "-r", backed_up["repo"], *args[1:])


def fails_cleanly(result: subprocess.CompletedProcess, exit_code: int) -> str:
    """The error line of a failed command: the exit code asked for, no traceback."""
    stderr = result.stderr.decode()
    assert result.returncode == exit_code, stderr
    assert "Traceback" not in stderr and "internal error" not in stderr
    assert stderr.splitlines()[-1].startswith("diskvault: error: ")
    return stderr.splitlines()[-1]


def test_ls_without_a_location_shows_each_volume_and_its_filesystem(backed_up):
    volumes = json.loads(cli(backed_up, "ls", "gpt", "--json").stdout)["volumes"]
    assert [(v["location"], v["filesystem"]) for v in volumes] == [("p1:", None), ("p2:", "ext4")]
    assert "no known filesystem" in volumes[0]["problem"] and volumes[1]["problem"] is None
    assert volumes[1]["offset"] == 2 << 20
    table = cli(backed_up, "ls", "mbr").stdout.decode().splitlines()
    assert table[0].split() == ["LOCATION", "SIZE", "TYPE", "FILESYSTEM", "LABEL", "NOTE"]
    assert table[1].startswith("p1:") and " fat16 " in table[1]
    bare = json.loads(cli(backed_up, "ls", "bare", "--json").stdout)["volumes"]
    assert [(v["location"], v["type"], v["filesystem"]) for v in bare] == \
        [("/", "whole image", "ext4")]


def test_ls_of_a_folder_shows_what_ls_l_shows(backed_up):
    tree = backed_up["tree"]
    listing = json.loads(cli(backed_up, "ls", "gpt", "p2:/", "--json").stdout)
    entries = {e["name"]: e for e in listing["entries"]}
    assert sorted(entries) == sorted(["lost+found", *os.listdir(tree)])
    for name in os.listdir(tree):
        expected, got = (tree / name).lstat(), entries[name]
        assert (got["mode"], got["mtime_ns"]) == (expected.st_mode, expected.st_mtime_ns), name
        assert (got["uid"], got["gid"]) == (expected.st_uid, expected.st_gid), name
        if stat.S_ISLNK(expected.st_mode):
            assert got["symlink_target"] == os.readlink(tree / name)
        elif stat.S_ISREG(expected.st_mode):
            assert got["size"] == expected.st_size

    lines = cli(backed_up, "ls", "gpt", "p2:/").stdout.decode().splitlines()
    assert lines[0].split() == ["MODE", "UID", "GID", "SIZE", "MODIFIED", "(UTC)", "NAME"]
    row = next(line for line in lines if line.endswith("link-rel -> hello.txt"))
    assert row.startswith("lrwxrwxrwx") and "2020-05-17 12:34:56" in row
    secret = next(line for line in lines if line.endswith(" secret"))
    assert secret.startswith("drwx------")


def test_ls_of_a_file_or_a_symlink_shows_it_alone(backed_up):
    one = json.loads(cli(backed_up, "ls", "gpt", "p2:/secret/key", "--json").stdout)
    assert one["entries"] is None
    assert (one["entry"]["size"], stat.S_IMODE(one["entry"]["mode"])) == (17, 0o600)
    lines = cli(backed_up, "ls", "bare", "/dirlink").stdout.decode().splitlines()
    assert len(lines) == 2 and lines[1].endswith("dirlink -> deep/a")


@pytest.mark.parametrize("snapshot, prefix", [("gpt", "p2:"), ("mbr", "p1:"), ("bare", "")])
def test_a_pulled_tree_equals_the_source(backed_up, tmp_path, snapshot, prefix):
    posix = snapshot != "mbr"
    source = backed_up["tree" if posix else "plain_tree"]
    result = cli(backed_up, "pull", snapshot, f"{prefix}/", str(tmp_path / "copy"))
    assert result.returncode == 0, result.stderr.decode()
    summary = result.stdout.decode()
    files = sum(1 for p in source.rglob("*") if p.is_file() and not p.is_symlink())
    assert summary.startswith(f"pulled {prefix}/ from snapshot ") and f" {files} files" in summary
    # atimes as the image holds them (reading the source tree since has moved its own)
    listed = json.loads(cli(backed_up, "ls", snapshot, f"{prefix}/secret", "--json").stdout)
    assert {e["name"]: e["atime_ns"] for e in listed["entries"]} == \
        {"key": (tmp_path / "copy" / "secret" / "key").stat().st_atime_ns}
    spec = FS_KINDS["ext4" if posix else "fat16"]
    assert_trees_equal(source, tmp_path / "copy", modes=posix, symlinks=posix,
                       owners=posix and os.geteuid() == 0, atimes=False,
                       time_resolution_ns=spec.time_resolution_ns)


def test_a_pulled_file_gets_the_name_asked_for_or_goes_into_a_folder(backed_up, tmp_path):
    tree = backed_up["tree"]
    assert cli(backed_up, "pull", "gpt", "p2:/big.bin", str(tmp_path / "renamed")).returncode == 0
    assert (tmp_path / "renamed").read_bytes() == (tree / "big.bin").read_bytes()
    assert (tmp_path / "renamed").stat().st_mtime_ns == (tree / "big.bin").stat().st_mtime_ns
    assert cli(backed_up, "pull", "bare", "/link-rel", str(tmp_path)).returncode == 0
    assert os.readlink(tmp_path / "link-rel") == "hello.txt"
    alone = cli(backed_up, "pull", "bare", "/bin/up", str(tmp_path))  # '../hello.txt' alone
    assert alone.returncode == 0, alone.stderr
    assert os.readlink(tmp_path / "up") == "../hello.txt"
    again = cli(backed_up, "pull", "gpt", "p2:/big.bin", str(tmp_path / "renamed"))
    assert "already exists" in fails_cleanly(again, 2)


@pytest.mark.parametrize("args, exit_code, words", [
    (("ls", "gpt", "p2:/no/such"), 2, "partition 2: /no/such: no such file or directory"),
    (("ls", "gpt", "p1:/"), 2, "partition 1 holds no known filesystem (first bytes look like"),
    (("ls", "gpt", "/etc"), 2, "has a partition table: name a partition, as in p1:/etc"),
    (("ls", "gpt", "p7:/"), 2, "no partition 7; its partitions are p1"),
    (("ls", "bare", "p1:/"), 2, "no partition 1; it has no partition table"),
    (("ls", "gpt", "p2:/hello.txt/x"), 2, "is not a directory"),
    (("pull", "gpt", "p2:/missing", "OUT"), 2, "/missing: no such file or directory"),
    (("pull", "gpt", "p2:/hello.txt", "NOWHERE/x"), 2, "is not an existing folder"),
])
def test_bad_locations_fail_with_one_line_saying_why(backed_up, tmp_path, args, exit_code,
                                                      words):
    args = [str(tmp_path / a) if a in ("OUT", "NOWHERE/x") else a for a in args]
    assert words in fails_cleanly(cli(backed_up, *args), exit_code)


def _patch_name(image: Path, old: bytes, new: bytes) -> None:
    """Rename a directory entry in place, byte for byte (tools refuse to write such names)."""
    data = bytearray(image.read_bytes())
    position = data.index(bytes([len(old)]) + b"\x01" + old)  # name length, type: file
    data[position + 2: position + 2 + len(old)] = new
    image.write_bytes(bytes(data))


def test_pull_refuses_hostile_entries_one_line_each_and_copies_the_rest(tmp_path):
    require_root("device files can only be made by root")
    source = tmp_path / "src"
    (source / "sub").mkdir(parents=True)
    (source / "good.txt").write_bytes(b"good\n")
    (source / "DOTDOT").write_bytes(b"evil\n")
    os.mknod(source / "disk", stat.S_IFBLK | 0o600, os.makedev(8, 0))
    os.symlink("/etc/passwd", source / "abs-link")
    os.symlink("../../../etc/shadow", source / "sub" / "escape")
    os.symlink("../good.txt", source / "sub" / "fine")
    image = make_ext4(tmp_path / "hostile.img", source, 16)
    _patch_name(image, b"DOTDOT", b"../x/y")
    with Repository.init(tmp_path / "repo", chunk_size=SMALL_CHUNKS) as repository:
        repository.backup(image, name="hostile")
    destination = tmp_path / "box" / "out"
    destination.parent.mkdir()

    result = run_cli("pull", "-r", str(tmp_path / "repo"), "hostile", "/", str(destination))

    last = fails_cleanly(result, 1)
    assert "2 entries were not copied" in last
    refused = [line for line in result.stderr.decode().splitlines()
               if line.startswith("diskvault: not copied: ")]
    assert len(refused) == 2
    reasons = {"/../x/y": "contains '/'", "/disk": "device files are not copied"}
    for path, reason in reasons.items():
        assert any(f"the image: {path}: refused: " in line and reason in line
                   for line in refused), path
    assert (destination / "good.txt").read_bytes() == b"good\n"
    links = {"abs-link": "/etc/passwd", "sub/escape": "../../../etc/shadow",
             "sub/fine": "../good.txt"}
    assert {name: os.readlink(destination / name) for name in links} == links
    assert sorted(os.listdir(destination)) == ["abs-link", "good.txt", "lost+found", "sub"]
    assert os.listdir(destination.parent) == ["out"]
    assert "pulled / from snapshot" in result.stdout.decode()


def _debugfs(image: Path, *requests: str) -> None:
    for request in requests:
        subprocess.run(["debugfs", "-w", "-R", request, str(image)], check=True,
                       capture_output=True)


@pytest.fixture(scope="module")
def damaged(tmp_path_factory):
    """A repository with one snapshot of an ext4 whose /huge claims 2**64-1 bytes and whose
    /a/b/up is a hard link to the folder /a (a loop), next to healthy files."""
    folder = tmp_path_factory.mktemp("damaged")
    source = folder / "src"
    (source / "a" / "b").mkdir(parents=True)
    (source / "a" / "b" / "leaf.txt").write_bytes(b"leaf\n")
    (source / "good.txt").write_bytes(b"good\n")
    (source / "huge").write_bytes(b"x" * 5000)
    (source / "zz-after.txt").write_bytes(b"after\n")
    image = make_ext4(folder / "damaged.img", source, 16)
    _debugfs(image, "sif /huge size 0xffffffffffffffff", "link /a /a/b/up")
    with Repository.init(folder / "repo", chunk_size=SMALL_CHUNKS) as repository:
        repository.backup(image, name="damaged")
    return folder / "repo"


def test_one_entry_with_an_absurd_size_costs_only_that_entry_in_ls(damaged):
    result = run_with_deadline("ls", "-r", str(damaged), "damaged", "/")

    last = fails_cleanly(result, 1)
    assert "1 entry was damaged" in last
    names = [line.split()[-1] for line in result.stdout.decode().splitlines()[1:]]
    assert names == ["a", "good.txt", "lost+found", "zz-after.txt"]
    problems = result.stderr.decode().splitlines()[:-1]
    assert len(problems) == 1 and "/huge" in problems[0] and "size" in problems[0]


def test_a_folder_that_is_its_own_ancestor_is_flagged_by_ls(damaged):
    result = run_with_deadline("ls", "-r", str(damaged), "damaged", "/a/b")

    fails_cleanly(result, 1)
    assert "up" in result.stdout.decode() and "leaf.txt" in result.stdout.decode()
    problems = result.stderr.decode().splitlines()[:-1]
    assert len(problems) == 1 and "/a/b/up: this folder is /a again" in problems[0]


def test_pull_of_a_damaged_tree_copies_the_rest_and_names_each_bad_entry(damaged, tmp_path):
    result = run_with_deadline("pull", "-r", str(damaged), "damaged", "/", str(tmp_path / "out"))

    assert "2 entries were not copied" in fails_cleanly(result, 1)
    problems = result.stderr.decode().splitlines()[:-1]
    assert len(problems) == 2
    assert any("/huge" in line and "size" in line for line in problems)
    assert any("/a/b/up" in line and "loop" in line for line in problems)
    assert (tmp_path / "out" / "zz-after.txt").read_bytes() == b"after\n"
    assert (tmp_path / "out" / "a" / "b" / "leaf.txt").read_bytes() == b"leaf\n"

    alone = run_with_deadline("pull", "-r", str(damaged), "damaged", "/huge", str(tmp_path / "h"))
    assert "/huge" in fails_cleanly(alone, 1)
    assert len(alone.stderr.decode().splitlines()) == 1


def run_with_deadline(*args: str) -> subprocess.CompletedProcess:
    """The real command, failing the test if it does not end in time (a hang)."""
    try:
        return subprocess.run([sys.executable, "-m", "diskvault", *args], capture_output=True,
                              timeout=FUZZ_DEADLINE_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"diskvault {' '.join(args)} did not finish in {FUZZ_DEADLINE_S} s")


def test_flipped_bytes_in_filesystem_metadata_make_ls_and_pull_fail_cleanly(tmp_path):
    source = populate_tree(tmp_path / "src", many=20, big_size=100_000)
    image = bytearray(make_ext4(tmp_path / "fs.img", source, 8).read_bytes())
    sectors = metadata_sectors(bytes(image), source)
    rng = random.Random(11)
    damaged = 0
    for attempt in range(FUZZ_ATTEMPTS):
        with flipped_bytes(image, sectors, rng, flips=40) as flipped:
            (tmp_path / "fuzzed.img").write_bytes(flipped.read())
        repo, out = tmp_path / f"repo{attempt}", tmp_path / f"out{attempt}"
        with Repository.init(repo, chunk_size=SMALL_CHUNKS) as repository:
            repository.backup(tmp_path / "fuzzed.img", name="fuzzed")
        for result in (run_with_deadline("ls", "-r", str(repo), "fuzzed", "/many"),
                       run_with_deadline("pull", "-r", str(repo), "fuzzed", "/", str(out))):
            if result.returncode != 0:
                damaged += 1
                assert result.returncode in (1, 2)
                fails_cleanly(result, result.returncode)
    written = {p.name for p in tmp_path.iterdir()} - {"src", "fs.img", "fuzzed.img", "state", "cache"}
    assert written <= {f"{kind}{n}" for kind in ("repo", "out") for n in range(FUZZ_ATTEMPTS)}
    assert damaged, "no run met any damage: the flips did not reach the metadata"


def test_ls_says_once_that_a_gpt_entry_past_the_image_end_is_not_shown(tmp_path):
    image = tmp_path / "disk.img"
    make_disk(image, [PartSpec(None, 2), PartSpec(None, 2)])
    with open(image, "r+b") as f:  # entry 2's first and last LBA, far past the end
        f.seek(1024 + 128 + 32)
        f.write((1 << 40).to_bytes(8, "little") + ((1 << 40) + 2047).to_bytes(8, "little"))
    repo = str(tmp_path / "repo")
    Repository.init(Path(repo), chunk_size=SMALL_CHUNKS, encryption="none").close()
    run_cli("backup", "-r", repo, str(image), "--name", "d", check=True)
    result = run_cli("ls", "-r", repo, "d", check=True)
    assert "p1:" in result.stdout.decode() and "p2:" not in result.stdout.decode()
    assert result.stderr.decode().splitlines() == [
        f"diskvault: warning: partition p2 is not shown: it starts at byte {(1 << 40) * 512}, "
        f"outside the image ({image.stat().st_size} bytes)"]
