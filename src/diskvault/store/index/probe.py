"""An index read first in a fresh interpreter: LMDB trusts its pages, so a damaged one may
kill the reader (SIGBUS, SIGSEGV) instead of raising, and a command must survive that to
say what is wrong. A fresh interpreter, not a fork: a fork of a process whose other
threads (a lock's heartbeat, a worker pool) hold locks keeps those locks held forever.

The probe at every open (this module run as a program) imports only lmdb, so it starts in
a few tens of milliseconds, and opens the environment exactly as ChunkIndex does, through
the options defined here. Repair's thorough read runs damage.py the same way.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import lmdb

from ..host.durable import PRIVATE_FILE_MODE

MAP_SIZE_BYTES = 1 << 40  # address space only; the file grows with its contents
DATA_FILE = "data.mdb"
META_TABLE = b"meta"
TABLES = (b"chunks", b"packs", META_TABLE)


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


def open_tables(env: lmdb.Environment, readonly: bool) -> list:
    """The handles of TABLES (created where missing, unless ``readonly``)."""
    return [env.open_db(name, create=not readonly) for name in TABLES]


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


def _read_opening(path: Path, readonly: bool) -> None:
    env = open_environment(path, readonly)
    if cut_off(env, path) is not None:
        raise SystemExit(1)
    chunks, packs, _ = open_tables(env, readonly)
    with env.begin() as txn:
        txn.stat(chunks)
        txn.stat(packs)
    env.close()


if __name__ == "__main__":
    _read_opening(Path(sys.argv[1]), readonly=sys.argv[2] == "ro")
