"""``diskvault serve-repository``: a LocalBackend behind a loop of frames (ssh_wire.py) on
the SSH channel. Every name is confined to the repository folder by the LocalBackend itself
(checked names, no link followed); in append-only mode the server, not the client, refuses
to overwrite, move or delete anything but the lock and the reader registrations
(append_only.py).

The client is not trusted: a request it may not make, or cannot make sense of, is answered
with an error, never with a traceback on the channel. When the channel ends (the client
finished, or was killed), uploads left open are aborted, so no temp file outlives it.
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from ..errors import BadInput, DiskvaultError
from ..store.backends.local import LocalBackend
from ..store.backends.local_upload import LocalUpload
from ..store.backends.location import Location
from ..store.backends.ssh_wire import (WIRE_VERSION, WireError, encode_names, read_frame,
                                       write_frame)
from .append_only import beside, may_change

log = logging.getLogger(__name__)


class Refused(Exception):
    """An append-only server does not do this; the message says what was asked."""


class ProtocolViolation(Exception):
    """A request that no diskvault client sends."""


class RepositoryServer:
    """Serves one client over ``channel_in``/``channel_out`` until the channel ends."""

    def __init__(self, path: Path, append_only: bool, channel_in: BinaryIO,
                 channel_out: BinaryIO):
        self.path = path
        self.append_only = append_only
        self._in = channel_in
        self._out = channel_out
        self.backend: LocalBackend | None = None
        self._uploads: dict[int, LocalUpload] = {}
        self._next_upload = 0

    def serve(self) -> None:
        try:
            while (frame := read_frame(self._in)) is not None:
                header, body = frame
                self._answer(header, body)
        except WireError as error:
            log.warning("the client broke the wire format (%s); the connection ends", error)
        except BrokenPipeError:
            pass  # the client went away while we answered
        finally:
            self._end()

    def _answer(self, header: dict, body: bytes) -> None:
        reply_body = b""
        try:
            result = self._handler(header.get("op"))(self, header, body)
            if isinstance(result, tuple):
                result, reply_body = result
            reply = {"result": result}
        except Refused as error:
            reply = {"error": "append-only", "message": str(error)}
        except FileNotFoundError as error:
            reply = {"error": "missing", "message": str(error.filename or error)}
        except ValueError as error:
            reply = {"error": "name", "message": str(error)}
        except DiskvaultError as error:
            reply = {"error": "diskvault", "class": type(error).__name__,
                     "message": str(error)}
        except OSError as error:
            reply = {"error": "os", "errno": error.errno or errno.EIO,
                     "message": error.strerror or str(error)}
        except (ProtocolViolation, KeyError, TypeError, AttributeError) as error:
            reply = {"error": "protocol", "message": f"{type(error).__name__}: {error}"}
        write_frame(self._out, reply, reply_body)

    def _handler(self, op) -> Callable:
        handler = HANDLERS.get(op) if isinstance(op, str) else None
        if handler is None:
            raise ProtocolViolation(f"no operation {op!r}")
        if (op == "hello") != (self.backend is None):
            raise ProtocolViolation("hello must come first, and only once")
        return handler

    def _end(self) -> None:
        for upload in self._uploads.values():
            upload.abort()
        self._uploads.clear()
        if self.backend is not None:
            self.backend.close()

    # -- the operations ----------------------------------------------------------------------
    def hello(self, header: dict, body: bytes) -> dict:
        """Opens the repository (or, with ``create``, makes it: a missing or empty folder)
        and says how it is served."""
        if header["version"] != WIRE_VERSION:
            raise BadInput(f"this diskvault speaks version {WIRE_VERSION} of the SSH wire "
                           f"format, the client {header['version']}: install the same "
                           f"diskvault release on both hosts")
        location = Location(folder=self.path.expanduser())
        folders = header.get("create")
        if folders is not None:
            location.refuse_used_folder()
            self.backend = LocalBackend.create(location.folder, [str(f) for f in folders])
        else:
            self.backend = location.open_backend()
        return {"version": WIRE_VERSION, "root": str(self.backend.root),
                "append_only": self.append_only}

    def put(self, header: dict, body: bytes) -> None:
        name = header["name"]
        if self.append_only and not may_change(name):
            if not self.backend.put_if_absent(name, body):
                raise Refused(f"overwriting {name}")
            return
        self.backend.put(name, body)

    def put_if_absent(self, header: dict, body: bytes) -> bool:
        name, reuse = header["name"], header.get("reuse")
        if self.append_only and reuse is not None and not may_change(beside(name, reuse)):
            raise Refused(f"recycling {beside(name, reuse)} for {name}")
        return self.backend.put_if_absent(name, body, reuse)

    def upload_open(self, header: dict, body: bytes) -> int:
        name = header["name"]
        upload = self.backend.open_upload(name, replace=not self.append_only or may_change(name))
        self._next_upload += 1
        self._uploads[self._next_upload] = upload
        return self._next_upload

    def upload_write(self, header: dict, body: bytes) -> None:
        self._uploads[header["upload"]].write(body)

    def upload_complete(self, header: dict, body: bytes) -> None:
        upload = self._uploads.pop(header["upload"])
        try:
            upload.complete()
        except FileExistsError:
            raise Refused(f"overwriting {header.get('name', 'an object')}") from None

    def upload_abort(self, header: dict, body: bytes) -> None:
        upload = self._uploads.pop(header["upload"], None)
        if upload is not None:
            upload.abort()

    def get(self, header: dict, body: bytes) -> tuple[None, bytes]:
        return None, self.backend.get(header["name"])

    def get_range(self, header: dict, body: bytes) -> tuple[None, bytes]:
        offset, length = int(header["offset"]), int(header["length"])
        if offset < 0 or length < 0:
            raise ProtocolViolation("a negative range")
        return None, self.backend.get_range(header["name"], offset, length)

    def stat(self, header: dict, body: bytes) -> int | None:
        return self.backend.stat(header["name"])

    def age(self, header: dict, body: bytes) -> dict | None:
        """The age, and the storage's now by this host's clock, from which the client
        measures how far its own clock runs ahead."""
        age = self.backend.age(header["name"])
        if age is None:
            return None
        return {"age_s": age.age_s, "storage_now": time.time() - age.host_ahead_s}

    def list(self, header: dict, body: bytes) -> tuple[None, bytes]:
        return None, encode_names(self.backend.list(header["prefix"]))

    def list_foreign(self, header: dict, body: bytes) -> tuple[None, bytes]:
        return None, encode_names(self.backend.list_foreign(header["prefix"]))

    def list_unfinished(self, header: dict, body: bytes) -> tuple[None, bytes]:
        return None, encode_names(self.backend.list_unfinished(header["prefix"]))

    def discard_unfinished(self, header: dict, body: bytes) -> None:
        """Allowed in append-only mode too: a temp file is no object, and removing one
        erases nothing that was stored."""
        self.backend.discard_unfinished(header["prefix"])

    def delete(self, header: dict, body: bytes) -> None:
        name = header["name"]
        if self.append_only and not may_change(name):
            raise Refused(f"deleting {name}")
        self.backend.delete(name)

    def move(self, header: dict, body: bytes) -> None:
        name, new_name = header["name"], header["new_name"]
        if self.append_only and not (may_change(name) and may_change(new_name)):
            raise Refused(f"moving {name} to {new_name}")
        self.backend.move(name, new_name)

    def read_only_reason(self, header: dict, body: bytes) -> str | None:
        return self.backend.read_only_reason()


HANDLERS = {
    "hello": RepositoryServer.hello,
    "put": RepositoryServer.put,
    "put_if_absent": RepositoryServer.put_if_absent,
    "upload_open": RepositoryServer.upload_open,
    "upload_write": RepositoryServer.upload_write,
    "upload_complete": RepositoryServer.upload_complete,
    "upload_abort": RepositoryServer.upload_abort,
    "get": RepositoryServer.get,
    "get_range": RepositoryServer.get_range,
    "stat": RepositoryServer.stat,
    "age": RepositoryServer.age,
    "list": RepositoryServer.list,
    "list_foreign": RepositoryServer.list_foreign,
    "list_unfinished": RepositoryServer.list_unfinished,
    "discard_unfinished": RepositoryServer.discard_unfinished,
    "delete": RepositoryServer.delete,
    "move": RepositoryServer.move,
    "read_only_reason": RepositoryServer.read_only_reason,
}
