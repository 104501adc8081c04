"""The NBD reader: a small program run by Debian's own python3, which has libnbd's binding.

python3-libnbd is built for /usr/bin/python3 and is not on PyPI, while diskvault runs in a
virtual environment of its own; so diskvault starts this file as a child (``python3 -I``,
nothing of diskvault imported) and reads its standard output. libnbd does the protocol (URIs,
handshake, structured replies, block status); this program (``nbd_reader.py URI NAME``, NAME
being what its messages call the export) only asks for the export's extents
(``base:allocation``), reads the data extents with several requests in flight, and writes:

    size (u64), then frames (kind, offset u64, length u64): ``D`` followed by ``length`` bytes
    of data, ``Z`` for bytes the server says read as zeros (never read), ``E`` once at the end.

A failure is one line on standard error and exit status 2 (cannot connect or no such export),
3 (libnbd's binding is missing) or 1 (a read failed).
"""

from __future__ import annotations

import fcntl
import struct
import sys
from collections import deque

SIZE = struct.Struct("<Q")
FRAME = struct.Struct("<cQQ")
DATA, ZEROS, END = b"D", b"Z", b"E"
REQUEST_BYTES = 1 << 20  # one read request, and the largest data frame
IN_FLIGHT = 16  # read requests outstanding at once on the connection
PIPE_BYTES = 1 << 20  # the output pipe's buffer (Linux's default, 64 KiB, costs a third)
F_SETPIPE_SZ = 1031  # <linux/fcntl.h>
STATUS_WINDOW = 1 << 30  # bytes asked about per block-status request (the protocol's are 32-bit)
EXIT_CONNECT, EXIT_NO_BINDING, EXIT_READ = 2, 3, 1


def extents(handle, nbd, size: int):
    """(kind, offset, length) covering [0, size): ZEROS where the server's block status
    says the bytes read as zeros, else DATA; neighbours of one kind merged."""
    if not handle.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION):
        yield DATA, 0, size
        return
    offset, kind, start = 0, None, 0
    while offset < size:
        seen: list[tuple[bytes, int]] = []

        def collect(context, _offset, entries, _error):
            if context == nbd.CONTEXT_BASE_ALLOCATION:
                for i in range(0, len(entries), 2):
                    seen.append((ZEROS if entries[i + 1] & nbd.STATE_ZERO else DATA,
                                 entries[i]))
            return 0

        handle.block_status(min(STATUS_WINDOW, size - offset), offset, collect)
        if not seen:
            raise RuntimeError(f"the server gave no block status at byte {offset}")
        for extent_kind, length in seen:
            length = min(length, size - offset)
            if extent_kind != kind:
                if kind is not None and offset > start:
                    yield kind, start, offset - start
                kind, start = extent_kind, offset
            offset += length
            if offset >= size:
                break
    if kind is not None and offset > start:
        yield kind, start, offset - start


def requests(pieces):
    """Data extents split into reads of at most REQUEST_BYTES; zero extents as they are."""
    for kind, offset, length in pieces:
        if kind == ZEROS:
            yield kind, offset, length
            continue
        end = offset + length
        while offset < end:
            step = min(REQUEST_BYTES, end - offset)
            yield kind, offset, step
            offset += step


def send(handle, nbd, out, size: int) -> None:
    """Every frame of the export to ``out`` in order, IN_FLIGHT reads outstanding."""
    pending: deque = deque()

    def write_oldest() -> None:
        kind, offset, length, buffer, cookie = pending.popleft()
        out.write(FRAME.pack(kind, offset, length))
        if buffer is not None:
            while not handle.aio_command_completed(cookie):
                handle.poll(-1)
            out.write(buffer.to_buffer())

    for kind, offset, length in requests(extents(handle, nbd, size)):
        if kind == DATA:
            buffer = nbd.Buffer.from_buffer(bytearray(length))  # written out without a copy
            pending.append((kind, offset, length, buffer, handle.aio_pread(buffer, offset)))
        else:
            pending.append((kind, offset, length, None, None))
        while len(pending) >= IN_FLIGHT:
            write_oldest()
    while pending:
        write_oldest()
    out.write(FRAME.pack(END, size, 0))


def main(uri: str, name: str) -> int:
    """Send the export at ``uri``; ``name`` is what the messages call it."""
    try:
        import nbd
    except ImportError:
        print("reading NBD needs libnbd's Python binding: install the Debian package "
              "python3-libnbd", file=sys.stderr)
        return EXIT_NO_BINDING
    handle = nbd.NBD()
    handle.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
    try:
        handle.connect_uri(uri)
        size = handle.get_size()
    except nbd.Error as error:
        print(f"cannot open the NBD export {name}: {error.string}", file=sys.stderr)
        return EXIT_CONNECT
    try:
        fcntl.fcntl(sys.stdout.fileno(), F_SETPIPE_SZ, PIPE_BYTES)
    except OSError:
        pass  # not a pipe, or above this user's limit: the default works, a little slower
    out = open(sys.stdout.fileno(), "wb", closefd=False)
    try:
        out.write(SIZE.pack(size))
        send(handle, nbd, out, size)
        out.flush()
        handle.shutdown()
    except BrokenPipeError:
        return EXIT_READ  # diskvault stopped reading: it reports why itself
    except (nbd.Error, RuntimeError) as error:
        print(f"reading {name} failed: "
              f"{getattr(error, 'string', None) or error}", file=sys.stderr)
        return EXIT_READ
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
