"""Running the mount in the background: ``diskvault mount`` returns once the mount is live.

The command starts itself again (a fresh process: no threads or LMDB handles carried over
a fork) in a new session, with stderr on a pipe. That child keeps the pipe until the kernel
has initialised the mount, then points stderr at its log and so closes the pipe. Reading
the pipe to its end, the parent learns either that the mount is live, or from the child's
own error message and exit code why not.
"""

from __future__ import annotations

import os
import selectors
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import MountFailed
from ..store.passphrase import environ_without_secrets
from .mounttable import find_mount

READY_TIMEOUT_S = 60.0
POLL_S = 0.05
ERROR_PREFIX = "diskvault: error: "


def start_detached(argv: list[str], mountpoint: str, timeout_s: float = READY_TIMEOUT_S,
                   secret: bytes | None = None, secret_fd_variable: str = "") -> None:
    """Start ``argv`` (a foreground mount that enters ``stderr_to_log`` once live) and
    return when ``mountpoint`` is mounted; MountFailed with the child's words otherwise.

    ``secret`` (the unlocked master key) reaches the child on an inherited pipe whose
    descriptor number is in ``secret_fd_variable``: never in argv or the environment. The
    child, which may run for days, gets no passphrase variable either."""
    env, pass_fds, reader = environ_without_secrets(os.environ), (), None
    if secret is not None:
        reader, writer = os.pipe()
        os.write(writer, secret)  # far below a pipe's capacity: never blocks
        os.close(writer)
        env[secret_fd_variable], pass_fds = str(reader), (reader,)
    try:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, start_new_session=True, cwd="/",
                                   env=env, pass_fds=pass_fds)
    finally:
        if reader is not None:
            os.close(reader)
    deadline = time.monotonic() + timeout_s
    output, closed = _read_until_closed(process.stderr, deadline)
    process.stderr.close()
    while closed and time.monotonic() < deadline:
        if process.poll() is not None:
            break
        if find_mount(mountpoint) is not None:
            sys.stderr.write(output)  # warnings the child printed while starting
            return
        time.sleep(POLL_S)
    if process.poll() is None:
        process.terminate()  # it may still come up later, out of anyone's sight
        process.wait()
        raise MountFailed(f"the mount of {mountpoint} did not come up within {timeout_s:.0f} s"
                          f"{': ' + _one_line(output) if output.strip() else ''}", 1)
    raise MountFailed(_one_line(output) or f"the mount process exited with code "
                                           f"{process.returncode}", process.returncode or 1)


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


@contextmanager
def stderr_to_log(log_file: Path | None) -> Iterator[None]:
    """In the child, once the mount is live: stderr (the parent's pipe) goes to the log file,
    or nowhere when logging to syslog. The pipe closes after the block, so what the block
    logs is in the log by the time the parent returns."""
    pipe = os.dup(2)
    target = os.open(log_file or os.devnull, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    os.dup2(target, 2)
    os.close(target)
    try:
        yield
    finally:
        os.close(pipe)
