"""Which reader a backup source needs: a running QEMU guest's drive (a QMP URI), an NBD
URI, or a file in a disk-image format (read as the guest sees it through qemu-nbd), or
None: a plain file or device, read as it is."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .disk_formats import detect_format, served
from .nbd import NbdSource, is_nbd_uri
from .running_guest import Freeze, is_qmp_uri, running_guest_source


def names_no_file(spec: str) -> bool:
    """Whether ``spec`` is a URI (NBD, QMP), which gives a series no name of its own."""
    return is_nbd_uri(spec) or is_qmp_uri(spec)


@contextmanager
def opened_disk_source(spec: str, raw: bool = False, freeze: Freeze | None = None,
                       bitmap: str | None = None) -> Iterator[NbdSource | None]:
    """The opened source for ``spec``, or None when it is a plain file or device (also a
    qcow2 & co. when ``raw``: its container bytes). ``freeze`` is for a running guest (a
    QMP URI) only. With a dirty ``bitmap`` (a QMP or NBD URI), the source also knows what
    the bitmap marks; a running guest's bitmap is rotated when the block ends, if the
    source was told its snapshot is ``recorded``. Everything started for it is stopped
    when the block ends."""
    if is_qmp_uri(spec):
        with running_guest_source(spec, freeze, bitmap) as source:
            yield source
        return
    if is_nbd_uri(spec):
        with NbdSource(spec, bitmap=bitmap) as source:
            yield source
        return
    image_format = None if raw else detect_format(Path(spec))
    if image_format is None:
        yield None
        return
    path = Path(spec)
    with served(path, image_format) as uri, \
            NbdSource(uri, label=str(path.absolute())) as source:
        yield source
