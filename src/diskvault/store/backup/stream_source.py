"""An image read once, in order, from a stream (standard input: a pipe or a socket).

No seeking and no holes: all-zero chunks still become zero runs (by digest). The size is
known only at the end, unless the user gave it; then a stream that ends early or runs
past it is an error, and nothing is recorded. A pipe says nothing of how its producer
ended, so an empty stream, and one shorter than the series' previous snapshot (unless the
user allows a shrink), are taken for a producer that failed and are not recorded either.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

from ...errors import IncompleteStream, SourceChanged
from .source import READ_BUFFER_BYTES, Extent

STDIN_LABEL = "-"


class StreamSource:
    """The ``pieces``/``check_unchanged`` side of ImageSource, over a stream."""

    label = STDIN_LABEL
    path = "standard input"
    consistency = None  # what the producer made of it is not known here

    def __init__(self, stream: BinaryIO, expected_size: int | None = None,
                 minimum_size: int = 1):
        self._stream = stream
        self._expected_size = expected_size
        self._minimum_size = max(1, minimum_size)
        self.size = 0  # bytes read so far; the image's size once pieces() is exhausted

    def pieces(self) -> Iterator[tuple[Extent, bytes]]:
        """The stream in buffers of READ_BUFFER_BYTES (a buffered read waits for them to
        fill, so pipe-sized reads do not become tiny buffers)."""
        while True:
            buffer = self._stream.read(READ_BUFFER_BYTES)
            if not buffer:
                return
            offset = self.size
            self.size += len(buffer)
            if self._expected_size is not None and self.size > self._expected_size:
                raise SourceChanged(f"standard input holds more than the {self._expected_size} "
                                    f"bytes --size gave; nothing was recorded: give the "
                                    f"right --size, or none")
            yield Extent(offset, len(buffer), False), buffer

    def check_unchanged(self) -> None:
        """Fail if the stream was empty, or ended before the size the user gave or (without
        one) before the minimum size."""
        if self.size == 0:
            raise IncompleteStream("standard input was empty; nothing was recorded: the "
                                   "command feeding it failed or wrote nothing (check its "
                                   "error), then rerun")
        if self._expected_size is not None and self.size != self._expected_size:
            raise IncompleteStream(f"standard input ended after {self.size} bytes, before "
                                   f"the {self._expected_size} bytes --size gave; nothing was "
                                   f"recorded: check the command feeding it, then rerun")
        if self._expected_size is None and self.size < self._minimum_size:
            raise IncompleteStream(f"standard input ended after {self.size} bytes, short of "
                                   f"the series' previous snapshot ({self._minimum_size} "
                                   f"bytes); nothing was recorded: if the command feeding it "
                                   f"failed, fix it and rerun; if the image really shrank, "
                                   f"rerun with --allow-shrink or --size")
