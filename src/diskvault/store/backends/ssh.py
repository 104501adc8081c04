"""A repository on another machine: ``ssh://[user@]host[:port]/path``. SshBackend keeps the
Backend protocol by asking ``diskvault serve-repository PATH`` on the far side, which it
starts through the system's ``ssh`` client (so the user's ~/.ssh/config, agent, known
hosts, jump hosts and ControlMaster all apply), one frame each way per operation
(ssh_wire.py). The far side is a LocalBackend: names are confined to its folder there, and
an append-only server refuses deletes whatever this side asks (remote/).

As for an object store, nothing of the repository is a file here: the index is this user's
cache, rebuilt from the packs, and ``host_mutex`` is an flock in the user's cache.
``DISKVAULT_RSH`` replaces ``ssh`` (with options, as BORG_RSH), ``DISKVAULT_REMOTE_PATH``
the far side's ``diskvault`` (as borg's --remote-path).
"""

from __future__ import annotations

import errno
import logging
import os
import shlex
import shutil
import subprocess
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import ContextManager
from urllib.parse import unquote, urlsplit

from ... import errors
from ...errors import (AppendOnlyRefused, BadInput, DiskvaultError, RemoteFailed,
                       RemoteUnusable, RepositoryNotFound)
from ..host.user_folders import cache_mutex, make_cached_index_folder
from .protocol import ObjectAge, check_object_name
from .ssh_wire import (UPLOAD_PART_BYTES, WIRE_VERSION, WireError, decode_names, read_frame,
                       write_frame)

log = logging.getLogger(__name__)

SSH_SCHEME = "ssh://"
RSH_VARIABLE = "DISKVAULT_RSH"
REMOTE_PATH_VARIABLE = "DISKVAULT_REMOTE_PATH"
EXIT_WAIT_S = 10.0  # how long ssh may take to end once its channel is closed
SSH_OWN_FAILURE = 255  # ssh's exit code for its own errors (connect, login, host key)
COMMAND_NOT_FOUND = 127  # the far side's shell found no such program
# ssh started with Ctrl-C ignored (a disposition that exec keeps, and that ssh leaves alone
# when it finds it ignored), so that a Ctrl-C at the terminal interrupts diskvault, which
# still releases its lock over the channel, instead of cutting the channel first. A shell
# sets it, not a preexec_fn: no Python runs between fork and exec.
IGNORING_CTRL_C = ["/bin/sh", "-c", "trap '' INT; exec \"$@\"", "ssh"]
# The far side's DiskvaultErrors that travel back as themselves (each takes one message).
REMOTE_ERRORS = ("BadInput", "NotARepository", "UnsupportedFormat", "RepositoryReadOnly",
                 "RepositoryFull", "CorruptData")


@dataclass(frozen=True)
class SshTarget:
    """Where an ``ssh://`` URL points: login, host, port (None: ssh's own choice) and the
    folder's path on the far side (``~/...`` under that user's home)."""

    url: str
    user: str | None
    host: str
    port: int | None
    path: str

    @property
    def login(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    def command(self, environ) -> list[str]:
        """The ssh command line. ``--`` ends ssh's options (a host named ``-oProxy...``
        is refused by the parser anyway); the far command is quoted for its shell."""
        rsh = shlex.split(environ.get(RSH_VARIABLE) or "ssh")
        remote = shlex.split(environ.get(REMOTE_PATH_VARIABLE) or "diskvault")
        port = ["-p", str(self.port)] if self.port else []
        far = shlex.join([*remote, "serve-repository", self.path])
        return [*rsh, "-T", *port, "--", self.login, far]


def parse_ssh_url(url: str) -> SshTarget:
    """``ssh://[user@]host[:port]/path``; ``/~/path`` is relative to the user's home there.
    BadInput for anything else (a URL ssh would take for an option, above all)."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        raise BadInput(f"{url!r} has a port that is not a number from 1 to 65535") from None
    user = unquote(parts.username) if parts.username else None
    host = parts.hostname or ""
    path = unquote(parts.path)
    if parts.scheme != "ssh" or parts.query or parts.fragment or parts.password:
        raise BadInput(f"{url!r} is not an SSH repository; write ssh://[USER@]HOST[:PORT]/PATH")
    if not host or host.startswith("-") or (user or "").startswith("-") or any(
            character.isspace() for character in host + (user or "")):
        raise BadInput(f"{url!r} names no usable host; write ssh://[USER@]HOST[:PORT]/PATH")
    if path.startswith("/~"):
        path = path[1:]
    if path.strip("/") in ("", "~") or "\0" in path:
        raise BadInput(f"{url!r} names no repository folder; write ssh://[USER@]HOST[:PORT]/"
                       f"PATH (/~/PATH: under the user's home there)")
    return SshTarget(url.rstrip("/"), user, host, port, path)


def open_ssh_backend(url: str, create_folders: list[str] | None = None,
                     environ=None) -> "SshBackend":
    """The repository at ``url``, or with ``create_folders`` a new one made there (a
    missing or empty folder)."""
    target = parse_ssh_url(url)
    return SshBackend(target, Channel(target, environ or os.environ), create_folders)


class Channel:
    """The ssh process and its stdin/stdout; one request and its reply at a time. ssh's
    stderr goes to an unnamed temp file, whose last line explains a failure to connect."""

    def __init__(self, target: SshTarget, environ):
        self.target = target
        self._lock = threading.Lock()
        self._failure: DiskvaultError | None = None  # once broken, every call fails so
        self._errors = tempfile.TemporaryFile()
        self.answered = False  # once the server answered, a broken channel is a failure
        command = target.command(environ)
        if shutil.which(command[0]) is None:
            self._errors.close()
            raise RemoteUnusable(f"{target.url}: {command[0]!r} is not installed (set "
                                 f"{RSH_VARIABLE}, or apt-get install openssh-client)")
        self._process = subprocess.Popen([*IGNORING_CTRL_C, *command], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=self._errors)

    def call(self, header: dict, body=b"") -> tuple[object, bytes, dict]:
        """The reply's result, body and header; RemoteUnusable or RemoteFailed if the
        channel breaks."""
        with self._lock:
            if self._failure is not None:
                raise self._failure
            try:
                write_frame(self._process.stdin, header, body)
                frame = read_frame(self._process.stdout)
            except (BrokenPipeError, ConnectionResetError, ValueError):
                frame = None  # ValueError: a pipe already closed by close()
            except WireError as error:
                self._failure = self._broken(error)
                raise self._failure from None
            except BaseException:
                # Interrupted (Ctrl-C) between the request and the end of its reply: the
                # next reply read would answer another request, so the channel takes no more.
                self._failure = RemoteFailed(f"{self.target.url}: a request over SSH was "
                                             f"interrupted before its reply; run the command "
                                             f"again")
                raise
            if frame is None:
                self._failure = self._broken(None)
                raise self._failure
            self.answered = True
            reply, reply_body = frame
            return reply.get("result"), reply_body, reply

    def _broken(self, error: WireError | None) -> DiskvaultError:
        """Why the channel broke, from ssh's exit code and the last line it or the far side
        wrote."""
        url, login = self.target.url, self.target.login
        if error is not None and not self.answered and error.seen:
            self._end()
            return RemoteUnusable(f"{url}: something else than 'diskvault serve-repository' "
                                  f"answers on {self.target.host} (it wrote {error.seen[:60]!r});"
                                  f" does a login script of {login} print to standard output?")
        code = self._end()
        said = self._last_line()
        if self.answered:
            return RemoteFailed(f"{url}: the SSH connection broke ({said or f'exit {code}'}); "
                                f"run the command again")
        if code == SSH_OWN_FAILURE:
            port = f" -p {self.target.port}" if self.target.port else ""
            return RemoteUnusable(f"cannot reach {url}: {said or 'ssh failed'}; check the "
                                  f"host, the port and the keys ('ssh{port} {login} true' "
                                  f"must work)")
        if code == COMMAND_NOT_FOUND:
            return RemoteUnusable(f"diskvault is not installed on {self.target.host} for "
                                  f"{login}, or not on the PATH of its shell ({said}); install"
                                  f" it there or set {REMOTE_PATH_VARIABLE} to its full path")
        return RemoteUnusable(f"{url}: the far side ended before serving (exit {code}): "
                              f"{said or 'no message'}")

    def _last_line(self) -> str:
        self._errors.seek(0)
        lines = [line.strip() for line in self._errors.read()[-4096:].decode(
            errors="replace").splitlines() if line.strip()]
        return lines[-1].removeprefix("diskvault: error: ") if lines else ""

    def _end(self) -> int | None:
        """Close our side and wait for ssh (killed if it lingers): its exit code."""
        for stream in (self._process.stdin, self._process.stdout):
            try:
                stream.close()
            except OSError:
                pass  # a broken pipe's buffered bytes: the far side is gone anyway
        try:
            return self._process.wait(timeout=EXIT_WAIT_S)
        except subprocess.TimeoutExpired:
            self._process.kill()
            return self._process.wait()

    def close(self) -> None:
        with self._lock:
            self._end()
            self._errors.close()


class SshUpload:
    """An upload on the far side, sent in parts of UPLOAD_PART_BYTES as it fills: the far
    side's temp file is renamed (linked, when append-only) into place at ``complete``."""

    def __init__(self, backend: "SshBackend", name: str):
        self._backend = backend
        self._name = name
        self._id = backend.call("upload_open", name)
        self._buffer = bytearray()
        self._done = False

    def write(self, data) -> None:
        self._buffer += data
        if len(self._buffer) >= UPLOAD_PART_BYTES:
            self._send()

    def _send(self) -> None:
        if self._buffer:
            self._backend.call("upload_write", self._name, self._buffer, upload=self._id)
            self._buffer = bytearray()

    def complete(self) -> None:
        self._send()
        self._done = True
        self._backend.call("upload_complete", self._name, upload=self._id)

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        self._buffer = bytearray()
        try:
            self._backend.call("upload_abort", self._name, upload=self._id)
        except RemoteFailed:
            pass  # the channel is gone: the server aborts what its client left open


class SshBackend:
    """The repository served by ``diskvault serve-repository`` at the end of ``channel``."""

    uploads_in_flight = 1  # one channel: uploads queue on it anyway
    read_gap_bytes = 1024 * 1024  # a round trip costs more than a MiB more bytes
    reads_in_flight = None  # one channel: more threads only queue on it
    root = None  # no file of it is on this machine
    index_is_cache = True
    read_window_bytes = 1024 * 1024  # a round trip each: a chunk's neighbours come with it
    object_lock = None  # S3 Object Lock is a bucket's; the far side's append-only mode is this
    # backend's protection (docs/threat-model.md)

    def __init__(self, target: SshTarget, channel: Channel,
                 create_folders: list[str] | None = None):
        self.target = target
        self.location = target.url
        self._channel = channel
        self._requests: Counter[str] = Counter()
        self._requests_lock = threading.Lock()
        try:
            hello = self.call("hello", version=WIRE_VERSION, create=create_folders)
        except BaseException:
            channel.close()
            raise
        port = f":{target.port}" if target.port else ""
        self.append_only = bool(hello["append_only"])
        self.place = f"ssh://{target.login}{port}{hello['root']}"

    def use_object_lock(self, settings, retained, verify: bool = False) -> None:
        raise BadInput(f"{self.location} is a folder over SSH: Object Lock needs an S3 bucket "
                       f"made with it; here, serve the repository with --append-only "
                       f"(docs/ssh.md)")

    def call(self, op: str, name: str = "", body=b"", **arguments):
        """One operation on the far side: its result, or its error in diskvault's terms."""
        return self._request(op, name, body, arguments)[0]

    def fetch(self, op: str, name: str = "", **arguments) -> bytes:
        """One operation that answers with bytes (an object, a listing): those bytes."""
        return self._request(op, name, b"", arguments)[1]

    def _request(self, op: str, name: str, body, arguments: dict) -> tuple[object, bytes]:
        with self._requests_lock:
            self._requests[op] += 1
        header = {"op": op, **arguments}
        if name:
            header["name"] = name
        result, reply_body, reply = self._channel.call(header, body)
        if "error" in reply:
            raise self._error(reply, name)
        return result, reply_body

    def _error(self, reply: dict, name: str) -> Exception:
        kind, message = reply.get("error"), str(reply.get("message", ""))
        where = f"{self.location}/{name}" if name else self.location
        if kind == "missing":
            return FileNotFoundError(errno.ENOENT, "no such object", where)
        if kind == "name":
            return ValueError(message)
        if kind == "os":
            code = reply.get("errno") if isinstance(reply.get("errno"), int) else errno.EIO
            return OSError(code, message, where)
        if kind == "append-only":
            return AppendOnlyRefused(
                f"{self.location} is served append-only: {message} was refused and nothing "
                f"was removed; prune, delete and compact run from a host whose SSH key is not "
                f"restricted to 'serve-repository --append-only'")
        if kind == "diskvault" and reply.get("class") == "RepositoryNotFound":
            return RepositoryNotFound(f"repository {self.location} does not exist; create it "
                                      f"with 'diskvault init -r {self.location}'")
        if kind == "diskvault" and reply.get("class") in REMOTE_ERRORS:
            return getattr(errors, reply["class"])(f"{self.location}: {message}")
        return RemoteFailed(f"{where}: the server failed ({message})")

    # -- writing ----------------------------------------------------------------------------
    def put(self, name: str, data: bytes) -> None:
        check_object_name(name)
        self.call("put", name, data)

    def put_if_absent(self, name: str, data: bytes, reuse: str | None = None) -> bool:
        check_object_name(name)
        return bool(self.call("put_if_absent", name, data, reuse=reuse))

    def open_upload(self, name: str) -> SshUpload:
        check_object_name(name)
        return SshUpload(self, name)

    def delete(self, name: str) -> None:
        self.call("delete", name)

    def move(self, name: str, new_name: str) -> None:
        self.call("move", name, new_name=new_name)

    # -- reading ----------------------------------------------------------------------------
    def get(self, name: str) -> bytes:
        return self.fetch("get", name)

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        return self.fetch("get_range", name, offset=offset, length=max(0, length))

    def prefetch(self, name: str, offset: int, length: int) -> None:
        """Nothing: a round trip for a hint costs what the read costs."""

    def stat(self, name: str) -> int | None:
        return self.call("stat", name)

    def age(self, name: str) -> ObjectAge | None:
        """The far side measures the age by its storage's clock and says what that clock
        reads; this host's lead is taken against it (off by at most a round trip)."""
        answer = self.call("age", name)
        if answer is None:
            return None
        return ObjectAge(float(answer["age_s"]), time.time() - float(answer["storage_now"]))

    def list(self, prefix: str) -> list[str]:
        return decode_names(self.fetch("list", prefix=prefix))

    def list_foreign(self, prefix: str) -> list[str]:
        return decode_names(self.fetch("list_foreign", prefix=prefix))

    def list_unfinished(self, prefix: str) -> list[str]:
        return decode_names(self.fetch("list_unfinished", prefix=prefix))

    def discard_unfinished(self, prefix: str) -> None:
        self.call("discard_unfinished", prefix=prefix)

    # -- what this place is -----------------------------------------------------------------
    def index_folder(self, repository_id: str) -> Path:
        return make_cached_index_folder(repository_id, self.place)

    def disk_folders(self) -> list[Path]:
        return []  # the far side's disk: a full one is reported by its errors

    def contains(self, path: Path) -> bool:
        return False  # nothing of this machine is in a repository on another

    def requests_made(self) -> dict[str, int]:
        with self._requests_lock:
            return dict(self._requests)

    def read_only_reason(self) -> str | None:
        return self.call("read_only_reason")

    def host_mutex(self) -> ContextManager[None]:
        return cache_mutex(self.place)

    def close(self) -> None:
        log.debug("requests to %s: %s", self.location, dict(sorted(self._requests.items())))
        self._channel.close()

