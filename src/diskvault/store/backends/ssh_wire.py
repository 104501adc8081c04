"""The frames SshBackend (ssh.py) and ``diskvault serve-repository`` (remote/server.py) send
each other over an SSH channel's stdin and stdout (docs/ssh.md, "Wire format").

A frame is a 12-byte head -- the magic ``DVR1``, the header's length, the body's length, both
unsigned 32-bit big-endian -- then the header, a JSON object, then the body, raw bytes (an
object's data, a listing). The client sends one request frame and reads one reply frame; a
reply's header holds ``result`` or ``error``. The magic on every frame makes anything else on
the channel (a login script that prints to stdout) a clear error, not garbage parsed.
"""

from __future__ import annotations

import json
import struct
from typing import BinaryIO

MAGIC = b"DVR1"
HEAD = struct.Struct(">4sII")
WIRE_VERSION = 1
MAX_HEADER_BYTES = 1 << 20
# Above a pack's default target (64 MiB) with room: a put is whole, an upload goes in parts.
MAX_BODY_BYTES = 1 << 30
UPLOAD_PART_BYTES = 8 << 20  # an upload's writes are sent in parts of this size


class WireError(Exception):
    """The other side sent something that is not a frame: ``seen`` holds its first bytes."""

    def __init__(self, message: str, seen: bytes = b""):
        super().__init__(message)
        self.seen = seen


def write_frame(stream: BinaryIO, header: dict, body=b"") -> None:
    """One frame, flushed (the other side waits for it)."""
    encoded = json.dumps(header, separators=(",", ":")).encode()
    stream.write(HEAD.pack(MAGIC, len(encoded), len(body)) + encoded)
    if len(body):
        stream.write(body)
    stream.flush()


def read_frame(stream: BinaryIO) -> tuple[dict, bytes] | None:
    """The next frame's header and body; None at the end of the stream before a frame.
    WireError for anything else than a whole frame."""
    head = _read_exactly(stream, HEAD.size, at_start=True)
    if head is None:
        return None
    magic, header_size, body_size = HEAD.unpack(head)
    if magic != MAGIC:
        raise WireError("not a diskvault frame", head + stream.read1(200))
    if header_size > MAX_HEADER_BYTES or body_size > MAX_BODY_BYTES:
        raise WireError(f"a frame of {header_size} + {body_size} bytes is over the limits")
    try:
        header = json.loads(_read_exactly(stream, header_size))
    except ValueError:
        raise WireError("a frame's header is not JSON") from None
    if not isinstance(header, dict):
        raise WireError("a frame's header is not a JSON object")
    return header, _read_exactly(stream, body_size)


def _read_exactly(stream: BinaryIO, size: int, at_start: bool = False) -> bytes | None:
    data = stream.read(size) if size else b""
    if at_start and not data:
        return None
    if len(data) != size:
        raise WireError(f"the stream ended inside a frame ({len(data)} of {size} bytes)", data)
    return data


def encode_names(names: list[str]) -> bytes:
    """A listing as a body: a JSON array (a foreign entry's name may hold any character)."""
    return json.dumps(names).encode()


def decode_names(body: bytes) -> list[str]:
    names = json.loads(body)
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise WireError("a listing is not a JSON array of names")
    return names
