"""A running QEMU guest backed up through its QMP socket (docs/vm-sources.md): a tiny TCG
guest writes numbered records to its disk without pause while backups run; each snapshot
must be the disk as it was at one instant, QEMU and the disk must keep nothing of the
backup, and the guest must keep running. The guest runs Debian's own qemu-guest-agent for
the freeze."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from diskvault.sources.qmp import Monitor
from diskvault.store.repository import Repository

from ..conftest import run_cli
from ..guests import (AGENT_MODULES, DISK_MODULES, GUEST_TIMEOUT_S, boot_command,
                      build_initramfs, require_programs)

pytestmark = pytest.mark.slow

BLOCK = 4096
DISK_BYTES = 64 * 1024 * 1024
BLOCKS = DISK_BYTES // BLOCK
STRIDE = 7919  # odd, so record n's block (n * STRIDE mod BLOCKS) is its own for n < BLOCKS
DATA_BYTES = 16 * 1024 * 1024  # the ext4 the guest agent freezes
CHUNK_BYTES = 4096  # the bitmap test's average chunk: a change is read with little around it

# Record n goes to its own scattered block of /dev/vda with O_DIRECT, one after another
# without pause: a view of one instant holds records 1..N, all whole; a read that moves along
# the disk while the guest writes misses some. First the guest agent starts on its virtio
# port, and a ticker writes to an ext4 on /dev/vdb (the filesystem the agent freezes: its
# ticks stop while it is frozen).
INIT = f"""
agent=$(ls /dev/vport*p1 2>/dev/null | head -n 1)
mkdir -p /data
mount -t ext4 /dev/vdb /data
[ -n "$agent" ] && /usr/sbin/qemu-ga -m virtio-serial -p "$agent" -t /tmp -d
(t=1; while true; do echo $t > /data/tick && echo "TICK $t"; t=$((t + 1)); sleep 0.2; done) &
n=1
echo WRITING
while [ $n -lt {BLOCKS} ]; do
  printf 'DVREC %010d END\\n' $n \\
    | dd of=/dev/vda bs={BLOCK} seek=$(( n * {STRIDE} % {BLOCKS} )) conv=sync,notrunc \\
         oflag=direct 2>/dev/null || {{ echo "FAILED $n"; break; }}
  [ $(( n % 32 )) -eq 0 ] && echo "WROTE $n"
  n=$((n + 1))
done
echo DONE
while true; do sleep 1; done
"""


@dataclass
class Guest:
    process: subprocess.Popen
    monitor: Path  # diskvault's
    agent: Path
    console: Path
    test_monitor: Path  # the test's own, usable while diskvault holds the other
    disk: Path

    @property
    def uri(self) -> str:
        return f"qmp+unix://{self.monitor}?drive=disk0"

    def records_written(self) -> int:
        return self._last("WROTE")

    def ticks(self) -> int:
        return self._last("TICK")

    def _last(self, word: str) -> int:
        text = self.console.read_text(errors="replace") if self.console.exists() else ""
        found = re.findall(rf"{word} (\d+)", text)
        return int(found[-1]) if found else 0


def wait_for(predicate, what: str, timeout_s: float = GUEST_TIMEOUT_S):
    deadline = time.monotonic() + timeout_s
    while not (result := predicate()):
        assert time.monotonic() < deadline, f"no {what} in {timeout_s:g} s"
        time.sleep(0.1)
    return result


@pytest.fixture(scope="module")
def guest(guest_kernel, tmp_path_factory):
    """One writing guest for the module, with a QMP monitor and a guest-agent socket."""
    require_programs(("qemu-system-x86_64", "qemu-system-x86"), ("qemu-img", "qemu-utils"),
                     ("qemu-ga", "qemu-guest-agent"), ("ldd", "libc-bin"),
                     ("mkfs.ext4", "e2fsprogs"))
    if not Path("/usr/bin/python3").exists():
        pytest.skip("reading NBD needs /usr/bin/python3 with python3-libnbd")
    folder = tmp_path_factory.mktemp("running-guest")
    agent_program = Path(subprocess.run(["sh", "-c", "command -v qemu-ga"], text=True,
                                        capture_output=True).stdout.strip())
    initramfs = build_initramfs(guest_kernel, folder, INIT, DISK_MODULES + AGENT_MODULES,
                                programs=(agent_program,))
    disk, data, console = folder / "disk.raw", folder / "data.raw", folder / "console.log"
    with open(disk, "wb") as handle:
        handle.truncate(DISK_BYTES)
    with open(data, "wb") as handle:
        handle.truncate(DATA_BYTES)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(data)], check=True)
    # Short socket paths: a Unix socket's path has at most 107 bytes.
    sockets = Path(tempfile.mkdtemp(prefix="dv-guest-"))
    monitor, agent, test_monitor = (sockets / name for name in ("qmp.sock", "qga.sock",
                                                                 "test.sock"))
    command = boot_command(guest_kernel, initramfs, disk, console, disk_format="raw") + [
        "-drive", f"file={data},format=raw,if=none,id=data0",
        "-device", "virtio-blk-pci,drive=data0",
        "-qmp", f"unix:{monitor},server=on,wait=off",
        "-qmp", f"unix:{test_monitor},server=on,wait=off",
        "-chardev", f"socket,path={agent},server=on,wait=off,id=qga0",
        "-device", "virtio-serial-pci",
        "-device", "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0"]
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    running = Guest(process, monitor, agent, console, test_monitor, disk)
    try:
        wait_for(lambda: (running.records_written() > 0 and running.ticks() > 0)
                 or process.poll() is not None, "record and tick from the guest")
        assert process.poll() is None, process.stderr.read().decode(errors="replace")
        yield running
    finally:
        process.kill()
        process.wait()
        for path in (monitor, agent, test_monitor):
            path.unlink(missing_ok=True)
        sockets.rmdir()


def records_in(image: Path) -> list[int]:
    """The record numbers in a restored disk, each checked whole and in its own block."""
    return records_of(image.read_bytes())


def records_of(disk: bytes) -> list[int]:
    numbers = []
    for block in range(BLOCKS):
        data = disk[block * BLOCK:(block + 1) * BLOCK]
        if not data.strip(b"\0"):
            continue
        found = re.fullmatch(rb"DVREC (\d{10}) END\n\0*", data)
        assert found, f"torn or foreign block {block}: {data[:40]!r}"
        number = int(found.group(1))
        assert number * STRIDE % BLOCKS == block, f"record {number} in block {block}"
        numbers.append(number)
    return sorted(numbers)


def test_the_oracle_catches_a_read_that_moves_while_the_guest_writes(guest):
    """The consistency check above is not vacuous: the guest's disk file read in place, in
    pieces with the guest writing between them, is no instant the guest had."""
    pieces = []
    with open(guest.disk, "rb") as disk:
        for offset in range(0, DISK_BYTES, DISK_BYTES // 8):
            pieces.append(os.pread(disk.fileno(), DISK_BYTES // 8, offset))
            written = guest.records_written()
            wait_for(lambda: guest.records_written() > written, "guest write")
    numbers = records_of(b"".join(pieces))
    assert numbers != list(range(1, len(numbers) + 1))


def qemu_state(guest: Guest) -> tuple[list, list, list, str]:
    """QEMU's exports, jobs and diskvault's named nodes, and whether the guest runs."""
    with Monitor(guest.test_monitor) as monitor:
        return (monitor.execute("query-block-exports"), monitor.execute("query-block-jobs"),
                [node["node-name"] for node in monitor.execute("query-named-block-nodes")
                 if node["node-name"].startswith("diskvault")],
                monitor.execute("query-status")["status"])


def qmp_folders() -> set[Path]:
    """The folders of running-guest backups (diskvault-qmp-GUEST-RUN: overlay and socket)
    that exist now."""
    return set(Path(tempfile.gettempdir()).glob("diskvault-qmp-*-*"))


def test_backups_of_a_writing_guest_restore_to_instants_it_had(guest, tmp_path):
    repo = tmp_path / "repo"
    run_cli("init", "-r", str(repo), "--encryption", "none", check=True)
    folders_before = qmp_folders()
    ids = []
    for _ in range(3):
        result = run_cli("backup", "-r", str(repo), guest.uri, "--name", "vm1", "--json",
                         check=True)
        ids.append(json.loads(result.stdout)["id"])
    last_seen = 0
    for snapshot in ids:
        restored = tmp_path / f"{snapshot}.img"
        run_cli("restore", "-r", str(repo), snapshot, str(restored), check=True)
        numbers = records_in(restored)
        assert numbers and numbers == list(range(1, len(numbers) + 1)), \
            f"snapshot {snapshot} is not one instant: {len(numbers)} records, last " \
            f"{numbers[-1] if numbers else None}"
        assert len(numbers) >= last_seen  # later snapshots, later instants
        last_seen = len(numbers)
        restored.unlink()
    info = run_cli("info", "-r", str(repo), ids[-1], check=True).stdout.decode()
    assert "crash-consistent" in info
    exports, jobs, nodes, status = qemu_state(guest)
    assert (exports, jobs, nodes, status) == ([], [], [], "running")
    assert qmp_folders() == folders_before
    # The guest kept writing through the backups and after them.
    wait_for(lambda: guest.records_written() > last_seen + 32, "write after the backups")


def agent_status(guest: Guest) -> str:
    """The agent's freeze status; it answers once no one else holds its socket (QEMU serves
    one client at a time), so this also waits for a watchdog to let go."""
    with Monitor(guest.agent, agent=True, timeout_s=GUEST_TIMEOUT_S) as agent:
        return agent.execute("guest-fsfreeze-status")


def test_frozen_backup_is_recorded_as_frozen_and_leaves_the_guest_thawed(guest, tmp_path):
    repo = tmp_path / "repo"
    run_cli("init", "-r", str(repo), "--encryption", "none", check=True)
    run_cli("backup", "-r", str(repo), guest.uri, "--name", "vm1", "--freeze",
            str(guest.agent), check=True)
    info = run_cli("info", "-r", str(repo), "vm1", check=True).stdout.decode()
    assert "guest agent held the guest's filesystems frozen" in info
    assert agent_status(guest) == "thawed"
    ticks = guest.ticks()
    wait_for(lambda: guest.ticks() > ticks + 2, "write to the guest's filesystem")
    restored = tmp_path / "restored.img"
    run_cli("restore", "-r", str(repo), "vm1", str(restored), check=True)
    numbers = records_in(restored)
    assert numbers == list(range(1, len(numbers) + 1))


HOLD_FROZEN = """
import sys
from pathlib import Path
from diskvault.sources.guest_freeze import GuestFreeze
freeze = GuestFreeze(Path(sys.argv[1]), limit_s=600)
with freeze.held():
    print("frozen", freeze.filesystems, flush=True)
    sys.stdin.read()  # until killed
"""


def test_a_sigkill_of_the_process_holding_the_freeze_thaws_the_guest(guest):
    holder = subprocess.Popen([sys.executable, "-c", HOLD_FROZEN, str(guest.agent)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "frozen 1"  # the ext4 on /dev/vdb
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    assert agent_status(guest) == "thawed"  # long before the 600 s limit
    ticks = guest.ticks()
    wait_for(lambda: guest.ticks() > ticks + 2, "write to the thawed filesystem")


def test_a_freeze_held_past_its_limit_is_thawed_and_fails_the_view(guest):
    from diskvault.errors import PointInTimeFailed
    from diskvault.sources.guest_freeze import GuestFreeze

    with pytest.raises(PointInTimeFailed, match="thawed after 0.5 s"):
        with GuestFreeze(guest.agent, limit_s=0.5).held():
            assert agent_status(guest) == "thawed"  # answered once the watchdog let go


def test_a_drive_the_guest_lacks_is_refused_naming_those_it_has(guest, tmp_path):
    repo = tmp_path / "repo"
    run_cli("init", "-r", str(repo), "--encryption", "none", check=True)
    result = run_cli("backup", "-r", str(repo), f"qmp+unix://{guest.monitor}?drive=nosuch",
                     "--name", "vm1")
    assert result.returncode == 2
    error = result.stderr.decode()
    assert "has no drive or block node 'nosuch' (its drives: disk0, data0)" in error
    assert "Traceback" not in error
    assert qemu_state(guest)[:3] == ([], [], [])


def test_a_second_backup_of_a_guest_is_refused_and_a_killed_runs_leftovers_are_removed(
        guest, tmp_path):
    repo = tmp_path / "repo"
    run_cli("init", "-r", str(repo), "--encryption", "none", check=True)
    folders_before = qmp_folders()
    # The backup waits for the repository with the view made, and is killed there.
    with Repository.open(repo) as repository, repository.writer_lock("held by the test"):
        backup = subprocess.Popen(
            [sys.executable, "-m", "diskvault", "backup", "-r", str(repo), guest.uri,
             "--name", "vm1", "--lock-wait", "600"], stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        try:
            wait_for(lambda: qemu_state(guest)[0], "point-in-time export")
            second = run_cli("backup", "-r", str(repo), guest.uri, "--name", "vm1")
            assert second.returncode == 1
            assert "another diskvault backup through the QEMU monitor at" in second.stderr.decode()
        finally:
            backup.kill()
            backup.wait()
    exports, jobs, nodes, status = qemu_state(guest)
    assert exports and jobs and nodes and status == "running"
    assert qmp_folders() - folders_before
    run_cli("backup", "-r", str(repo), guest.uri, "--name", "vm1", check=True)
    assert qemu_state(guest) == ([], [], [], "running")
    assert qmp_folders() <= folders_before
    restored = tmp_path / "restored.img"
    run_cli("restore", "-r", str(repo), "vm1", str(restored), check=True)
    numbers = records_in(restored)
    assert numbers == list(range(1, len(numbers) + 1))


def bitmaps_of(guest: Guest, node: str) -> dict[str, bool]:
    """The dirty bitmaps on ``node`` and whether each is enabled ("recording")."""
    with Monitor(guest.test_monitor) as monitor:
        return {bitmap["name"]: bitmap["recording"]
                for entry in monitor.execute("query-named-block-nodes", flat=True)
                if entry["node-name"] == node for bitmap in entry.get("dirty-bitmaps", [])}


def test_nightly_backups_with_a_dirty_bitmap_read_only_what_the_guest_wrote(guest, tmp_path):
    """The one way for a running guest: the view's instant starts the bitmap's rotation, so
    the next backup reads only what the guest wrote since the previous one's instant, and
    still restores to an instant the guest had (a write the bitmap missed would be a gap in
    the numbering); the bitmap is rotated, not lost."""
    from diskvault.sources.fleecing import find_drive

    repo = tmp_path / "repo"
    run_cli("init", "-r", str(repo), "--encryption", "none", "--chunk-size", str(CHUNK_BYTES),
            check=True)
    bitmap = "nightly"
    with Monitor(guest.test_monitor) as monitor:
        node = find_drive(monitor, "disk0").node
        monitor.execute("block-dirty-bitmap-add", node=node, name=bitmap, granularity=BLOCK)
    try:
        argv = ["backup", "-r", str(repo), guest.uri, "--name", "vm1", "--dirty-bitmap",
                bitmap, "--json"]
        first = json.loads(run_cli(*argv, check=True).stdout)
        written = guest.records_written()
        wait_for(lambda: guest.records_written() > written + 64, "writes after the backup")
        second = json.loads(run_cli(*argv, check=True).stdout)
        assert second["base_id"] == first["id"]
        assert bitmaps_of(guest, node) == {bitmap: True,
                                           f"{bitmap}.diskvault-since-{second['id']}": False}
    finally:
        left = bitmaps_of(guest, node)
        with Monitor(guest.test_monitor) as monitor:
            for name in left:
                monitor.execute("block-dirty-bitmap-remove", node=node, name=name)
    instants = []
    for snapshot in (first, second):
        restored = tmp_path / f"{snapshot['id']}.img"
        run_cli("restore", "-r", str(repo), snapshot["id"], str(restored), check=True)
        numbers = records_in(restored)
        assert numbers == list(range(1, len(numbers) + 1))
        instants.append(len(numbers))
        restored.unlink()
    # Each record written between the two instants dirtied its own 4 KiB block, read with the
    # chunks around it until the new cuts meet the base's again: up to two largest chunks
    # (4x the average) on either side. A full read would be the whole disk.
    changed = instants[1] - instants[0]
    assert changed > 64
    assert changed * BLOCK <= second["stats"]["bytes_read"] <= \
        min(changed * (BLOCK + 4 * 4 * CHUNK_BYTES), DISK_BYTES // 2)
    assert qemu_state(guest) == ([], [], [], "running")


def test_a_guest_with_two_drives_needs_the_drive_named(guest, tmp_path):
    repo = tmp_path / "repo"
    run_cli("init", "-r", str(repo), "--encryption", "none", check=True)
    result = run_cli("backup", "-r", str(repo), f"qmp+unix://{guest.monitor}", "--name", "vm1")
    assert result.returncode == 2
    assert "has 2 drives: name one with ?drive= (disk0, data0)" in result.stderr.decode()
