"""Pack layout: immutable files of chunk records with a self-describing footer.

    header   8 bytes   b"DVPACK" + format version (2 bytes, big endian)
    records  the stored bytes of each chunk, back to back
    footer   one 49-byte entry per record: digest (32), offset (u64), stored length
             (u32), raw length (u32), flags (u8) -- little endian
    trailer  record count (u32), blake3 of the footer (32), b"DVPKEND1"

Format version 3, encrypted: the footer is sealed (its lengths are the chunks' lengths, which
would let a reader of the repository recognise known content) and the trailer is record
count (u32), b"DVPKEND3". The footer lets the index be rebuilt from the packs alone (see
docs/format.md).
"""

from __future__ import annotations

import secrets
import struct
from collections.abc import Callable
from dataclasses import dataclass

from ...errors import AuthenticationFailed, CorruptData, MissingChunk
from ..backends.protocol import Backend, StrayNotice, Upload
from .crypto import NoEncryption, RecordCipher, RecordKind, associated_data

PACKS_PREFIX = "packs/"
DAMAGED_PREFIX = "damaged/"
PACK_SUFFIX = ".pack"
PACK_ID_HEX_DIGITS = 32
# A pack id begins with its writer's tag: a backup tells the unfinished packs of a writer
# that is gone (its registration stale) from those of one still running (writers.py).
WRITER_TAG_HEX_DIGITS = 8
FOLDER_HEX_DIGITS = 2

PACK_MAGIC = b"DVPACK\x00\x01"
TRAILER_MAGIC = b"DVPKEND1"
ENTRY = struct.Struct("<32sQIIB")
TRAILER = struct.Struct("<I32s8s")
SEALED_TRAILER_MAGIC = b"DVPKEND3"
SEALED_TRAILER = struct.Struct("<I8s")
MAGIC_BYTES = len(TRAILER_MAGIC)

FLAG_ZSTD = 0x01  # record is zstd-compressed (before sealing)
FLAG_SEALED = 0x02  # record is sealed (AES-256-GCM, format version 2); bits 2-7 reserved


# The tail read first for a footer: a 64 MiB pack of 64 KiB chunks has ~1000 entries.
FOOTER_TAIL_BYTES = 128 * 1024


@dataclass(frozen=True)
class PackEntry:
    digest: bytes
    offset: int
    stored_size: int
    raw_size: int
    flags: int


def is_pack_id(text: str) -> bool:
    return len(text) == PACK_ID_HEX_DIGITS and all(c in "0123456789abcdef" for c in text)


def pack_name(pack_id: str) -> str:
    """The object name of a pack: ``packs/<first two hex digits>/<pack id>.pack``."""
    return f"{PACKS_PREFIX}{pack_id[:FOLDER_HEX_DIGITS]}/{pack_id}{PACK_SUFFIX}"


def pack_id_of(name: str) -> str | None:
    """The pack id an object name stands for, None if it is not a pack's name."""
    folder, _, file_name = name.removeprefix(PACKS_PREFIX).partition("/")
    pack_id = file_name.removesuffix(PACK_SUFFIX)
    if name.startswith(PACKS_PREFIX) and file_name.endswith(PACK_SUFFIX) \
            and is_pack_id(pack_id) and folder == pack_id[:FOLDER_HEX_DIGITS]:
        return pack_id
    return None


def _is_pack_folder(name: str) -> bool:
    """``packs/<two hex digits>/``: a pack folder left empty by compaction."""
    folder = name.removeprefix(PACKS_PREFIX).removesuffix("/")
    return name == f"{PACKS_PREFIX}{folder}/" and all(c in "0123456789abcdef" for c in folder) \
        and len(folder) == FOLDER_HEX_DIGITS


def writer_tag_of(unfinished_name: str) -> str:
    """The writer tag of an unfinished pack's name (``packs/ab/.<id>.pack.<hex>.tmp`` in a
    folder, ``packs/ab/<id>.pack`` on an object store)."""
    return unfinished_name.rpartition("/")[2].lstrip(".")[:WRITER_TAG_HEX_DIGITS]


class PackStore:
    """The packs of a repository, by pack id, over its backend."""

    def __init__(self, backend: Backend, cipher: RecordCipher | None = None,
                 repository_id: str | None = None):
        self.backend = backend
        self._cipher = cipher or NoEncryption()
        self._repository_id = repository_id
        self._stray_notice = StrayNotice(backend, PACKS_PREFIX, "diskvault packs")
        self.writer_tag = secrets.token_hex(WRITER_TAG_HEX_DIGITS // 2)  # this process's

    def new_pack_id(self) -> str:
        """A new pack's id: this process's writer tag, then random hex digits."""
        return self.writer_tag + secrets.token_hex(
            (PACK_ID_HEX_DIGITS - WRITER_TAG_HEX_DIGITS) // 2)

    def footer_checksum(self, pack_id: str, footer: bytes) -> bytes:
        """blake3 of the footer; in an encrypted repository keyed, and bound to the
        repository and the pack's id, so a footer edited or moved to another pack fails."""
        if not self._cipher.encrypted:
            return self._cipher.authenticator(b"", footer)
        return self._cipher.authenticator(self._footer_associated(pack_id), footer)

    def _footer_associated(self, pack_id: str) -> bytes:
        return associated_data(RecordKind.PACK_FOOTER, self._repository_id,
                               pack_id.encode("ascii"))

    def encode_footer(self, pack_id: str, entries: list[PackEntry]) -> bytes:
        """Footer and trailer as written at the end of the pack: sealed in a repository
        that hides lengths, else in the clear with its checksum."""
        footer = b"".join(ENTRY.pack(e.digest, e.offset, e.stored_size, e.raw_size, e.flags)
                          for e in entries)
        if self._cipher.hides_lengths:
            sealed = self._cipher.seal(footer, self._footer_associated(pack_id))
            return sealed + SEALED_TRAILER.pack(len(entries), SEALED_TRAILER_MAGIC)
        return footer + TRAILER.pack(len(entries), self.footer_checksum(pack_id, footer),
                                     TRAILER_MAGIC)

    def decode_footer(self, pack_id: str, tail: bytes, read_before) -> tuple[bytes, int]:
        """The footer's entries (as bytes) and where the footer starts counted back from
        the pack's end, from the pack's ``tail``; ``read_before(length)`` reads the
        ``length`` bytes that end where the tail starts (a footer longer than the tail).
        CorruptData if the footer is damaged, altered or of the other kind."""
        magic = tail[-MAGIC_BYTES:]
        sealed = self._cipher.hides_lengths
        expected = SEALED_TRAILER_MAGIC if sealed else TRAILER_MAGIC
        if magic != expected:
            kind = {SEALED_TRAILER_MAGIC: "a sealed footer", TRAILER_MAGIC: "a footer in the "
                    "clear"}.get(magic)
            if kind is None:
                raise CorruptData(f"pack {pack_id} has no valid footer (truncated or damaged)")
            raise CorruptData(f"pack {pack_id} has {kind}, which this repository's format "
                              f"never writes (planted or altered)")
        trailer = SEALED_TRAILER if sealed else TRAILER
        if len(tail) < trailer.size:
            raise CorruptData(f"pack {pack_id} is truncated ({len(tail)} bytes)")
        count, *checksum, _ = trailer.unpack(tail[-trailer.size:])
        length = count * ENTRY.size + (self._cipher.overhead_bytes if sealed else 0)
        stored = tail[-trailer.size - length: len(tail) - trailer.size]
        if len(stored) < length:
            stored = read_before(length - len(stored)) + stored
        footer_from_end = trailer.size + length
        if sealed:
            try:
                return self._cipher.open_sealed(stored, self._footer_associated(pack_id)), \
                    footer_from_end
            except AuthenticationFailed:
                raise CorruptData(f"pack {pack_id}: footer failed authentication (damaged, "
                                  f"or altered or moved from another pack)") from None
        if not secrets.compare_digest(self.footer_checksum(pack_id, stored), checksum[0]):
            raise CorruptData(f"pack {pack_id}: footer checksum mismatch (damaged, or altered "
                              f"or moved from another pack)")
        return stored, footer_from_end

    def create(self, pack_id: str) -> Upload:
        return self.backend.open_upload(pack_name(pack_id))

    def read(self, pack_id: str, offset: int, length: int) -> bytes:
        try:
            return self.backend.get_range(pack_name(pack_id), offset, length)
        except FileNotFoundError:
            raise MissingChunk(f"pack {pack_id} is missing from the repository") from None

    def advise_will_need(self, pack_id: str, offset: int, length: int) -> None:
        try:
            self.backend.prefetch(pack_name(pack_id), offset, length)
        except FileNotFoundError:
            raise MissingChunk(f"pack {pack_id} is missing from the repository") from None

    def size(self, pack_id: str) -> int:
        """FileNotFoundError if the pack is gone (compaction checks for that)."""
        size = self.backend.stat(pack_name(pack_id))
        if size is None:
            raise FileNotFoundError(f"pack {pack_id} is missing from the repository")
        return size

    def list(self) -> list[str]:
        """The ids of the packs. Anything else under packs/ is not ours: ignored, with one
        warning per process (check lists it)."""
        pack_ids, strays = self._scan()
        self._stray_notice.warn(strays)
        return pack_ids

    def strays(self) -> list[str]:
        """Names under packs/ that are not packs in their own folder (nor packs being
        written). The caller reports them: list() then stays quiet about them."""
        self._stray_notice.reported_elsewhere()
        return self._scan()[1]

    def _scan(self) -> tuple[list[str], list[str]]:
        pack_ids, strays = [], []
        for name in self.backend.list(PACKS_PREFIX):
            pack_id = pack_id_of(name)
            if pack_id is None:
                strays.append(name)
            else:
                pack_ids.append(pack_id)
        strays += (name for name in self.backend.list_foreign(PACKS_PREFIX)
                   if not _is_pack_folder(name))
        return pack_ids, sorted(strays)

    def list_unfinished(self) -> list[str]:
        """Leftovers of packs whose writer died before finishing them."""
        return self.backend.list_unfinished(PACKS_PREFIX)

    def discard_unfinished(self) -> None:
        """Remove those leftovers; call with the exclusive writer lock held."""
        self.backend.discard_unfinished(PACKS_PREFIX)

    def discard_abandoned(self, running_writers: Callable[[], set[str]]) -> None:
        """Remove the leftovers of writers no longer running: those whose pack id begins
        with none of the tags ``running_writers()`` gives, asked after the leftovers are
        listed (a writer registers before it begins a pack, so the writer of a listed pack
        is among them while it runs). Safe beside other backups."""
        unfinished = self.list_unfinished()
        if not unfinished:
            return
        running = running_writers()
        for name in unfinished:
            if writer_tag_of(name) not in running:
                self.backend.discard_unfinished(name)  # that name's leftovers only

    def delete(self, pack_id: str) -> None:
        self.backend.delete(pack_name(pack_id))

    def set_aside(self, pack_id: str) -> None:
        """Move a damaged pack to ``damaged/<pack id>.pack`` (repair): kept for
        inspection, never listed or read again."""
        self.backend.move(pack_name(pack_id), f"{DAMAGED_PREFIX}{pack_id}{PACK_SUFFIX}")


class PackWriter:
    """Appends records to one new pack; ``finish`` writes the footer and makes it durable."""

    def __init__(self, packs: PackStore, pack_id: str):
        self.pack_id = pack_id
        self._packs = packs
        self._sink = packs.create(pack_id)
        self._sink.write(PACK_MAGIC)
        self.size = len(PACK_MAGIC)
        self.entries: list[PackEntry] = []

    def add(self, digest: bytes, stored, raw_size: int, flags: int) -> PackEntry:
        entry = PackEntry(digest, self.size, len(stored), raw_size, flags)
        self._sink.write(stored)
        self.size += len(stored)
        self.entries.append(entry)
        return entry

    def finish(self) -> list[PackEntry]:
        footer = self._packs.encode_footer(self.pack_id, self.entries)
        self._sink.write(footer)
        self._sink.complete()
        self.size += len(footer)
        return self.entries

    def abort(self) -> None:
        self._sink.abort()


def read_footer(packs: PackStore, pack_id: str, size: int | None = None) -> list[PackEntry]:
    """The entries of a pack, from its footer alone; CorruptData if the footer is damaged.
    One read of the pack's tail usually holds the whole footer (one request on S3)."""
    size = packs.size(pack_id) if size is None else size
    if size < len(PACK_MAGIC) + SEALED_TRAILER.size:
        raise CorruptData(f"pack {pack_id} is truncated ({size} bytes)")
    tail_start = max(0, size - FOOTER_TAIL_BYTES)
    tail = packs.read(pack_id, tail_start, size - tail_start)
    if len(tail) != size - tail_start:
        raise CorruptData(f"pack {pack_id} is shorter than its size ({size} bytes)")

    def read_before(length: int) -> bytes:
        if tail_start - length < len(PACK_MAGIC):
            raise CorruptData(f"pack {pack_id} has no valid footer (truncated or damaged)")
        return packs.read(pack_id, tail_start - length, length)

    footer, footer_from_end = packs.decode_footer(pack_id, tail, read_before)
    footer_start = size - footer_from_end
    if footer_start < len(PACK_MAGIC):
        raise CorruptData(f"pack {pack_id} has no valid footer (truncated or damaged)")
    count = len(footer) // ENTRY.size
    entries = [PackEntry(*ENTRY.unpack_from(footer, i * ENTRY.size)) for i in range(count)]
    for entry in entries:
        if entry.offset < len(PACK_MAGIC) or entry.offset + entry.stored_size > footer_start:
            raise CorruptData(f"pack {pack_id}: footer entry points outside the records")
    return entries
