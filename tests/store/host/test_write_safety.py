"""Where diskvault writes, and who may read it: never through a planted link, never inside
its own repository unless it is the repository writing, and every repository file private
(0600 files, 0700 folders, whatever the umask). Real repositories, real links, a real bind
mount, a second real user."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from diskvault.store.coordination.locking import LOCK_SPARE_FILE
from diskvault.store.format.config import read_config, write_config
from diskvault.store.host.durable import create_exclusive, open_folder
from diskvault.store.repository import Repository

from ...conftest import SMALL_CHUNKS, run_cli, write_image

MiB = 1024 * 1024
EXIT_BAD_INPUT = 2
VICTIM_BYTES = b"root-only secret, must stay as it is\n"


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A file that a planted link points at: its bytes must never change."""
    path = tmp_path / "elsewhere" / "victim"
    path.parent.mkdir()
    path.write_bytes(VICTIM_BYTES)
    return path


def backed_up(tmp_path: Path, size: int = 256 * 1024) -> tuple[Path, str]:
    repo = tmp_path / "repo"
    run_cli("init", "-r", str(repo), "--chunk-size", str(SMALL_CHUNKS), check=True)
    image = write_image(tmp_path / "vm.img", size, "random", seed=3)
    done = run_cli("backup", "-r", str(repo), str(image), "--json", "--no-progress", check=True)
    return repo, json.loads(done.stdout)["id"]


# -- never through a link ----------------------------------------------------------------

def test_restore_ignores_a_link_planted_at_its_old_temp_name(tmp_path: Path, victim: Path):
    repo, snapshot = backed_up(tmp_path)
    target = tmp_path / "out" / "restored.img"
    target.parent.mkdir()
    (target.parent / f".{target.name}.diskvault-restore").symlink_to(victim)

    result = run_cli("restore", "-r", str(repo), snapshot, str(target))

    assert result.returncode == 0, result.stderr.decode()
    assert victim.read_bytes() == VICTIM_BYTES
    assert target.stat().st_size == 256 * 1024 and not target.is_symlink()


def test_restore_onto_a_link_is_refused_and_the_file_it_points_at_is_untouched(
        tmp_path: Path, victim: Path):
    repo, snapshot = backed_up(tmp_path)
    target = tmp_path / "restored.img"
    target.symlink_to(victim)

    result = run_cli("restore", "-r", str(repo), snapshot, str(target), "--force")

    assert result.returncode == EXIT_BAD_INPUT, result.stderr.decode()
    assert "symbolic link" in result.stderr.decode()
    assert victim.read_bytes() == VICTIM_BYTES
    assert target.is_symlink()


def test_a_new_file_is_never_created_through_a_link_at_its_name(tmp_path: Path,
                                                                 victim: Path):
    (tmp_path / "planted").symlink_to(victim)
    with open_folder(tmp_path) as folder_fd, pytest.raises(FileExistsError):
        create_exclusive(folder_fd, "planted")
    assert victim.read_bytes() == VICTIM_BYTES


def test_writer_lock_and_config_ignore_links_planted_at_their_old_temp_names(
        repo: Repository, victim: Path):
    pid = os.getpid()
    (repo.root / f".lock.{socket.gethostname()}.{pid}.tmp").symlink_to(victim)
    (repo.root / f".config.{pid}.tmp").symlink_to(victim)

    with repo.writer_lock("test"):
        write_config(repo.storage.backend, repo.config)

    assert victim.read_bytes() == VICTIM_BYTES
    assert read_config(repo.storage.backend) == repo.config


def test_a_link_planted_as_the_spare_lock_is_refused_not_written_through(
        repo: Repository, victim: Path):
    (repo.root / LOCK_SPARE_FILE).unlink()
    (repo.root / LOCK_SPARE_FILE).symlink_to(victim)

    with pytest.raises(OSError):
        with repo.writer_lock("test"):
            pass

    assert victim.read_bytes() == VICTIM_BYTES


# -- never inside the repository ---------------------------------------------------------

def _repository_files(repo: Path) -> dict[Path, bytes]:
    """The bytes of every file but LMDB's lock table (which every open rewrites) and the
    index probe's marker (which the first open after a change of the index rewrites)."""
    return {p: p.read_bytes() for p in repo.rglob("*")
            if p.is_file() and p.name not in ("lock.mdb", "probed")}


@pytest.mark.parametrize("inside", ["a pack", "a snapshot record", "the index",
                                    "a new name in snapshots/"])
def test_restore_into_the_repository_is_refused(tmp_path: Path, inside: str):
    repo, snapshot = backed_up(tmp_path)
    target = {"a pack": next((repo / "packs").rglob("*.pack")),
              "a snapshot record": repo / "snapshots" / f"{snapshot}.json",
              "the index": repo / "index" / "data.mdb",
              "a new name in snapshots/": repo / "snapshots" / f"{'0' * 64}.json"}[inside]
    before = _repository_files(repo)

    result = run_cli("restore", "-r", str(repo), snapshot, str(target), "--force")

    assert result.returncode == EXIT_BAD_INPUT, result.stderr.decode()
    assert "inside the repository" in result.stderr.decode()
    assert _repository_files(repo) == before


def test_restore_into_the_repository_through_a_link_or_a_bind_mount_is_refused(
        tmp_path: Path):
    repo, snapshot = backed_up(tmp_path)
    link = tmp_path / "link-to-packs"
    link.symlink_to(repo / "packs")
    pack = next((repo / "packs").rglob("*.pack"))
    bind = tmp_path / "bind"
    bind.mkdir()
    targets = [link / pack.parent.name / pack.name]
    if os.geteuid() == 0 and subprocess.run(["mount", "--bind", str(repo), str(bind)],
                                            capture_output=True).returncode == 0:
        targets.append(bind / "packs" / pack.parent.name / pack.name)
    before = _repository_files(repo)
    try:
        for target in targets:
            result = run_cli("restore", "-r", str(repo), snapshot, str(target), "--force")
            assert result.returncode == EXIT_BAD_INPUT, (target, result.stderr.decode())
            assert "inside the repository" in result.stderr.decode()
    finally:
        subprocess.run(["umount", str(bind)], capture_output=True)
    assert _repository_files(repo) == before


def test_backup_of_a_file_inside_the_repository_is_refused(tmp_path: Path):
    repo, _ = backed_up(tmp_path)

    result = run_cli("backup", "-r", str(repo), str(repo / "index" / "data.mdb"),
                     "--no-progress")

    assert result.returncode == EXIT_BAD_INPUT, result.stderr.decode()
    assert "inside the repository" in result.stderr.decode()
    assert len(json.loads(run_cli("list", "-r", str(repo), "--json").stdout)) == 1


def test_mount_onto_a_folder_inside_the_repository_is_refused(tmp_path: Path):
    repo, _ = backed_up(tmp_path)
    mountpoint = repo / "view"
    mountpoint.mkdir()

    result = run_cli("mount", "-r", str(repo), str(mountpoint))
    mounted = os.path.ismount(mountpoint)
    if mounted:
        run_cli("umount", str(mountpoint))

    assert result.returncode == EXIT_BAD_INPUT, result.stderr.decode()
    assert "inside the repository" in result.stderr.decode()
    assert not mounted


# -- private -------------------------------------------------------------------------------

def _modes(repo: Path) -> dict[str, str]:
    """Every path of the repository (and the repository folder) with its mode, in octal."""
    return {str(path.relative_to(repo.parent)): oct(stat.S_IMODE(path.lstat().st_mode))
            for path in [repo, *repo.rglob("*")]}


@pytest.mark.parametrize("umask", [0o000, 0o022])
def test_repository_files_are_private_whatever_the_umask(tmp_path: Path, umask: int):
    previous = os.umask(umask)
    try:
        repo, first = backed_up(tmp_path)
        image = write_image(tmp_path / "other.img", 256 * 1024, "random", seed=4)
        run_cli("backup", "-r", str(repo), str(image), "--no-progress", check=True)
        run_cli("delete", "-r", str(repo), first, check=True)
        run_cli("compact", "-r", str(repo), check=True)
        run_cli("check", "-r", str(repo), "--repair", check=True)
    finally:
        os.umask(previous)

    modes = _modes(repo)
    wrong = {path: mode for path, mode in modes.items()
             if mode != ("0o700" if (tmp_path / path).is_dir() else "0o600")}
    assert not wrong, f"not private: {wrong}"
    assert any(path.endswith(".pack") for path in modes)


def test_another_user_can_neither_read_a_pack_nor_list_snapshots(other_user):
    repo, _ = backed_up(other_user.scratch)
    pack = next((repo / "packs").rglob("*.pack"))

    read = other_user.run("cat", str(pack))
    listing = other_user.run(sys.executable, "-m", "diskvault", "list", "-r", str(repo))

    assert read.returncode != 0 and read.stdout == b""
    assert listing.returncode != 0 and b"snapshot" not in listing.stdout.lower()


def test_a_link_planted_as_an_index_file_is_set_aside_never_written_through(
        tmp_path: Path, victim: Path):
    repo, snapshot = backed_up(tmp_path)
    (repo / "index" / "data.mdb").unlink()
    (repo / "index" / "data.mdb").symlink_to(victim)

    backed = run_cli("backup", "-r", str(repo), str(tmp_path / "vm.img"), "--no-progress")
    repaired = run_cli("check", "-r", str(repo), "--repair")

    assert backed.returncode == 0, backed.stderr.decode()
    assert "index.damaged-" in backed.stderr.decode()  # the link kept there, for inspection
    assert [link for link in repo.glob("index.damaged-*/data.mdb") if link.is_symlink()]
    assert repaired.returncode == 0, repaired.stderr.decode()
    assert victim.read_bytes() == VICTIM_BYTES
    assert not (repo / "index" / "data.mdb").is_symlink()
    assert run_cli("restore", "-r", str(repo), snapshot, str(tmp_path / "r.img")).returncode == 0
