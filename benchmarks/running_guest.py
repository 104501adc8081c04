"""A running QEMU guest backed up through its QMP socket, against a plain read of its image.

    python -m benchmarks.running_guest [--size-mib 256] [--repeat 3] [--workdir DIR]

Boots the tests' tiny TCG guest (tests/guests.py: Debian's cloud kernel, busybox) on a raw
image of SIZE MiB (half random data, half text, every eighth 4 MiB block a hole); the guest
writes 4 KiB records to its disk without pause (O_DIRECT, one after another) and says how
many it wrote. Measured in one run, each figure the best of REPEAT:

- backup time: `diskvault backup 'qmp+unix://...'` of the running guest (a first backup
  into a fresh repository, then a nightly one into the same), against `diskvault backup` of
  a copy of the image file (the plain-read baseline; the guest runs meanwhile too, so
  every backup meets the same load) the same way, against
  the copy served by qemu-nbd (the NBD path without a guest: what the pipe and QEMU's
  server cost, apart from the guest's CPU), and against reading the image file
  (`cat > /dev/null`);
- the guest's own write rate (records/s, from its console) while no backup runs, against
  while backups of the copy run (the CPU they take) and while backups of the guest itself
  run (that, and QEMU's copy-before-write of each block the guest overwrites);
- with --freeze: how long the guest agent held the guest frozen (diskvault's log line).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.guests import (AGENT_MODULES, DISK_MODULES, boot_command, build_initramfs,
                          unpack_kernel)

from .serve_bench import diskvault, write_image

MIB = 1 << 20
BLOCK = 4 * MIB
RECORD_BYTES = 4096
RECORDS_AT = 8 * MIB  # the guest writes its records from here on, in a ring of 4 MiB

INIT = f"""
agent=$(ls /dev/vport*p1 2>/dev/null | head -n 1)
[ -n "$agent" ] && /usr/sbin/qemu-ga -m virtio-serial -p "$agent" -t /tmp -d
n=1
while true; do
  printf 'RECORD %010d\\n' $n | dd of=/dev/vda bs={RECORD_BYTES} \\
    seek=$(( {RECORDS_AT // RECORD_BYTES} + n % {BLOCK // RECORD_BYTES} )) \\
    conv=sync,notrunc oflag=direct 2>/dev/null
  [ $(( n % 16 )) -eq 0 ] && echo "WROTE $n"
  n=$((n + 1))
done
"""


class Guest:
    """The writing guest, with a QMP monitor and a guest-agent socket, until the block ends."""

    def __init__(self, work: Path, image: Path):
        kernel = unpack_kernel(work)
        agent_program = Path(shutil.which("qemu-ga") or "/usr/sbin/qemu-ga")
        initramfs = build_initramfs(kernel, work, INIT, DISK_MODULES + AGENT_MODULES,
                                    programs=(agent_program,))
        self.sockets = Path(tempfile.mkdtemp(prefix="dv-bench-"))
        self.monitor, self.agent = self.sockets / "qmp.sock", self.sockets / "qga.sock"
        self.console = work / "console.log"
        self.process = subprocess.Popen(
            boot_command(kernel, initramfs, image, self.console, disk_format="raw") + [
                "-qmp", f"unix:{self.monitor},server=on,wait=off",
                "-chardev", f"socket,path={self.agent},server=on,wait=off,id=qga0",
                "-device", "virtio-serial-pci",
                "-device", "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0"],
            stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 300
        while self.records() < 16:
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise SystemExit("the guest did not start writing")
            time.sleep(0.2)

    @property
    def uri(self) -> str:
        return f"qmp+unix://{self.monitor}?drive=disk0"

    def records(self) -> int:
        text = self.console.read_text(errors="replace") if self.console.exists() else ""
        found = re.findall(r"WROTE (\d+)", text)
        return int(found[-1]) if found else 0

    def __enter__(self) -> "Guest":
        return self

    def __exit__(self, *exc) -> None:
        self.process.kill()
        self.process.wait()
        shutil.rmtree(self.sockets, ignore_errors=True)


@contextmanager
def served_by_qemu_nbd(image: Path) -> Iterator[str]:
    """``image`` served read-only as raw by qemu-nbd on a socket; yields its NBD URI."""
    folder = Path(tempfile.mkdtemp(prefix="dv-bench-nbd-"))
    socket, pid_file = folder / "nbd.sock", folder / "pid"
    server = subprocess.Popen(["qemu-nbd", "--read-only", "--persistent", "--shared=4",
                               "--format=raw", f"--socket={socket}", f"--pid-file={pid_file}",
                               str(image)])
    try:
        while not pid_file.exists():
            time.sleep(0.01)
        yield f"nbd+unix:///?socket={socket}"
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(folder, ignore_errors=True)


def timed(command: list[str], **options) -> tuple[float, str]:
    start = time.monotonic()
    result = subprocess.run(command, check=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, **options)
    return time.monotonic() - start, result.stderr


def guest_rate(guest: Guest, seconds: float) -> float:
    """Records/s the guest wrote over about ``seconds`` with nothing else asked of it."""
    first, start = guest.records(), time.monotonic()
    time.sleep(seconds)
    return (guest.records() - first) / (time.monotonic() - start)


def backups(work: Path, source: str, repeat: int, extra: tuple[str, ...] = ()) -> dict:
    """Best first-backup and nightly-backup times of ``source``, each into fresh repos."""
    firsts, nightlies, logs = [], [], []
    for run in range(repeat):
        repo = work / f"repo-{run}-{abs(hash(source)) % 1000}"
        subprocess.run(diskvault("init", "-r", str(repo), "--encryption", "none"), check=True,
                       capture_output=True)
        first, first_log = timed(diskvault("--debug", "backup", "-r", str(repo), source,
                                           "--name", "vm", *extra))
        nightly, log = timed(diskvault("--debug", "backup", "-r", str(repo), source, "--name",
                                       "vm", *extra))
        firsts.append(first)
        nightlies.append(nightly)
        logs += [first_log, log]
        shutil.rmtree(repo)
    return {"first": min(firsts), "nightly": min(nightlies), "logs": logs}


def while_writing(guest: Guest, work: Path, source: str, repeat: int) -> tuple[dict, float]:
    """backups() of ``source``, and the guest's write rate (records/s) meanwhile."""
    before, start = guest.records(), time.monotonic()
    result = backups(work, source, repeat)
    return result, (guest.records() - before) / (time.monotonic() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None)
    options = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="running-guest-", dir=options.workdir))
    try:
        image, copy = work / "guest.raw", work / "copy.raw"
        write_image(image, options.size_mib * MIB)
        shutil.copyfile(image, copy)
        cat_s = min(timed(["cat", str(copy)])[0] for _ in range(options.repeat))
        with Guest(work, image) as guest:  # running through every measure: the same load
            idle_rate = guest_rate(guest, 5.0)
            plain, plain_rate = while_writing(guest, work, str(copy), options.repeat)
            with served_by_qemu_nbd(copy) as uri:
                nbd, _ = while_writing(guest, work, uri, options.repeat)
            live, during_rate = while_writing(guest, work, guest.uri, options.repeat)
            frozen = backups(work, guest.uri, 1, ("--freeze", str(guest.agent)))
        freezes = [float(found) for log in frozen["logs"]
                   for found in re.findall(r"frozen for ([0-9.]+) s", log)]
        size = options.size_mib
        print(f"image {size} MiB, best of {options.repeat}, load {os.getloadavg()[0]:.1f}")
        print(f"plain read (cat)                  {cat_s:7.2f} s")
        print(f"backup of the image file, first   {plain['first']:7.2f} s")
        print(f"backup through qemu-nbd, first    {nbd['first']:7.2f} s   "
              f"x{nbd['first'] / plain['first']:.2f} of the file's")
        print(f"backup of the running guest, first{live['first']:7.2f} s   "
              f"x{live['first'] / plain['first']:.2f} of the file's")
        print(f"backup of the image file, nightly {plain['nightly']:7.2f} s")
        print(f"backup through qemu-nbd, nightly  {nbd['nightly']:7.2f} s   "
              f"x{nbd['nightly'] / plain['nightly']:.2f} of the file's")
        print(f"backup of the running guest, nightly{live['nightly']:5.2f} s   "
              f"x{live['nightly'] / plain['nightly']:.2f} of the file's")
        print(f"guest writes, no backup           {idle_rate:7.1f} records/s")
        print(f"guest writes, backups of the copy {plain_rate:7.1f} records/s   "
              f"x{plain_rate / idle_rate:.2f} (CPU contention only)")
        print(f"guest writes, backups of itself   {during_rate:7.1f} records/s   "
              f"x{during_rate / idle_rate:.2f} (and copy-before-write)")
        print(f"guest frozen (--freeze)           "
              f"{', '.join(f'{s:.3f}' for s in freezes) or 'not logged'} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
