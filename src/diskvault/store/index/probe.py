"""An index read first in a fresh interpreter: LMDB trusts its pages, so a damaged one may
kill the reader (SIGBUS, SIGSEGV) instead of raising, and a command must survive that to
say what is wrong. A fresh interpreter, not a fork: a fork of a process whose other
threads (a lock's heartbeat, a worker pool) hold locks keeps those locks held forever.

The probe (this module run as a program) imports only lmdb, so it starts in a few tens of
milliseconds, and opens the environment exactly as ChunkIndex does, through the options
defined here. It runs only when the data file is not as a probe last found it harmless:
the file's identity (device, inode, size, modification and change times) is kept in a
marker beside it. Opening and reading change none of them, and whatever writes to the
file, diskvault's own commits or anyone else, changes the change time, which no one can
set back; so every command after a write probes once, the rest not at all. Repair's
thorough read runs damage.py the same way, always.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import lmdb

from ..host.durable import PRIVATE_FILE_MODE, atomic_replacement, write_all
from .generations import live_generation, open_tables

MAP_SIZE_BYTES = 1 << 40  # address space only; the file grows with its contents
DATA_FILE = "data.mdb"
PROBED_FILE = "probed"  # the data file's identity when a probe last read it without harm


def open_environment(path: Path, readonly: bool) -> lmdb.Environment:
    """The index's environment, opened as every reader and writer of it opens it."""
    return lmdb.open(str(path), map_size=MAP_SIZE_BYTES, max_dbs=16, readonly=readonly,
                     lock=not readonly, create=not readonly, readahead=False,
                     mode=PRIVATE_FILE_MODE)


def cut_off(env: lmdb.Environment, path: Path) -> tuple[int, int] | None:
    """(actual, needed) bytes if the data file is shorter than the pages its meta page
    claims: read through the memory map, that is SIGBUS, not an error."""
    needed = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
    actual = (path / DATA_FILE).stat().st_size
    return (actual, needed) if actual < needed else None


def exit_code_in_fresh_interpreter(module: str, *args: str) -> int:
    """``python -m module args``: 0 if it ended, 1 if it raised, minus the signal that
    killed it. -P: the folder the command runs in is not searched for modules."""
    command = [sys.executable, "-P", "-m", module, *args]
    return subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, check=False).returncode


def probe_exit_code(path: Path, readonly: bool) -> int:
    """Open the index at ``path`` and read its roots in a fresh interpreter (the exit code
    of exit_code_in_fresh_interpreter): only a crash is news, an error the open reports."""
    return exit_code_in_fresh_interpreter(__name__, str(path), "ro" if readonly else "rw")


def reader_crashes(path: Path, readonly: bool) -> bool:
    """Whether opening the index at ``path`` and reading its roots kills the reader: asked
    of a fresh interpreter unless a probe already read the data file as it is now. An
    error the probe meets is not news (the open reports it), and leaves no marker."""
    identity = data_file_identity(path)
    if probed_before(path, identity):
        return False
    exit_code = probe_exit_code(path, readonly)
    if exit_code == 0 and not readonly:
        _note_probed(path, identity)
    return exit_code < 0


def data_file_identity(path: Path) -> bytes:
    """What changes whenever anything writes to the data file, and nothing else does."""
    info = os.stat(path / DATA_FILE, follow_symlinks=False)
    return (f"{info.st_dev} {info.st_ino} {info.st_size} {info.st_mtime_ns} "
            f"{info.st_ctime_ns}").encode()


def probed_before(path: Path, identity: bytes) -> bool:
    """Whether this user's marker says a probe read the data file with this identity (a
    marker that is a link, or that another user wrote, is not believed)."""
    try:
        fd = os.open(path / PROBED_FILE,
                     os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    with open(fd, "rb") as marker:
        return os.fstat(fd).st_uid == os.geteuid() and marker.read(256) == identity


def _note_probed(path: Path, identity: bytes) -> None:
    try:
        with atomic_replacement(path / PROBED_FILE) as fd:
            write_all(fd, identity)
    except OSError as error:  # only costs a probe at the next open
        logging.getLogger(__name__).debug("index probe marker not written: %s", error)


def _read_opening(path: Path, readonly: bool) -> None:
    env = open_environment(path, readonly)
    if cut_off(env, path) is not None:
        raise SystemExit(1)
    meta, tables = open_tables(env, readonly)
    with env.begin() as txn:
        for table in tables[live_generation(txn, meta)]:
            txn.stat(table)
    env.close()


if __name__ == "__main__":
    _read_opening(Path(sys.argv[1]), readonly=sys.argv[2] == "ro")
