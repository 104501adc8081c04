#!/usr/bin/env bash
# Installs what diskvault needs on a fresh Debian machine, then diskvault itself.
#   scripts/setup.sh          the tool (system packages + pip install .)
#   scripts/setup.sh --tests  also the test dependencies and the tools tests build images with
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# e2fsprogs: mkfs.ext4/debugfs for the demo; fuse3 + libfuse2: the read-only mount.
packages=(e2fsprogs fuse3 libfuse2)
extra=""
if [ "${1:-}" = "--tests" ]; then
  # util-linux/mount: losetup and mount; fdisk/gdisk: partition tables; the others build
  # FAT, exFAT, NTFS, XFS, btrfs and LVM images for the filesystem-browsing tests.
  packages+=(util-linux mount fdisk gdisk dosfstools mtools exfatprogs exfat-fuse ntfs-3g
             xfsprogs btrfs-progs lvm2)
  extra="[test]"
fi
if command -v apt-get >/dev/null; then
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends \
    "${packages[@]}" >/dev/null
fi
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -e ".${extra}"
