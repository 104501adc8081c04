"""Which filesystem a volume holds, from its signatures; and, when none we know, what it
looks like instead (swap, LUKS, LVM, zeros ...) so the error message can say so."""

from __future__ import annotations

from typing import BinaryIO

from .fileview import read_at


def detect_filesystem(fileobj: BinaryIO) -> str | None:
    """The family at the start of a volume ('ext', 'fat', 'exfat', 'ntfs', 'xfs', 'btrfs'), or
    None.

    Signature checks only; a detected family can still fail to open when it is damaged.
    """
    head = read_at(fileobj, 0, 4096).ljust(4096, b"\0")
    if head[3:11] == b"NTFS    ":
        return "ntfs"
    if head[3:11] == b"EXFAT   ":
        return "exfat"
    if head[:4] == b"XFSB":
        return "xfs"
    if head[1080:1082] == b"\x53\xef":
        return "ext"
    if read_at(fileobj, 0x10040, 8) == b"_BHRfS_M":
        return "btrfs"
    if _looks_like_fat(head):
        return "fat"
    return None


def _looks_like_fat(head: bytes) -> bool:
    from dissect.fat.fat import validate_bpb

    if head[510:512] != b"\x55\xaa" and head[0] not in (0xEB, 0xE9):
        return False
    try:
        validate_bpb(head[:512])
    except Exception:  # any complaint about the BPB means: not FAT
        return False
    return True


_SIGNATURES = [  # (offset, magic, what it is) for the "holds no known filesystem" message
    (4086, b"SWAPSPACE2", "Linux swap"), (4086, b"SWAP-SPACE", "Linux swap"),
    (65526, b"SWAPSPACE2", "Linux swap (64 KiB pages)"),
    (0, b"LUKS\xba\xbe", "a LUKS encrypted volume"), (0, b"SKUL\xba\xbe", "a LUKS2 volume"),
    (512, b"LABELONE", "an LVM2 physical volume"), (3, b"-FVE-FS-", "a BitLocker volume"),
    (0, b"hsqs", "squashfs"), (1024, b"H+", "HFS+"), (1024, b"HX", "HFSX"),
    (32, b"NXSB", "APFS"), (1024, b"\x10\x20\xf5\xf2", "F2FS"), (32769, b"CD001", "ISO 9660"),
    (4096, b"\xfc\x4e\x2b\xa9", "a Linux MD RAID member"), (0, b"\xeb\x76\x90EXFAT", "exFAT"),
    (0, b"\x00\x00\x00\x00ReFS", "ReFS"), (3, b"ReFS", "ReFS"),
]


def describe_content(fileobj: BinaryIO) -> str:
    """A short guess at what an unknown volume holds, for error messages."""
    for offset, magic, what in _SIGNATURES:
        if read_at(fileobj, offset, len(magic)) == magic:
            return what
    head = read_at(fileobj, 0, 65536)
    if not head:
        return "nothing (it is empty)"
    if not head.strip(b"\0"):
        return "all zeros"
    return "bytes " + head[:16].hex(" ")
