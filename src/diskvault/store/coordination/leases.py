"""Leases: what a writer lock, a reader registration and a pause say about their holder
(host, pid, command, start time, a token, when last refreshed and when it expires), as
JSON, and when one is stale: of this host once its process is gone, of another host once it
went unrewritten for longer than it lasts (plus a grace period for registrations).
locking.py and readers.py hold them.

Staleness is judged by the storage's clock, never a host's: how long ago the lease object
was last written is the storage's own measure (``Backend.age``: a file's mtime against a
new file's on a folder, ``Last-Modified`` against the reply's ``Date`` on S3), and how long
a lease lasts is ``expires - refreshed``, a difference of two times of the holder's clock.
So a host whose clock runs ten minutes ahead never takes over a lock refreshed a minute ago;
it is warned that its clock is off.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from ...errors import AuthenticationFailed, LockHolder
from ..backends.protocol import Backend
from ..format.crypto import NoEncryption, RecordCipher, RecordKind, associated_data

log = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.2
MAX_COMMAND_CHARS = 512
CLOCK_SKEW_WARNING_S = 10.0
_skew_warned: set[str] = set()  # the locations whose skew this process has named


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


def staleness(lease: Lease, backend: Backend, name: str, grace_s: float = 0.0) -> str | None:
    """Why the lease ``name`` is stale -- held by a process of this host that is gone, or
    by another host and, by the storage's clock, not rewritten for longer than it lasts plus
    ``grace_s`` -- or None while it holds. A lease without ``expires`` (an older diskvault,
    which never renews) of another host holds until it is removed."""
    if lease.holder.host == socket.gethostname():
        return None if _is_alive(lease.holder) else "that process is gone"
    if lease.expires is None or lease.refreshed is None:
        return None
    age = backend.age(name)
    if age is None:
        return None  # removed since it was read: its holder let go; nothing to take over
    _warn_if_skewed(backend.location, age.host_ahead_s)
    lasts_s = (lease.expires - lease.refreshed).total_seconds()
    if age.age_s <= lasts_s + grace_s:
        return None
    return f"it was last refreshed {age.age_s:.0f} s ago by the storage's clock"


def _warn_if_skewed(location: str, host_ahead_s: float) -> None:
    if abs(host_ahead_s) > CLOCK_SKEW_WARNING_S and location not in _skew_warned:
        _skew_warned.add(location)
        log.warning("this host's clock is %.0f s %s the clock of %s: locks are judged by the "
                    "storage's clock, but snapshot times come from this host's; set the time "
                    "right (NTP)", abs(host_ahead_s),
                    "ahead of" if host_ahead_s > 0 else "behind", location)


def this_process(command: str) -> LockHolder:
    return LockHolder(socket.gethostname(), os.getpid(), command, datetime.now(timezone.utc),
                      _process_start(os.getpid()))


class LeaseFormat:
    """Leases as bytes. In a plaintext repository, JSON with the holder in the clear. In an
    encrypted one only what any host needs to judge staleness is in the clear (token,
    refreshed, expires): the holder (host, pid, command, since) is sealed with the
    repository's cipher, bound to the object's name, so only those who can open the
    repository can see who holds it -- on a shared folder or a bucket, nobody else."""

    def __init__(self, cipher: RecordCipher | None = None, repository_id: str = ""):
        self._cipher = cipher or NoEncryption()
        self._repository_id = repository_id

    def encode(self, holder: LockHolder, token: str, timing: LeaseTiming, name: str,
               padded_bytes: int = 0) -> bytes:
        """The holder and a lease from now, padded with spaces (JSON ignores them) to
        ``padded_bytes``, so that every lock has the same size and a spare one is
        rewritten in place."""
        now = datetime.now(timezone.utc)
        lease = {"token": token, "refreshed": now.isoformat(),
                 "expires": (now + timedelta(seconds=timing.stale_s)).isoformat()}
        if self._cipher.encrypted:
            plaintext = json.dumps(_holder_fields(holder), ensure_ascii=False).encode()
            sealed = self._cipher.seal(plaintext, self._associated(name))
            body = {"holder": base64.b64encode(sealed).decode(), **lease}
        else:
            body = {**_holder_fields(holder), **lease}
        return json.dumps(body).encode().ljust(padded_bytes)

    def decode(self, data: bytes, name: str) -> Lease:
        """ValueError, KeyError or TypeError if ``data`` is not a lease; a sealed holder
        this process cannot open (another key, damage) is ``unknown_holder()``."""
        body = json.loads(data)
        holder = self._open(body["holder"], name) if "holder" in body else _holder(body)
        return Lease(holder, str(body.get("token", "")), _optional_time(body, "refreshed"),
                     _optional_time(body, "expires"))

    def _open(self, sealed: str, name: str) -> LockHolder:
        if not self._cipher.encrypted:
            return unknown_holder()
        try:
            plaintext = self._cipher.open_sealed(base64.b64decode(sealed),
                                                 self._associated(name))
            return _holder(json.loads(plaintext))
        except (AuthenticationFailed, ValueError, KeyError, TypeError):
            return unknown_holder()

    def _associated(self, name: str) -> bytes:
        return associated_data(RecordKind.LEASE, self._repository_id, name.encode())


PLAINTEXT_LEASES = LeaseFormat()


def unknown_holder() -> LockHolder:
    """A holder sealed under a key this process does not have, or damaged: judged by its
    lease's age alone (it is never this host's)."""
    return LockHolder("an unknown host", 0, "a holder whose lease this process cannot read",
                      datetime.now(timezone.utc))


def _holder_fields(holder: LockHolder) -> dict:
    command = holder.command
    if len(command) > MAX_COMMAND_CHARS:
        command = command[:MAX_COMMAND_CHARS] + "..."
    return {"host": holder.host, "pid": holder.pid, "command": command,
            "since": holder.since.isoformat(), "process_start": holder.process_start}


def _holder(body: dict) -> LockHolder:
    return LockHolder(body["host"], int(body["pid"]), body["command"],
                      datetime.fromisoformat(body["since"]), body.get("process_start", ""))


def _optional_time(body: dict, key: str) -> datetime | None:
    return datetime.fromisoformat(body[key]) if body.get(key) else None
