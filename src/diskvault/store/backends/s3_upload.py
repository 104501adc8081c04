"""Streamed uploads to an S3 bucket: a multipart upload whose parts go up in the
background while the writer fills the next. Imported only with store/backends/s3.py."""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor, wait

from botocore.exceptions import BotoCoreError, ClientError

from .s3_client import body_check, error_code

PART_BYTES = 8 * 1024 * 1024  # s3transfer's default part size and multipart threshold
PARTS_PENDING_PER_UPLOAD = 4  # parts of one upload in flight before its writer waits


def abort_upload(backend, name: str, upload_id: str) -> None:
    try:
        backend.client.abort_multipart_upload(Bucket=backend.bucket, Key=backend.key(name),
                                              UploadId=upload_id)
    except ClientError as error:
        if error_code(error) != "NoSuchUpload":  # already aborted or completed
            raise backend.translate(error, name, writing=True) from None
    except BotoCoreError as error:
        raise backend.translate(error, name, writing=True) from None


class S3Upload:
    """A multipart upload, begun with its first part (so a writer that dies after it
    leaves it listed as unfinished), its parts sent in the background as they fill, at most
    PARTS_PENDING_PER_UPLOAD at once (memory: those and the part filling; a writer faster
    than the link waits), so a pack is mostly up by the time it is sealed. An upload that
    never filled a part is aborted and sent as one plain PUT. Visible only once
    ``complete`` returns. CompleteMultipartUpload ignores If-None-Match on RGW 16; no need:
    pack names are unique."""

    def __init__(self, backend, name: str, senders: ThreadPoolExecutor):
        self._backend = backend
        self._name = name
        self._key = backend.key(name)
        self._senders = senders
        self._buffer = bytearray(PART_BYTES)  # the part filling, sent as it is when full
        self._filled = 0
        self._sending: deque[Future] = deque()
        self._parts: list[dict] = []
        self._next_part = 1
        self._upload_id: str | None = None  # begun with the first part
        self._lock: dict = {}  # the retention it was begun with (Object Lock)
        self._finished = False  # completed or aborted

    def write(self, data) -> None:
        # Each byte is copied once, into the part; a full part is handed to its sender and
        # a new one begun (the writer is one thread: a second copy of 8 MiB cost it).
        view = memoryview(data).cast("B")
        while view:
            piece = view[:PART_BYTES - self._filled]
            self._buffer[self._filled:self._filled + len(piece)] = piece
            self._filled += len(piece)
            view = view[len(piece):]
            if self._filled == PART_BYTES:
                self._send(self._buffer)
                self._buffer, self._filled = bytearray(PART_BYTES), 0

    def _take_filled(self) -> bytearray:
        """The part filled so far (a last, short one), and a new empty one in its place."""
        part, filled = self._buffer, self._filled
        self._buffer, self._filled = bytearray(), 0
        del part[filled:]
        return part

    def _send(self, part: bytearray) -> None:
        if self._upload_id is None:
            self._lock = self._backend.lock_arguments(self._name)
            self._upload_id = self._backend.request(
                self._backend.client.create_multipart_upload, self._name, writing=True,
                Key=self._key, **self._lock)["UploadId"]
        self._sending.append(self._senders.submit(self._upload_part, self._next_part, part))
        self._next_part += 1
        while len(self._sending) > PARTS_PENDING_PER_UPLOAD:
            self._parts.append(self._sending.popleft().result())

    def _settle(self) -> None:
        """Wait for every part sent; a failure is raised once none is in flight."""
        wait(self._sending)
        sending, self._sending = self._sending, deque()
        self._parts += [future.result() for future in sending]

    def _upload_part(self, number: int, part: bytearray) -> dict:
        answer = self._backend.request(
            self._backend.client.upload_part, self._name, writing=True, Key=self._key,
            UploadId=self._upload_id, PartNumber=number, Body=part,
            **body_check(self._backend.client, part, bool(self._lock)))
        return {"PartNumber": number, "ETag": answer["ETag"]}

    def complete(self) -> None:
        if self._finished:
            raise ValueError(f"the upload of {self._name} was aborted or completed")
        backend = self._backend
        if self._upload_id is None:  # not one part filled: one plain PUT
            backend.put(self._name, self._take_filled())
            self._finished = True
            return
        if self._filled:
            self._send(self._take_filled())
        self._settle()
        # the answer's ETag is empty on RGW 16 (BZ 2266579): nothing here relies on it
        backend.request(backend.client.complete_multipart_upload, self._name, writing=True,
                        Key=self._key, UploadId=self._upload_id,
                        MultipartUpload={"Parts": self._parts})
        if self._lock:
            backend.object_lock.after_upload(self._name, self._lock)
        self._finished, self._upload_id = True, None

    def abort(self) -> None:
        if self._finished:
            return
        self._finished = True
        wait(self._sending)  # parts in flight end before their upload is aborted
        self._sending = deque()
        self._take_filled()  # dropped
        if self._upload_id is not None:
            upload_id, self._upload_id = self._upload_id, None
            abort_upload(self._backend, self._name, upload_id)
