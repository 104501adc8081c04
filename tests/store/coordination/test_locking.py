"""One writer at a time, between real processes: a second writer fails at once naming the
holder, or waits with --lock-wait; a dead holder's lock is taken over with a warning;
break-lock clears another host's lock; readers run while the lock is held; a backup whose
lock was taken over records nothing."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest

from diskvault.errors import LockLost
from diskvault.store.coordination.locking import WriterLock, read_holder
from diskvault.store.coordination.writers import WRITERS_PREFIX
from diskvault.store.repository import Repository

from ...conftest import run_cli, write_image

EXIT_LOCKED = 73
DEADLINE_S = 30.0

# Takes the writer lock through the Python API, says so, then holds it until told (a line
# on stdin) to let go -- so the test, not a timer, decides when the lock is released.
HOLDER_SCRIPT = """
import sys
from pathlib import Path
from diskvault.errors import RepositoryLocked
from diskvault.store.repository import Repository

repository = Repository.open(Path(sys.argv[1]))
lock = repository.writer_lock("test holder")
try:
    lock.acquire()
except RepositoryLocked:
    print("locked out", flush=True)
    sys.exit(0)
print("locked", flush=True)
sys.stdin.readline()
lock.release()
repository.close()
print("released", flush=True)
"""


class LockHolder:
    """A process holding (or trying to take) the repository's writer lock."""

    def __init__(self, repo: Path):
        self.process = subprocess.Popen([sys.executable, "-c", HOLDER_SCRIPT, str(repo)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE)
        self.pid = self.process.pid

    def read_line(self) -> str:
        ready, _, _ = select.select([self.process.stdout], [], [], DEADLINE_S)
        assert ready, f"the lock holder said nothing within {DEADLINE_S} s"
        line = self.process.stdout.readline().decode().strip()
        assert line, f"the lock holder ended: {self.process.stderr.read().decode()}"
        return line

    def release(self) -> None:
        self.process.stdin.write(b"go\n")
        self.process.stdin.flush()
        assert self.read_line() == "released"
        self.process.wait(DEADLINE_S)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(DEADLINE_S)   # reaped: a zombie would still look alive

    def close(self) -> None:
        if self.process.poll() is None:
            self.kill()
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            stream.close()


@pytest.fixture
def start_holder(repo: Repository) -> Iterator:
    holders: list[LockHolder] = []

    def start(expect: str | None = "locked") -> LockHolder:
        holder = LockHolder(repo.root)
        holders.append(holder)
        if expect is not None:
            assert holder.read_line() == expect
        return holder

    yield start
    for holder in holders:
        holder.close()


@pytest.fixture
def image(tmp_path: Path) -> Path:
    return write_image(tmp_path / "disk.img", 512 * 1024, "random", seed=3)


def assert_one_line_error(result: subprocess.CompletedProcess, exit_code: int,
                          *fragments: str) -> str:
    stderr = result.stderr.decode()
    assert result.returncode == exit_code, f"exit code {result.returncode}: {stderr}"
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("diskvault: error:"), stderr
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


def lock_file_pid(repo: Path) -> int | None:
    try:
        return json.loads((repo / "lock").read_bytes())["pid"]
    except FileNotFoundError:
        return None


def snapshot_count(repo: Path) -> int:
    result = run_cli("list", "-r", str(repo), "--json")
    assert result.returncode == 0, result.stderr.decode()
    return len(json.loads(result.stdout))


def has_open(pid: int, path: Path) -> bool:
    """True if process ``pid`` has ``path`` open."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except FileNotFoundError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == str(path):
                return True
        except FileNotFoundError:
            continue
    return False


def poll(condition, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_second_writer_fails_at_once_naming_the_holder(repo: Repository, start_holder,
                                                       image: Path):
    holder = start_holder()
    result = run_cli("backup", "-r", str(repo.root), str(image))
    assert_one_line_error(result, EXIT_LOCKED, "test holder", f"pid {holder.pid}",
                          socket.gethostname(), "--lock-wait")
    assert lock_file_pid(repo.root) == holder.pid, "the refused writer touched the lock"
    assert snapshot_count(repo.root) == 0
    holder.release()
    assert lock_file_pid(repo.root) is None


def test_lock_wait_gives_up_with_the_holder_named_when_it_never_releases(
        repo: Repository, start_holder, image: Path):
    holder = start_holder()
    result = run_cli("backup", "-r", str(repo.root), str(image), "--lock-wait", "0.5")
    assert_one_line_error(result, EXIT_LOCKED, "test holder", f"pid {holder.pid}")


def test_lock_wait_waits_and_succeeds_once_the_holder_releases(repo: Repository, start_holder,
                                                               image: Path):
    holder = start_holder()
    waiting = subprocess.Popen([sys.executable, "-m", "diskvault", "backup", "-r",
                                str(repo.root), str(image), "--lock-wait", "60", "--json"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # backup opens its source, then takes the lock: with the source open and the lock
        # still the holder's, the second backup is waiting on the lock.
        poll(lambda: has_open(waiting.pid, image) or waiting.poll() is not None,
             "the second backup to open its source")
        assert waiting.poll() is None, waiting.stderr.read().decode()
        assert lock_file_pid(repo.root) == holder.pid
        holder.release()
        stdout, stderr = waiting.communicate(timeout=DEADLINE_S)
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.communicate()
    assert waiting.returncode == 0, stderr.decode()
    assert json.loads(stdout)["size"] == image.stat().st_size
    assert snapshot_count(repo.root) == 1
    assert lock_file_pid(repo.root) is None


def test_stale_lock_of_a_dead_process_on_this_host_is_taken_over_with_a_warning(
        repo: Repository, start_holder, image: Path):
    holder = start_holder()
    holder.kill()                     # dies holding the lock, as after kill -9 or a crash
    assert lock_file_pid(repo.root) == holder.pid

    result = run_cli("backup", "-r", str(repo.root), str(image))
    stderr = result.stderr.decode()
    assert result.returncode == 0, stderr
    warnings = [line for line in stderr.splitlines() if line.startswith("diskvault: warning:")]
    assert len(warnings) == 1, stderr
    assert "stale" in warnings[0] and f"pid {holder.pid}" in warnings[0]
    assert "test holder" in warnings[0]
    assert lock_file_pid(repo.root) is None
    assert snapshot_count(repo.root) == 1


def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def write_foreign_lock(repo: Path, host: str, pid: int, command: str) -> None:
    """A lock as another machine sharing the repository would leave it."""
    (repo / "lock").write_text(json.dumps({
        "host": host, "pid": pid, "command": command,
        "since": datetime(2026, 11, 20, 3, 15, tzinfo=timezone.utc).isoformat(),
        "process_start": "12345"}))


def test_lock_of_another_host_is_not_taken_over_but_break_lock_removes_it_with_a_warning(
        repo: Repository, image: Path):
    # The pid is dead on this host, but whether it lives on its own host cannot be known
    # from here: another host's lock is never stale.
    pid = dead_pid()
    write_foreign_lock(repo.root, "otherhost.invalid", pid, "backup /srv/vm7.img")
    refused = run_cli("backup", "-r", str(repo.root), str(image))
    assert_one_line_error(refused, EXIT_LOCKED, "backup /srv/vm7.img", f"pid {pid}",
                          "otherhost.invalid", "break-lock")

    broken = run_cli("break-lock", "-r", str(repo.root))
    stderr = broken.stderr.decode()
    assert broken.returncode == 0, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("diskvault: warning:"), stderr
    assert "otherhost.invalid" in lines[0] and f"pid {pid}" in lines[0]
    assert not (repo.root / "lock").exists()

    result = run_cli("backup", "-r", str(repo.root), str(image))
    assert result.returncode == 0, result.stderr.decode()


def test_break_lock_on_an_unlocked_repository_says_so(repo: Repository):
    result = run_cli("break-lock", "-r", str(repo.root))
    assert result.returncode == 0, result.stderr.decode()
    assert b"not locked" in result.stdout + result.stderr


@pytest.mark.parametrize("stale_lock", [False, True], ids=["unlocked", "stale lock"])
def test_of_writers_starting_together_exactly_one_gets_the_lock(repo: Repository, start_holder,
                                                                stale_lock: bool):
    if stale_lock:
        dead = start_holder()
        dead.kill()
    contenders = [start_holder(expect=None) for _ in range(4)]
    answers = [contender.read_line() for contender in contenders]
    assert sorted(answers) == ["locked"] + ["locked out"] * 3, answers
    winner = contenders[answers.index("locked")]
    assert lock_file_pid(repo.root) == winner.pid
    winner.release()


def test_readers_work_while_the_writer_lock_is_held(repo: Repository, start_holder,
                                                    tmp_path: Path, image: Path):
    first = repo.backup(image, name="vm")
    changed = tmp_path / "changed.img"
    data = bytearray(image.read_bytes())
    data[1000:1010] = b"0123456789"
    changed.write_bytes(bytes(data))
    second = repo.backup(changed, name="vm")
    root = str(repo.root)
    repo.close()
    holder = start_holder()

    listing = run_cli("list", "-r", root, "--json")
    assert listing.returncode == 0, listing.stderr.decode()
    assert [s["id"] for s in json.loads(listing.stdout)] == [first.id, second.id]
    info = run_cli("info", "-r", root, "vm")
    assert info.returncode == 0 and second.id.encode() in info.stdout, info.stderr.decode()
    target = tmp_path / "restored.img"
    restore = run_cli("restore", "-r", root, first.id, str(target))
    assert restore.returncode == 0, restore.stderr.decode()
    assert target.read_bytes() == image.read_bytes()
    cat = run_cli("cat", "-r", root, "latest")
    assert cat.returncode == 0, cat.stderr.decode()
    assert cat.stdout == changed.read_bytes()
    diff = run_cli("diff", "-r", root, first.id, second.id, "--json")
    assert diff.returncode == 0, diff.stderr.decode()
    assert json.loads(diff.stdout)["changed_bytes"] > 0

    assert lock_file_pid(repo.root) == holder.pid, "a reader disturbed the writer's lock"
    holder.release()


def test_a_backup_whose_registration_is_removed_as_stale_midway_writes_no_record(
        repo: Repository, image: Path):
    backend = repo.storage.backend
    usurper = WriterLock(backend, "compact")

    def take_the_lock_over(done: int) -> None:
        """As an exclusive operation of another host does once the backup's registration
        looks stale to it: the registration goes, the lock is taken."""
        if not usurper.held:
            for name in backend.list(WRITERS_PREFIX):
                backend.delete(name)
            usurper.acquire()

    with pytest.raises(LockLost, match="removed as stale") as lost:
        repo.backup(image, name="vm", progress=take_the_lock_over)
    assert lost.value.exit_code == EXIT_LOCKED
    assert repo.list_snapshots() == []
    assert read_holder(backend).command == "compact", "the backup touched the lock"
    usurper.release()
    record = repo.backup(image, name="vm")
    assert [r.id for r in repo.list_snapshots()] == [record.id]
    assert backend.list(WRITERS_PREFIX) == [], "a finished backup left its registration"
