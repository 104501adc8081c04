"""Streaming FastCDC: cuts a stream into content-defined chunks, buffer by buffer.

The boundaries are exactly those of chunking the whole stream at once: FastCDC
decides a cut by looking at most ``max_bytes`` ahead of a chunk's start, so the
unfinished tail of one buffer is carried over and re-cut together with the head
of the next. Knows nothing of hashing or storage.
"""

from __future__ import annotations

from collections.abc import Iterator

from .config import ChunkerParams
from .errors import DiskvaultError

try:
    from fastcdc.fastcdc_cy import fastcdc_cy as _fastcdc
except ImportError:  # pragma: no cover - depends on the installed wheel
    _fastcdc = None


def _require_compiled_chunker():
    if _fastcdc is None:
        raise DiskvaultError(
            "the fastcdc package's compiled chunker (fastcdc.fastcdc_cy) is not importable; "
            "only its slow pure-Python fallback is: reinstall with 'pip install --force-reinstall "
            "fastcdc' on a machine with a C compiler and Python headers")
    return _fastcdc


class StreamChunker:
    """Feed buffers in order; get back every chunk that is final so far.

    Chunks are memoryviews into the caller's buffers (or small bytes objects for a
    chunk that straddles two buffers); they stay valid as long as the caller keeps
    the buffer alive.
    """

    def __init__(self, params: ChunkerParams):
        self._cut = _require_compiled_chunker()
        self._min = params.min_bytes
        self._avg = params.avg_bytes
        self._max = params.max_bytes
        self._carry: bytes = b""

    def _lengths(self, data) -> Iterator[int]:
        for chunk in self._cut(data, self._min, self._avg, self._max):
            yield chunk.length

    def feed(self, buffer) -> list[memoryview | bytes]:
        """Chunks completed by ``buffer``; its unfinished tail is kept for the next call."""
        view = memoryview(buffer)
        if not view:
            return []
        chunks: list[memoryview | bytes] = []
        start = 0
        if self._carry:
            # Only the first chunk needs the carried bytes: cut carry + head of the
            # new buffer, instead of copying the whole buffer behind the carry.
            head = self._carry + view[: self._max].tobytes()
            first = next(self._lengths(head))
            if first == len(head) and len(head) < self._max:
                self._carry = head  # the whole buffer fits in the unfinished chunk
                return chunks
            chunks.append(head[:first])
            start = first - len(self._carry)
            self._carry = b""
        tail_start = start
        for length in self._lengths(view[start:]):
            if tail_start + length == len(view) and length < self._max:
                break  # may grow once more data arrives
            chunks.append(view[tail_start: tail_start + length])
            tail_start += length
        self._carry = view[tail_start:].tobytes()
        return chunks

    def finish(self) -> list[bytes]:
        """The last chunk of the stream (if any bytes are left)."""
        carry, self._carry = self._carry, b""
        return [carry] if carry else []
