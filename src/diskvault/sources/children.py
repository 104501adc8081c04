"""Helper processes (qemu-nbd, the NBD reader) that never outlive diskvault.

Each child asks the kernel for SIGKILL when its parent dies (PR_SET_PDEATHSIG), so even a
diskvault killed with SIGKILL leaves none behind; the normal way out stops it explicitly.
The signal follows the thread that started the child: children are started from the thread
that runs the backup and lives until they are stopped.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess

from ..errors import ToolMissing

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
STOP_WAIT_S = 10.0
# Looked up here, not in the forked child: a dlopen there could wait on a lock that another
# thread of diskvault held at the fork.
_prctl = ctypes.CDLL(None, use_errno=True).prctl


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL when the parent dies (and now, if it already has)."""
    parent = os.getppid()
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


def require_tool(name: str, package: str) -> str:
    """The path of the program ``name``, or ToolMissing naming the Debian package."""
    path = shutil.which(name)
    if path is None:
        raise ToolMissing(f"{name} is not installed: install the Debian package {package}")
    return path


def start_child(argv: list[str], **popen) -> subprocess.Popen:
    """``argv`` started as a child that dies with diskvault; standard input closed unless
    ``popen`` says otherwise."""
    popen.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.Popen(argv, preexec_fn=_die_with_parent, **popen)


def stop_child(process: subprocess.Popen) -> None:
    """Stop ``process`` (SIGTERM, SIGKILL if it lingers) and reap it."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()
