"""Keeping a process that holds a repository's key from showing it: no core dump, no
ptrace or /proc/PID/mem by other processes of the user, and the passphrase variables gone
from the environment the kernel shows in /proc/PID/environ. Linux only, best effort
elsewhere; the CLI calls both at start (cli/main.py)."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import resource
from collections.abc import Iterable
from pathlib import Path

PR_SET_DUMPABLE = 4  # <linux/prctl.h>


def forbid_core_dumps() -> None:
    """RLIMIT_CORE 0 (no core file on a crash) and not dumpable (no ptrace attach or
    /proc/PID/mem by the same user, /proc/PID/* owned by root); both pass to a fork."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"prctl(PR_SET_DUMPABLE): {os.strerror(error)}")


def erase_environment_values(names: Iterable[str]) -> None:
    """Drop ``names`` from ``os.environ`` (so no child inherits them) and zero their values
    in the block the process started with, which /proc/PID/environ reads whatever
    ``os.environ`` says later (that block is this process's own memory)."""
    names = set(names)
    for name in names:
        os.environ.pop(name, None)
    # Fields 50 and 51 of /proc/self/stat (proc(5)); the name in field 2 may hold spaces.
    fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    start, end = int(fields[47]), int(fields[48])
    position = start
    for entry in ctypes.string_at(start, end - start).split(b"\0"):
        name, equals, value = entry.partition(b"=")
        if equals and name.decode(errors="replace") in names:
            ctypes.memset(position + len(name) + 1, 0, len(value))
        position += len(entry) + 1
