"""Instant recovery end to end: a QEMU guest booted from a qcow2 overlay over the export."""

from __future__ import annotations

import subprocess

import pytest

from ..conftest import run_cli
from ..guests import GUEST_TIMEOUT_S, boot_command, build_initramfs
from .conftest import backed_up, file_sha256, nbd_sha256, require_tools

MiB = 1024 * 1024
TEST_MARKER = b"PUT-THERE-BY-THE-BACKUP"
READ_SECTOR = 2048   # where the test's marker is, in 512-byte sectors (1 MiB)
WRITE_SECTOR = 4096  # where the guest writes its own (2 MiB)
GUEST_MARKER = b"WRITTEN-BY-THE-GUEST"

# The guest reads the test's marker from its disk, writes its own, and powers off.
INIT = f"""marker=$(dd if=/dev/vda bs=512 skip={READ_SECTOR} count=1 2>/dev/null | tr -d '\\000')
echo "READ: $marker"
if printf '{GUEST_MARKER.decode()}' \\
   | dd of=/dev/vda bs=512 seek={WRITE_SECTOR} conv=notrunc,fsync 2>/dev/null
then echo "WRITE: done"; else echo "WRITE: failed"; fi
sync
poweroff -f
"""


def dumped_bytes(dump: str) -> bytes:
    """The bytes of a ``qemu-io read -v`` dump (lines: offset, up to 16 hex bytes, text)."""
    found = bytearray()
    for line in dump.splitlines():
        offset, colon, rest = line.partition(":  ")
        if colon and all(c in "0123456789abcdef" for c in offset):
            found += bytes.fromhex(rest.split("  ", 1)[0])
    return bytes(found)


@pytest.fixture(scope="module")
def guest(guest_kernel, tmp_path_factory):
    """The session's kernel and this test's initramfs."""
    require_tools("qemu-system-x86_64")
    return guest_kernel, build_initramfs(guest_kernel, tmp_path_factory.mktemp("initramfs"),
                                         INIT)


@pytest.mark.slow
def test_guest_boots_from_the_export_its_writes_land_in_the_overlay_only(
        guest, tmp_path, serve):
    require_tools("nbdkit", "nbdcopy", "qemu-img", "qemu-io")
    image = tmp_path / "disk.img"
    with open(image, "wb") as handle:
        handle.write(bytes(range(256)) * 4096)  # 1 MiB of data before the marker
        handle.seek(READ_SECTOR * 512)
        handle.write(TEST_MARKER)
        handle.truncate(16 * MiB)
    repo = tmp_path / "repo"
    run_cli("init", "-r", str(repo), "--encryption", "none", check=True)
    served = serve("-r", str(repo), backed_up(repo, image))
    overlay = tmp_path / "overlay.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", served.uri, "-F", "raw",
                    str(overlay)], check=True)
    console = tmp_path / "console.log"
    kernel, initramfs = guest
    subprocess.run(boot_command(kernel, initramfs, overlay, console), check=True,
                   capture_output=True, timeout=GUEST_TIMEOUT_S)
    output = console.read_text(errors="replace")
    assert f"READ: {TEST_MARKER.decode()}" in output and "WRITE: done" in output, output
    # The guest's write is in the overlay ...
    read_back = subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", f"read -v {WRITE_SECTOR * 512} {len(GUEST_MARKER)}",
         str(overlay)], capture_output=True, text=True, check=True).stdout
    assert dumped_bytes(read_back) == GUEST_MARKER
    # Restore of the running state (docs/instant-recovery.md): the chain copied to a target
    # holds the snapshot plus the guest's write.
    target = tmp_path / "restored.img"
    subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(overlay),
                    str(target)], check=True)
    expected = bytearray(image.read_bytes())
    expected[WRITE_SECTOR * 512: WRITE_SECTOR * 512 + len(GUEST_MARKER)] = GUEST_MARKER
    assert target.read_bytes() == expected
    # ... and nowhere else: the export and the repository are as they were.
    assert nbd_sha256(served.uri) == file_sha256(image)
    assert served.stop()[0] == 0
    run_cli("check", "-r", str(repo), "--read-data", check=True)
