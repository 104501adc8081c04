"""Tiny QEMU guests for the tests of running-VM sources and instant recovery: Debian's cloud
kernel and a busybox initramfs whose /init is the test's own script.

The kernel comes from the Debian archive (``apt-get download``, unpacked with ``dpkg -x``,
never installed), once per test session (the ``guest_kernel`` fixture); each test makes its
small initramfs from it. The guest runs under TCG, which boots it in seconds where nested
KVM does not boot at all (/work/shared/qemu-notes.md)."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

KERNEL_META_PACKAGE = "linux-image-cloud-amd64"
# The modules a virtio disk needs; their own dependencies are read from each module.
DISK_MODULES = ("virtio_pci", "virtio_blk")
# ... and a virtio-serial port, the channel of qemu-guest-agent.
AGENT_MODULES = ("virtio_console",)
GUEST_TIMEOUT_S = 300.0  # TCG on a loaded machine; the guest itself boots in seconds

# What every /init starts with: busybox's applets, the kernel's filesystems, the modules,
# then a wait for the disk.
INIT_PREAMBLE = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for module in $(cat /modules); do insmod /lib/$module.ko; done
tries=0
while [ ! -b /dev/vda ] && [ $tries -lt 300 ]; do sleep 0.1; tries=$((tries + 1)); done
"""


@dataclass(frozen=True)
class GuestKernel:
    """Debian's cloud kernel unpacked: the image to boot and the modules to pick from."""
    vmlinuz: Path
    modules: Path


def require_programs(*pairs: tuple[str, str]) -> None:
    """Skip, naming the Debian package, when one of the (program, package) is missing."""
    for program, package in pairs:
        if shutil.which(program) is None:
            pytest.skip(f"{program} is not installed (apt-get install {package})")


def unpack_kernel(folder: Path) -> GuestKernel:
    require_programs(("dpkg", "dpkg"), ("apt-get", "apt"))
    unpacked = folder / "kernel"
    subprocess.run(["dpkg", "-x", str(_download_kernel_package(folder)), str(unpacked)],
                   check=True)
    [vmlinuz] = (unpacked / "boot").glob("vmlinuz-*")
    return GuestKernel(vmlinuz, unpacked / "lib" / "modules")


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


def build_initramfs(kernel: GuestKernel, folder: Path, init_body: str,
                    modules: tuple[str, ...] = DISK_MODULES,
                    programs: tuple[Path, ...] = ()) -> Path:
    """An initramfs in ``folder`` whose /init is INIT_PREAMBLE then ``init_body``; each of
    ``programs`` is copied in at its own path with the shared libraries it links (ldd)."""
    require_programs(("busybox", "busybox-static"), ("cpio", "cpio"))
    root = folder / "initramfs"
    for sub in ("bin", "lib", "proc", "sys", "dev", "tmp", "var/run"):
        (root / sub).mkdir(parents=True)
    shutil.copy(shutil.which("busybox"), root / "bin" / "busybox")
    chosen = _module_order(kernel.modules, modules)
    for module in chosen:
        shutil.copy(module, root / "lib" / module.name)
    (root / "modules").write_text(" ".join(m.name.removesuffix(".ko") for m in chosen))
    for program in programs:
        for path in (program, *_linked_libraries(program)):
            inside = root / path.relative_to("/")
            inside.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, inside)
    (root / "init").write_text(INIT_PREAMBLE + init_body)
    (root / "init").chmod(0o755)
    initramfs = folder / "initramfs.cpio"
    names = subprocess.run(["find", "."], cwd=root, capture_output=True, check=True).stdout
    with open(initramfs, "wb") as out:
        subprocess.run(["cpio", "--quiet", "-o", "-H", "newc"], cwd=root, input=names,
                       stdout=out, check=True)
    return initramfs


def _linked_libraries(program: Path) -> list[Path]:
    listing = subprocess.run(["ldd", str(program)], capture_output=True, text=True,
                             check=True).stdout
    return [Path(found) for found in re.findall(r"(/\S+) \(0x", listing)]


def boot_command(kernel: GuestKernel, initramfs: Path, disk: Path, console: Path,
                 disk_format: str = "qcow2") -> list[str]:
    """QEMU under TCG, the disk a virtio-blk device (drive id ``disk0``), the serial console
    into a file; the guest powers off when its /init is done (and a panic ends QEMU too)."""
    return ["qemu-system-x86_64", "-machine", "pc,accel=tcg", "-m", "256", "-nodefaults",
            "-display", "none", "-no-reboot", "-kernel", str(kernel.vmlinuz),
            "-initrd", str(initramfs), "-append", "console=ttyS0 panic=-1 quiet",
            "-serial", f"file:{console}",
            "-drive", f"file={disk},format={disk_format},if=none,id=disk0",
            "-device", "virtio-blk-pci,drive=disk0"]
