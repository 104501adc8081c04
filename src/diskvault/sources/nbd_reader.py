"""The NBD reader: a small program run by Debian's own python3, which has libnbd's binding.

python3-libnbd is built for /usr/bin/python3 and is not on PyPI, while diskvault runs in a
virtual environment of its own; so diskvault starts this file as a child (``python3 -I``,
nothing of diskvault imported) and reads its standard output. libnbd does the protocol (URIs,
handshake, structured replies, block status); this program (``nbd_reader.py URI NAME``, NAME
being what its messages call the export) only asks for the export's extents
(``base:allocation``), reads the data extents with several requests in flight, and writes:

    size (u64), then frames (kind, offset u64, length u64): ``D`` followed by ``length`` bytes
    of data, ``Z`` for bytes the server says read as zeros (never read), ``E`` once at the end.

With a third argument, a dirty bitmap's name (``nbd_reader.py URI NAME BITMAP``), it writes
the size, then a ``C`` frame for every extent the meta context ``qemu:dirty-bitmap:BITMAP``
marks dirty and ``E``; then it answers requests read from standard input, in the frame
layout: ``R offset length`` gets one ``D`` frame with those bytes, ``A`` gets the whole
export as above. It ends when standard input does.

A failure is one line on standard error and exit status 2 (cannot connect or no such export),
3 (libnbd's binding is missing), 4 (the export offers no such bitmap) or 1 (a read failed).
"""

from __future__ import annotations

import fcntl
import struct
import sys
from collections import deque

SIZE = struct.Struct("<Q")
FRAME = struct.Struct("<cQQ")
DATA, ZEROS, END = b"D", b"Z", b"E"
CHANGED = b"C"  # an extent the dirty bitmap marks (bitmap mode)
READ, ALL = b"R", b"A"  # requests (bitmap mode)
BITMAP_CONTEXT = "qemu:dirty-bitmap:"
STATE_DIRTY = 1  # the bit a qemu:dirty-bitmap context sets on a dirty extent
REQUEST_BYTES = 1 << 20  # one read request, and the largest data frame
IN_FLIGHT = 16  # read requests outstanding at once on the connection
PIPE_BYTES = 1 << 20  # the output pipe's buffer (Linux's default, 64 KiB, costs a third)
F_SETPIPE_SZ = 1031  # <linux/fcntl.h>
STATUS_WINDOW = 1 << 30  # bytes asked about per block-status request (the protocol's are 32-bit)
EXIT_CONNECT, EXIT_NO_BINDING, EXIT_READ, EXIT_NO_BITMAP = 2, 3, 1, 4


def extents(handle, nbd, size: int):
    """(kind, offset, length) covering [0, size): ZEROS where the server's block status
    says the bytes read as zeros, else DATA; neighbours of one kind merged."""
    if not handle.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION):
        yield DATA, 0, size
        return
    yield from _status_extents(handle, size, nbd.CONTEXT_BASE_ALLOCATION,
                               lambda flags: ZEROS if flags & nbd.STATE_ZERO else DATA)


def dirty_extents(handle, size: int, context: str):
    """(CHANGED, offset, length) for every run of bytes the bitmap ``context`` marks."""
    for kind, offset, length in _status_extents(
            handle, size, context, lambda flags: CHANGED if flags & STATE_DIRTY else None):
        if kind == CHANGED:
            yield kind, offset, length


def _status_extents(handle, size: int, wanted: str, kind_of):
    """(kind, offset, length) covering [0, size) from the meta context ``wanted``, each
    extent's kind ``kind_of(flags)``; neighbours of one kind merged."""
    offset, kind, start = 0, None, 0
    while offset < size:
        seen: list[tuple[bytes, int]] = []

        def collect(context, _offset, entries, _error):
            if context == wanted:
                for i in range(0, len(entries), 2):
                    seen.append((kind_of(entries[i + 1]), entries[i]))
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


def answer(handle, nbd, out, size: int) -> None:
    """Answer the requests on standard input until it ends (bitmap mode)."""
    requests_in = open(sys.stdin.fileno(), "rb", closefd=False)
    while True:
        request = requests_in.read(FRAME.size)
        if len(request) < FRAME.size:
            return
        kind, offset, length = FRAME.unpack(request)
        if kind == ALL:
            send(handle, nbd, out, size)
        elif kind == READ and offset + length <= size:
            out.write(FRAME.pack(DATA, offset, length))
            for _, part_offset, part_length in requests([(DATA, offset, length)]):
                out.write(handle.pread(part_length, part_offset))
        else:
            raise RuntimeError(f"a request out of range: {kind!r} {offset}+{length}")
        out.flush()


def main(uri: str, name: str, bitmap: str | None = None) -> int:
    """Send the export at ``uri``; ``name`` is what the messages call it. With ``bitmap``,
    send its dirty extents, then answer requests."""
    try:
        import nbd
    except ImportError:
        print("reading NBD needs libnbd's Python binding: install the Debian package "
              "python3-libnbd", file=sys.stderr)
        return EXIT_NO_BINDING
    handle = nbd.NBD()
    handle.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
    context = BITMAP_CONTEXT + bitmap if bitmap is not None else None
    if context:
        handle.add_meta_context(context)
    try:
        handle.connect_uri(uri)
        size = handle.get_size()
    except nbd.Error as error:
        print(f"cannot open the NBD export {name}: {error.string}", file=sys.stderr)
        return EXIT_CONNECT
    if context and not handle.can_meta_context(context):
        print(f"the NBD export {name} offers no dirty bitmap {bitmap} (meta context "
              f"{context}): have the server export it, or back up without --dirty-bitmap "
              f"(a full read)", file=sys.stderr)
        return EXIT_NO_BITMAP
    try:
        fcntl.fcntl(sys.stdout.fileno(), F_SETPIPE_SZ, PIPE_BYTES)
    except OSError:
        pass  # not a pipe, or above this user's limit: the default works, a little slower
    out = open(sys.stdout.fileno(), "wb", closefd=False)
    try:
        out.write(SIZE.pack(size))
        if context:
            for frame in dirty_extents(handle, size, context):
                out.write(FRAME.pack(*frame))
            out.write(FRAME.pack(END, size, 0))
            out.flush()
            answer(handle, nbd, out, size)
        else:
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
    sys.exit(main(*sys.argv[1:4]))
