"""Running the mount in the background: ``diskvault mount`` returns once the mount is live.

The process the user started forks once; the child mounts and serves, so no second
interpreter starts and the first read comes right after ``mount`` returns. Nothing that
does not survive a fork crosses it: the parent has closed the repository it opened for
the checks (no pool threads, no LMDB environment), and the child opens it anew with the
keys already unlocked. The child starts a new session with stderr on a pipe to the
parent, keeps the pipe until the kernel has initialised the mount, then points stderr at
its log and so closes the pipe. Reading the pipe to its end, the parent learns either
that the mount is live, or from the child's own error message and exit code why not.
"""

from __future__ import annotations

import os
import selectors
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import MountFailed
from .mounttable import find_mount

READY_TIMEOUT_S = 60.0
POLL_S = 0.05
ERROR_PREFIX = "diskvault: error: "


def fork_mount_process(mountpoint: str, timeout_s: float = READY_TIMEOUT_S) -> bool:
    """Fork (with no other thread running: a fork keeps only the calling one). True in the
    child, which is to mount and then leave the parent's pipe (``stderr_to_log``); False in
    the parent once ``mountpoint`` is mounted, or MountFailed with the child's words and
    exit code."""
    sys.stdout.flush()  # else what is still buffered is written by both processes
    sys.stderr.flush()
    assert threading.active_count() == 1, "a fork would keep only this thread of several"
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(reader)
        _detach(stderr_fd=writer)
        return True
    os.close(writer)
    with open(reader, "rb", buffering=0) as pipe:
        output, closed = _read_until_closed(pipe, time.monotonic() + timeout_s)
    _wait_until_mounted(_Child(pid), mountpoint, output, closed, timeout_s)
    return False


def _detach(stderr_fd: int) -> None:
    """The child: its own session (no signals from the user's terminal), no hold on the
    folder it was started in, stdin and stdout on /dev/null, stderr on the pipe."""
    os.setsid()
    os.chdir("/")
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.dup2(stderr_fd, 2)
    os.close(null)
    os.close(stderr_fd)


class _Child:
    """The forked mount process, as the parent watches it."""

    def __init__(self, pid: int):
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            done, status = os.waitpid(self.pid, os.WNOHANG)
            if done:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def stop(self) -> None:
        os.kill(self.pid, signal.SIGTERM)
        _, status = os.waitpid(self.pid, 0)
        self.returncode = os.waitstatus_to_exitcode(status)


def _wait_until_mounted(child: _Child, mountpoint: str, output: str, closed: bool,
                        timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while closed and time.monotonic() < deadline:
        if child.poll() is not None:
            break
        if find_mount(mountpoint) is not None:
            sys.stderr.write(output)  # warnings the child printed while starting
            return
        time.sleep(POLL_S)
    if child.poll() is None:
        child.stop()  # it may still come up later, out of anyone's sight
        raise MountFailed(f"the mount of {mountpoint} did not come up within {timeout_s:.0f} s"
                          f"{': ' + _one_line(output) if output.strip() else ''}", 1)
    raise MountFailed(_one_line(output) or f"the mount process exited with code "
                                           f"{child.returncode}", child.returncode or 1)


def _read_until_closed(stream, deadline: float) -> tuple[str, bool]:
    chunks = []
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        while (left := deadline - time.monotonic()) > 0:
            if not selector.select(left):
                continue
            data = os.read(stream.fileno(), 65536)
            if not data:
                return b"".join(chunks).decode(errors="replace"), True
            chunks.append(data)
    return b"".join(chunks).decode(errors="replace"), False


def _one_line(output: str) -> str:
    """The child's messages as one line, without the prefix the parent prints again."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return "; ".join(line.removeprefix(ERROR_PREFIX) for line in lines)


def open_log_file(path: Path) -> int:
    """The background mount's log, opened before the fork (a bad path fails before anything
    is mounted): appended to, created private (0600), never through a symbolic link."""
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                   0o600)


@contextmanager
def stderr_to_log(log_fd: int | None) -> Iterator[None]:
    """In the child, once the mount is live: stderr (the parent's pipe) goes to the log file
    (``open_log_file``), or nowhere when logging to syslog. The pipe closes after the block,
    so what the block logs is in the log by the time the parent returns."""
    pipe = os.dup(2)
    target = os.open(os.devnull, os.O_WRONLY) if log_fd is None else log_fd
    os.dup2(target, 2)
    os.close(target)
    try:
        yield
    finally:
        os.close(pipe)
