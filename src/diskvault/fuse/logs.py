"""Where a mount logs. A mount runs for days and its reads fail only one at a time (EIO),
so each damaged chunk is logged with snapshot and offset: to the terminal in the
foreground; in the background to ``--log-file``, or else to syslog."""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path

SYSLOG_SOCKET = Path("/dev/log")


def syslog_available() -> bool:
    return SYSLOG_SOCKET.is_socket()


def configure_logging(mountpoint: str, to_syslog: bool, debug: bool) -> None:
    """Replace the CLI's warning-only logging with timestamped lines naming the mount."""
    root = logging.getLogger()
    root.handlers.clear()
    # sys.stderr is fd 2: the terminal, the parent's pipe while starting, then the log file.
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(logging.Formatter(
        f"%(asctime)s diskvault mount {mountpoint}: %(levelname)s: %(message)s"))
    root.addHandler(stream)
    if to_syslog:
        syslog = logging.handlers.SysLogHandler(
            address=str(SYSLOG_SOCKET), facility=logging.handlers.SysLogHandler.LOG_DAEMON)
        syslog.setFormatter(logging.Formatter(
            f"diskvault-mount[%(process)d]: {mountpoint}: %(message)s"))
        root.addHandler(syslog)
    # Our own lines from INFO up; the libraries' (boto3's "Found credentials...", fusepy's)
    # only from WARNING up, unless --debug.
    root.setLevel(logging.DEBUG if debug else logging.WARNING)
    logging.getLogger("diskvault").setLevel(logging.DEBUG if debug else logging.INFO)
