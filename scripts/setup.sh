#!/usr/bin/env bash
# Installs what diskvault needs on a fresh Debian machine, then diskvault itself.
#   scripts/setup.sh          the tool: system packages, a virtual environment of its own
#                             (/opt/diskvault as root, ~/.local/share/diskvault otherwise) and
#                             the `diskvault` command linked onto every user's PATH
#   scripts/setup.sh --tests  also the test tools, and .venv/ in this checkout: an editable
#                             install with the test dependencies (what .ci/run uses)
# Debian's python3 is "externally managed" (PEP 668): nothing is installed into it.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# python3-venv: virtual environments on Debian; e2fsprogs: mkfs.ext4/debugfs for the demo;
# fuse3: the read-only mount (fusermount3, and libfuse 3 for mfusepy: fuse3 depends on it,
# as libfuse3-3 on Debian 12 and libfuse3-4 on Debian 13, so it is not named here);
# qemu-utils (qemu-nbd, qemu-img): qcow2, vmdk, vhdx and vdi read as disks and written by
# restore --format; python3-libnbd: NBD exports, read by a helper run with Debian's python3
# (the binding is not on PyPI; docs/vm-sources.md).
packages=(python3 python3-venv e2fsprogs fuse3 qemu-utils python3-libnbd)
tests=false
if [ "${1:-}" = "--tests" ]; then
  tests=true
  # util-linux/mount: losetup and mount; fdisk/gdisk: partition tables; the others build
  # FAT, exFAT, NTFS, XFS, btrfs and LVM images for the filesystem-browsing tests; ceph-*,
  # radosgw: the throwaway Ceph the object-store tests start (tests/ceph.py); libfaketime:
  # a lock taker whose clock is wrong (tests/store/coordination/test_lock_leases.py); systemd:
  # systemd-analyze verify for the units `schedule` writes; chromium: the headless browser
  # that renders `report --html`.
  packages+=(util-linux mount passwd fdisk gdisk dosfstools mtools exfatprogs exfat-fuse
             ntfs-3g xfsprogs btrfs-progs lvm2
             ceph-mon ceph-osd radosgw ceph-common curl uuid-runtime libfaketime systemd
             chromium)
fi
if command -v apt-get >/dev/null; then
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends \
    "${packages[@]}" >/dev/null
fi

# The system's own interpreter, so that every user can run the installed command.
python=/usr/bin/python3
[ -x "$python" ] || python=python3
pip_quiet=(--quiet --disable-pip-version-check)

new_venv() {  # new_venv FOLDER: a virtual environment with a current pip
  "$python" -m venv "$1"
  "$1/bin/python" -m pip install "${pip_quiet[@]}" --upgrade pip
}

if $tests; then
  [ -x .venv/bin/python ] || new_venv .venv
  .venv/bin/python -m pip install "${pip_quiet[@]}" -e ".[test]"
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
  home=/opt/diskvault bin=/usr/local/bin
else
  home="${XDG_DATA_HOME:-$HOME/.local/share}/diskvault" bin="$HOME/.local/bin"
fi
[ -x "$home/bin/python" ] || new_venv "$home"
# A copy, not an editable install: moving or deleting this checkout leaves it working.
# With boto3 (the s3 extra), so that s3:// repositories work; it is loaded only for them.
"$home/bin/python" -m pip install "${pip_quiet[@]}" --upgrade --force-reinstall --no-deps .
"$home/bin/python" -m pip install "${pip_quiet[@]}" ".[s3]"
mkdir -p "$bin"
ln -sfn "$home/bin/diskvault" "$bin/diskvault"
echo "diskvault installed in $home; command: $bin/diskvault" >&2
