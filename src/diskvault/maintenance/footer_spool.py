"""Pack footers kept on disk between repair's two passes over them: the first reads every
footer once (verifying, salvaging), the rebuild reads them back. Held in memory they were
the whole index again, a few hundred bytes per chunk; here memory is one pack's records,
a row per pack, and the sorted runs that find the chunks stored more than once."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Collection, Iterator
from pathlib import Path

from ..store.format.packs import PackEntry
from ..store.index.bulk_load import DIGEST_BYTES, ORDINAL_BYTES, PackFooter
from ..store.index.records import LOCATION, encode_location
from ..store.index.sorted_runs import SortedRuns

RECORD_BYTES = DIGEST_BYTES + LOCATION.size  # a digest and its location in the pack


class FooterSpool:
    """Footers added pack by pack, read back in the same order (unlinked files in
    ``folder``, mode 0600, gone with the process). Use it in a ``with`` block."""

    def __init__(self, folder: Path):
        self._file = tempfile.TemporaryFile(dir=folder)  # O_TMPFILE: no name, 0600
        self._rows: list[tuple[str, int, int]] = []  # pack id, file size, records
        self._copies = SortedRuns(DIGEST_BYTES + ORDINAL_BYTES + LOCATION.size, folder)
        self._ordinal = 0

    def __enter__(self) -> FooterSpool:
        return self

    def __exit__(self, *exc) -> None:
        self._file.close()
        self._copies.close()

    @property
    def pack_count(self) -> int:
        return len(self._rows)

    def add(self, pack_id: str, entries: list[PackEntry], file_size: int) -> None:
        pack_key = bytes.fromhex(pack_id)
        records = [entry.digest + encode_location(pack_key, entry) for entry in entries]
        self._file.write(b"".join(records))
        for record in records:
            self._copies.add(record[:DIGEST_BYTES] + self._ordinal.to_bytes(ORDINAL_BYTES, "big")
                             + record[DIGEST_BYTES:])
            self._ordinal += 1
        self._rows.append((pack_id, file_size, len(records)))

    def packs(self, dropped: Collection[tuple[str, int]] = ()) -> Iterator[PackFooter]:
        """Each pack's footer as added, without the records in ``dropped`` (pack, offset)."""
        self._file.flush()
        offset = 0
        for pack_id, file_size, count in self._rows:
            data = os.pread(self._file.fileno(), count * RECORD_BYTES, offset)
            offset += len(data)
            entries = [_entry(data, start) for start in range(0, len(data), RECORD_BYTES)]
            yield pack_id, [e for e in entries if (pack_id, e.offset) not in dropped], file_size

    def duplicates(self) -> Iterator[tuple[bytes, list[tuple[str, PackEntry]]]]:
        """Each digest stored more than once, with its copies (pack, record) in the order
        they were added: the order in which a rebuild meets them."""
        group: list[bytes] = []
        for record in self._copies:
            if group and record[:DIGEST_BYTES] != group[0][:DIGEST_BYTES]:
                yield from _if_copies(group)
                group = []
            group.append(record)
        yield from _if_copies(group)


def _entry(data: bytes, start: int) -> PackEntry:
    _, offset, stored, raw, flags = LOCATION.unpack_from(data, start + DIGEST_BYTES)
    return PackEntry(data[start:start + DIGEST_BYTES], offset, stored, raw, flags)


def _if_copies(group: list[bytes]) -> Iterator[tuple[bytes, list[tuple[str, PackEntry]]]]:
    if len(group) > 1:
        cut = DIGEST_BYTES + ORDINAL_BYTES
        yield group[0][:DIGEST_BYTES], [
            (record[cut:cut + 16].hex(), _entry(record[:DIGEST_BYTES] + record[cut:], 0))
            for record in group]
