"""A bootable Debian disk image for the boot benchmark, built once and cached.

    python -m benchmarks.boot_image [--cache DIR]

debootstrap (minbase, plus Debian's cloud kernel) into a folder, a tiny init script that prints
a marker and ends the guest, then ``mkfs.ext4 -d`` makes the folder a raw ext4 image (no
loop mount). The kernel and initrd are copied out beside it, for QEMU's -kernel/-initrd. Needs
root, debootstrap and the network (the Debian mirror apt uses). The result is kept in
``~/.cache/diskvault-bench/boot-<hash of the init script>`` (or --cache), so later runs
start at once.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

SUITE = "bookworm"
IMAGE_BYTES = 2 << 30
MARKER = "DISKVAULT-BENCH-INIT-REACHED"
DONE = "DISKVAULT-BENCH-DONE"
INIT_PATH = "sbin/diskvault-bench-init"
# The guest's init: the marker as soon as the kernel hands over to it, then a little of what a
# booting system reads (a shell, the package database, a tree of files), then it powers off.
INIT = f"""#!/bin/sh
echo {MARKER}
mount -t proc proc /proc
cat /var/lib/dpkg/status > /dev/null
ls -R /usr/lib > /dev/null
echo {DONE}
echo o > /proc/sysrq-trigger
exec sleep 60
"""
DEFAULT_CACHE = (Path.home() / ".cache" / "diskvault-bench"
                 / f"boot-{hashlib.sha256(INIT.encode()).hexdigest()[:8]}")


@dataclass(frozen=True)
class BootImage:
    image: Path
    kernel: Path
    initrd: Path


def mirror_url() -> str:
    """The Debian mirror apt is configured with (deb822 sources or a one-line list)."""
    sources = sorted(Path("/etc/apt").glob("sources.list.d/*")) + [Path("/etc/apt/sources.list")]
    for path in sources:
        if path.is_file():
            found = re.search(r"(?:URIs:|deb)\s+(https?://\S+/debian)\b", path.read_text())
            if found:
                return found.group(1)
    return "http://deb.debian.org/debian"


def cached(cache: Path) -> BootImage | None:
    boot = BootImage(cache / "debian.img", cache / "vmlinuz", cache / "initrd.img")
    return boot if all(path.exists() for path in (boot.image, boot.kernel, boot.initrd)) else None


def build(cache: Path = DEFAULT_CACHE) -> BootImage:
    """The cached image, or a new one built now (several minutes)."""
    found = cached(cache)
    if found is not None:
        return found
    if shutil.which("debootstrap") is None or shutil.which("mkfs.ext4") is None:
        raise SystemExit("boot benchmark needs debootstrap and e2fsprogs (apt-get install "
                         "debootstrap e2fsprogs)")
    cache.mkdir(parents=True, exist_ok=True)
    root = cache / "root"
    shutil.rmtree(root, ignore_errors=True)
    subprocess.run(["debootstrap", "--variant=minbase", "--include=linux-image-cloud-amd64",
                    SUITE, str(root), mirror_url()], check=True)
    init = root / INIT_PATH
    init.write_text(INIT)
    init.chmod(0o755)
    (root / "etc" / "fstab").write_text("/dev/vda / ext4 rw 0 1\n")
    [kernel] = sorted((root / "boot").glob("vmlinuz-*"))
    [initrd] = sorted((root / "boot").glob("initrd.img-*"))
    partial = cache / "debian.img.partial"
    partial.unlink(missing_ok=True)
    subprocess.run(["mkfs.ext4", "-q", "-L", "root", "-d", str(root), str(partial),
                    str(IMAGE_BYTES // 1024)], check=True)
    shutil.copyfile(kernel, cache / "vmlinuz")
    shutil.copyfile(initrd, cache / "initrd.img")
    partial.rename(cache / "debian.img")
    shutil.rmtree(root)
    return cached(cache)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    print(build(parser.parse_args().cache))


if __name__ == "__main__":
    main()
