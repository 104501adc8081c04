"""The commands end to end on an ``ssh://`` repository, through a real sshd (tests/sshd.py)
logging in a second user: init, backup, list, restore bit-exact, check --read-data, a
mount, copy both ways; a backup SIGKILLed midway costs the next run nothing, one
interrupted with Ctrl-C releases its lock; the index is a cache on this host."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from diskvault.store.backends.ssh import open_ssh_backend

from ..conftest import run_cli, write_image
from ..fuse.conftest import require_fuse, unmount

DEADLINE_S = 60.0
POLL_S = 0.01


def wait_for(condition, what: str):
    deadline = time.monotonic() + DEADLINE_S
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(POLL_S)
    return result


def far_files(folder: Path, prefix: str = "") -> list[str]:
    """The files of a repository on the far side, seen directly (the test runs as root)."""
    names = (str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())
    return sorted(name for name in names if name.startswith(prefix))


def test_backup_list_restore_and_check_over_ssh_are_bit_exact(ssh_environment, tmp_path,
                                                                monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    url = ssh_environment.url("vm1")
    first = write_image(tmp_path / "vm1.img", 6 << 20, "mixed", seed=1)
    run_cli("init", "-r", url, check=True)
    run_cli("backup", "-r", url, str(first), "--name", "vm1", check=True)
    second = write_image(tmp_path / "vm1.img", 6 << 20, "mixed", seed=2)
    run_cli("backup", "-r", url, str(second), "--name", "vm1", check=True)

    listed = json.loads(run_cli("list", "-r", url, "--json", check=True).stdout)
    assert [entry["name"] for entry in listed] == ["vm1", "vm1"]
    run_cli("restore", "-r", url, listed[0]["id"], str(tmp_path / "old.img"), check=True)
    run_cli("restore", "-r", url, "latest", str(tmp_path / "new.img"), check=True)
    assert (tmp_path / "new.img").read_bytes() == second.read_bytes()
    assert (tmp_path / "old.img").read_bytes() != second.read_bytes()
    checked = run_cli("check", "-r", url, "--read-data", check=True)
    assert b"no damage found" in checked.stdout

    home = ssh_environment.home / "vm1"
    assert far_files(home, "packs/") and len(far_files(home, "snapshots/")) == 2
    assert not (home / "index").exists()  # the index is this host's cache
    assert list((tmp_path / "cache" / "diskvault").glob("*/*/index"))


def test_a_backup_killed_midway_leaves_nothing_the_next_run_trips_on(ssh_environment,
                                                                      tmp_path):
    url = ssh_environment.url("killed")
    home = ssh_environment.home / "killed"
    image = write_image(tmp_path / "big.img", 96 << 20, "random", seed=3)
    run_cli("init", "-r", url, "--encryption", "none", check=True)
    backup = subprocess.Popen([sys.executable, "-m", "diskvault", "backup", "-r", url,
                               str(image), "--name", "big"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        # A pack under way on the far side: a temp file in packs/.
        wait_for(lambda: [name for name in far_files(home, "packs/") if name.endswith(".tmp")],
                 "an upload under way on the server")
    finally:
        backup.send_signal(signal.SIGKILL)
        backup.wait()
    wait_for(lambda: ssh_environment.servers_running() == 0, "the server to end")
    assert not [name for name in far_files(home) if name.endswith(".tmp")]
    assert far_files(home, "writers/")  # the dead backup's registration stays, for now
    assert far_files(home, "snapshots/") == []

    run_cli("backup", "-r", url, str(image), "--name", "big", check=True)
    run_cli("restore", "-r", url, "big", str(tmp_path / "back.img"), check=True)
    assert (tmp_path / "back.img").read_bytes() == image.read_bytes()
    assert b"no damage found" in run_cli("check", "-r", url, check=True).stdout
    assert "lock" not in far_files(home)


def test_ctrl_c_interrupts_a_backup_that_still_releases_its_lock_over_ssh(ssh_environment,
                                                                          tmp_path):
    """SIGINT to the whole process group, as a terminal sends it: ssh must not die of it
    first, so the interrupted backup still releases its lock on the far side."""
    url = ssh_environment.url("interrupted")
    home = ssh_environment.home / "interrupted"
    image = write_image(tmp_path / "big.img", 96 << 20, "random", seed=4)
    run_cli("init", "-r", url, "--encryption", "none", check=True)
    # As from a terminal: Ctrl-C not ignored, even when the tests themselves were started
    # with it ignored (a shell's background job), which the backup would inherit.
    handler = signal.signal(signal.SIGINT, signal.default_int_handler)  # reset by exec
    try:
        backup = subprocess.Popen([sys.executable, "-m", "diskvault", "backup", "-r", url,
                                   str(image), "--name", "big"], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, start_new_session=True)
    finally:
        signal.signal(signal.SIGINT, handler)
    try:
        wait_for(lambda: [name for name in far_files(home, "packs/") if name.endswith(".tmp")],
                 "an upload under way on the server")
    finally:
        os.killpg(backup.pid, signal.SIGINT)
        _, errors = backup.communicate(timeout=DEADLINE_S)
    assert backup.returncode == 130, errors
    assert errors.decode().strip() in ("diskvault: interrupted", "diskvault: aborted")
    wait_for(lambda: ssh_environment.servers_running() == 0, "the server to end")
    assert "lock" not in far_files(home) and far_files(home, "snapshots/") == []


def test_a_snapshot_over_ssh_mounts_and_reads_bit_exact(ssh_environment, tmp_path):
    require_fuse()
    url = ssh_environment.url("mounted")
    image = write_image(tmp_path / "vm.img", 8 << 20, "mixed", seed=5)
    run_cli("init", "-r", url, "--encryption", "none", check=True)
    run_cli("backup", "-r", url, str(image), "--name", "vm", check=True)
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    run_cli("mount", "-r", url, str(mountpoint), "vm", check=True)
    try:
        assert (mountpoint / "vm.img").read_bytes() == image.read_bytes()
    finally:
        unmount(mountpoint)
    wait_for(lambda: ssh_environment.servers_running() == 0, "the mount to let go")


def test_copy_from_a_local_repository_into_an_ssh_one_and_back(ssh_environment, tmp_path):
    local, back, url = tmp_path / "local", tmp_path / "back", ssh_environment.url("copied")
    image = write_image(tmp_path / "vm.img", 4 << 20, "mixed", seed=6)
    for repository in (str(local), url, str(back)):
        run_cli("init", "-r", repository, "--encryption", "none", check=True)
    run_cli("backup", "-r", str(local), str(image), "--name", "vm", check=True)
    run_cli("copy", "--from", str(local), "--to", url, check=True)
    run_cli("copy", "--from", url, "--to", str(back), check=True)
    run_cli("restore", "-r", str(back), "vm", str(tmp_path / "out.img"), check=True)
    assert (tmp_path / "out.img").read_bytes() == image.read_bytes()


def test_an_age_over_ssh_is_the_servers_and_a_client_clock_ahead_is_measured(
        ssh_environment, monkeypatch):
    """Leases are judged by the storage's clock: a client whose clock runs ten minutes
    ahead still sees a fresh object as fresh, and learns how far ahead it runs."""
    backend = open_ssh_backend(ssh_environment.url("clock"), create_folders=[])
    try:
        backend.put("readers/x.json", b"lease")
        real_time = time.time
        monkeypatch.setattr(time, "time", lambda: real_time() + 600.0)
        age = backend.age("readers/x.json")
    finally:
        backend.close()
    assert 0.0 <= age.age_s < 30.0
    assert 570.0 < age.host_ahead_s < 630.0
