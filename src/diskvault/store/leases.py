"""Leases: what a writer lock, a reader registration and a pause say about their holder
(host, pid, command, start time, a token, when last refreshed and when it expires), as
JSON, and when one is stale: of this host once its process is gone, of another host once it
expired (plus a grace period for registrations). locking.py and readers.py hold them."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from ..errors import LockHolder

POLL_INTERVAL_S = 0.2
MAX_COMMAND_CHARS = 512


@dataclass(frozen=True)
class LeaseTiming:
    """How often a holder rewrites its lock or registration, and after how long without a
    rewrite another host may take it for gone. Tests make both small."""

    refresh_s: float = 60.0
    stale_s: float = 300.0


DEFAULT_TIMING = LeaseTiming()


@dataclass(frozen=True)
class Lease:
    """A lock or registration as read back: its holder, the token of the process that
    wrote it, and when it expires (None: written by a diskvault that never renews)."""

    holder: LockHolder
    token: str = ""
    refreshed: datetime | None = None
    expires: datetime | None = None


def _process_start(pid: int) -> str:
    """Start time of a process in clock ticks since boot ('' if unknown): tells pid reuse apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


def _is_alive(holder: LockHolder) -> bool:
    try:
        os.kill(holder.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return not holder.process_start or _process_start(holder.pid) == holder.process_start


def is_stale(lease: Lease, grace_s: float = 0.0) -> bool:
    """Held by a process of this host that is gone, or by another host whose lease
    expired more than ``grace_s`` ago."""
    if lease.holder.host == socket.gethostname():
        return not _is_alive(lease.holder)
    return lease.expires is not None and \
        datetime.now(timezone.utc) > lease.expires + timedelta(seconds=grace_s)


def this_process(command: str) -> LockHolder:
    return LockHolder(socket.gethostname(), os.getpid(), command, datetime.now(timezone.utc),
                      _process_start(os.getpid()))


def encode_lease(holder: LockHolder, token: str, timing: LeaseTiming,
            padded_bytes: int = 0) -> bytes:
    """The holder and a lease from now as JSON, padded with spaces (JSON ignores them) to
    ``padded_bytes``, so that every lock has the same size and a spare one is rewritten in
    place."""
    command = holder.command
    if len(command) > MAX_COMMAND_CHARS:
        command = command[:MAX_COMMAND_CHARS] + "..."
    now = datetime.now(timezone.utc)
    body = json.dumps({"host": holder.host, "pid": holder.pid, "command": command,
                       "since": holder.since.isoformat(),
                       "process_start": holder.process_start, "token": token,
                       "refreshed": now.isoformat(),
                       "expires": (now + timedelta(seconds=timing.stale_s)).isoformat()})
    return body.encode().ljust(padded_bytes)


def _optional_time(body: dict, key: str) -> datetime | None:
    return datetime.fromisoformat(body[key]) if body.get(key) else None


def decode_lease(data: bytes) -> Lease:
    """ValueError, KeyError or TypeError if ``data`` is not a lease."""
    body = json.loads(data)
    holder = LockHolder(body["host"], int(body["pid"]), body["command"],
                        datetime.fromisoformat(body["since"]), body.get("process_start", ""))
    return Lease(holder, str(body.get("token", "")), _optional_time(body, "refreshed"),
                 _optional_time(body, "expires"))

