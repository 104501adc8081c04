"""A tiny QEMU guest for the instant-recovery test: Debian's cloud kernel and a busybox
initramfs whose /init reads a marker from /dev/vda, writes one, and powers off.

The kernel comes from the Debian archive (``apt-get download``, unpacked with ``dpkg -x``,
never installed); the guest runs under TCG, which boots it in seconds where nested KVM does
not boot at all (docs: /work/shared/qemu-notes.md)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

KERNEL_META_PACKAGE = "linux-image-cloud-amd64"
# The modules a virtio disk needs; their own dependencies are read from each module.
DISK_MODULES = ("virtio_pci", "virtio_blk")
READ_SECTOR = 2048   # where the test's marker is, in 512-byte sectors (1 MiB)
WRITE_SECTOR = 4096  # where the guest writes its own (2 MiB)
GUEST_MARKER = b"WRITTEN-BY-THE-GUEST"

INIT = f"""#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for module in $(cat /modules); do insmod /lib/$module.ko; done
tries=0
while [ ! -b /dev/vda ] && [ $tries -lt 300 ]; do sleep 0.1; tries=$((tries + 1)); done
echo "READ: $(dd if=/dev/vda bs=512 skip={READ_SECTOR} count=1 2>/dev/null | tr -d '\\000')"
if printf '{GUEST_MARKER.decode()}' \\
   | dd of=/dev/vda bs=512 seek={WRITE_SECTOR} conv=notrunc,fsync 2>/dev/null
then echo "WRITE: done"; else echo "WRITE: failed"; fi
sync
poweroff -f
"""


def _download_kernel_package(folder: Path) -> Path:
    depends = subprocess.run(["apt-cache", "depends", KERNEL_META_PACKAGE], capture_output=True,
                             text=True)
    found = re.search(r"Depends: (linux-image-\S+)", depends.stdout)
    if depends.returncode != 0 or found is None:
        pytest.skip(f"apt-cache knows no {KERNEL_META_PACKAGE} (run apt-get update)")
    download = subprocess.run(["apt-get", "download", found.group(1)], cwd=folder,
                              capture_output=True, text=True)
    debs = list(folder.glob("linux-image-*.deb"))
    if download.returncode != 0 or not debs:
        pytest.skip(f"apt-get download {found.group(1)} failed: {download.stderr.strip()}")
    return debs[0]


def _module_order(modules_folder: Path, wanted: tuple[str, ...]) -> list[Path]:
    """The .ko files of ``wanted`` and what they depend on, dependencies first."""
    files = {path.name.removesuffix(".ko"): path for path in modules_folder.rglob("*.ko")}
    order: list[Path] = []

    def add(name: str) -> None:
        path = files[name.replace("-", "_")] if name.replace("-", "_") in files else files[name]
        if path in order:
            return
        found = re.search(rb"\0depends=([^\0]*)\0", path.read_bytes())
        for dependency in filter(None, (found.group(1).decode() if found else "").split(",")):
            add(dependency)
        order.append(path)

    for name in wanted:
        add(name)
    return order


def build_guest(folder: Path) -> tuple[Path, Path]:
    """(kernel, initramfs) of the guest, built in ``folder``."""
    for program, package in (("busybox", "busybox-static"), ("cpio", "cpio"),
                             ("dpkg", "dpkg")):
        if shutil.which(program) is None:
            pytest.skip(f"{program} is not installed (apt-get install {package})")
    unpacked = folder / "kernel"
    subprocess.run(["dpkg", "-x", str(_download_kernel_package(folder)), str(unpacked)],
                   check=True)
    [kernel] = (unpacked / "boot").glob("vmlinuz-*")
    root = folder / "initramfs"
    for sub in ("bin", "lib", "proc", "sys", "dev"):
        (root / sub).mkdir(parents=True)
    shutil.copy(shutil.which("busybox"), root / "bin" / "busybox")
    modules = _module_order(unpacked / "lib" / "modules", DISK_MODULES)
    for module in modules:
        shutil.copy(module, root / "lib" / module.name)
    (root / "modules").write_text(" ".join(m.name.removesuffix(".ko") for m in modules))
    (root / "init").write_text(INIT)
    (root / "init").chmod(0o755)
    initramfs = folder / "initramfs.cpio"
    names = subprocess.run(["find", "."], cwd=root, capture_output=True, check=True).stdout
    with open(initramfs, "wb") as out:
        subprocess.run(["cpio", "--quiet", "-o", "-H", "newc"], cwd=root, input=names,
                       stdout=out, check=True)
    return kernel, initramfs


def boot_command(kernel: Path, initramfs: Path, disk: Path, console: Path) -> list[str]:
    """QEMU under TCG, the disk a virtio-blk device, the serial console into a file; the
    guest powers off when its /init is done (and a panic ends QEMU too)."""
    return ["qemu-system-x86_64", "-machine", "pc,accel=tcg", "-m", "256", "-nodefaults",
            "-display", "none", "-no-reboot", "-kernel", str(kernel), "-initrd", str(initramfs),
            "-append", "console=ttyS0 panic=-1 quiet", "-serial", f"file:{console}",
            "-drive", f"file={disk},format=qcow2,if=none,id=disk0",
            "-device", "virtio-blk-pci,drive=disk0"]
