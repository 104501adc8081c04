#!/usr/bin/env bash
# Installs what diskvault needs on a fresh Debian machine, then diskvault itself, as root or
# as any user (sudo is asked for only when a Debian package is missing).
#   scripts/setup.sh          the tool: system packages, a virtual environment of its own
#                             (/opt/diskvault as root, ~/.local/share/diskvault otherwise), the
#                             `diskvault` command (/usr/local/bin as root, else ~/.local/bin),
#                             its man pages and its bash, zsh and fish completions
#   scripts/setup.sh --tests  also the test tools, and .venv/ in this checkout: an editable
#                             install with the test dependencies (what .ci/run uses)
# Debian's python3 is "externally managed" (PEP 668): nothing is installed into it.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "setup: $*" >&2; }

# python3-venv: virtual environments on Debian; e2fsprogs: mkfs.ext4/debugfs for the demo;
# fuse3: the read-only mount (fusermount3, and libfuse 3 for mfusepy: fuse3 depends on it,
# as libfuse3-3 on Debian 12 and libfuse3-4 on Debian 13, so it is not named here);
# nbdkit, nbdkit-plugin-python: the NBD server of `serve`; qemu-utils (qemu-nbd, qemu-img):
# qcow2, vmdk, vhdx and vdi read as disks and written by restore --format; python3-libnbd: NBD
# exports, read by a helper run with Debian's python3 (the binding is not on PyPI;
# docs/vm-sources.md).
packages=(python3 python3-venv e2fsprogs fuse3 nbdkit nbdkit-plugin-python qemu-utils
          python3-libnbd)
tests=false
if [ "${1:-}" = "--tests" ]; then
  tests=true
  # util-linux/mount: losetup and mount; fdisk/gdisk: partition tables; the others build
  # FAT, exFAT, NTFS, XFS, btrfs and LVM images for the filesystem-browsing tests; ceph-*,
  # radosgw: the throwaway Ceph the object-store tests start (tests/ceph.py); libfaketime:
  # a lock taker whose clock is wrong (tests/store/coordination/test_lock_leases.py); systemd:
  # systemd-analyze verify for the units `schedule` writes; chromium: the headless browser
  # that renders `report --html`; zsh, fish: the completion scripts are syntax-checked;
  # groff-base: the man pages are rendered; libnbd-bin, qemu-utils: the NBD clients (nbdinfo,
  # nbdcopy, qemu-img, qemu-io) that read `serve`'s export; qemu-system-x86, busybox-static,
  # cpio: the tiny guests (tests/guests.py) booted from it and backed up while running;
  # qemu-guest-agent: the agent copied into the running guest, for the freeze; openssh-server:
  # the private sshd of the ssh:// tests (tests/sshd.py); qemu-system-common:
  # qemu-storage-daemon, QEMU's block layer with a QMP monitor, for the dirty-bitmap tests
  # (tests/sources/test_dirty_bitmaps.py, test_bitmap_rotation.py).
  packages+=(util-linux mount passwd fdisk gdisk dosfstools mtools exfatprogs exfat-fuse
             ntfs-3g xfsprogs btrfs-progs lvm2
             ceph-mon ceph-osd radosgw ceph-common curl uuid-runtime libfaketime systemd
             chromium zsh fish groff-base libnbd-bin qemu-utils qemu-system-x86
             qemu-system-common busybox-static cpio qemu-guest-agent openssh-server
             openssh-client)
fi

# Only what is missing is installed, so a user without sudo rights goes on when the
# administrator has installed the packages already.
missing=()
if command -v dpkg-query >/dev/null; then
  for package in "${packages[@]}"; do
    dpkg-query -W -f='${db:Status-Status}' "$package" 2>/dev/null | grep -qx installed \
      || missing+=("$package")
  done
fi
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    as_root=()
  elif command -v sudo >/dev/null && { sudo -n true 2>/dev/null || [ -t 0 ]; }; then
    as_root=(sudo)
  else
    say "these Debian packages are missing: ${missing[*]}"
    say "ask an administrator to run: apt-get install ${missing[*]}  (then run this again)"
    exit 1
  fi
  say "installing ${missing[*]}"
  "${as_root[@]}" apt-get update -qq
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    --no-install-recommends "${missing[@]}" >/dev/null  # env: sudo drops the variable
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

# Where each part goes: for everyone as root, in the user's own folders otherwise (the
# places bash-completion, zsh, fish and man look in by themselves).
if [ "$(id -u)" -eq 0 ]; then
  data=/usr/local/share
  home=/opt/diskvault bin=/usr/local/bin man="$data/man"
  bash_dir="$data/bash-completion/completions" zsh_dir="$data/zsh/site-functions"
  fish_dir="$data/fish/vendor_completions.d"
else
  data="${XDG_DATA_HOME:-$HOME/.local/share}"
  home="$data/diskvault" bin="$HOME/.local/bin" man="$data/man"
  bash_dir="$data/bash-completion/completions" zsh_dir="$data/zsh/site-functions"
  fish_dir="${XDG_CONFIG_HOME:-$HOME/.config}/fish/completions"
fi
[ -x "$home/bin/python" ] || new_venv "$home"
# A copy, not an editable install: moving or deleting this checkout leaves it working.
# With botocore (the s3 extra), so that s3:// repositories work; it is loaded only for them.
"$home/bin/python" -m pip install "${pip_quiet[@]}" --upgrade --force-reinstall --no-deps .
"$home/bin/python" -m pip install "${pip_quiet[@]}" ".[s3]"
mkdir -p "$bin"
ln -sfn "$home/bin/diskvault" "$bin/diskvault"

# Man pages and completions are made by the installed command from its own options.
mkdir -p "$man/man1" "$bash_dir" "$zsh_dir" "$fish_dir"
"$home/bin/python" -m diskvault.cli.shell.manpages "$man/man1"
"$home/bin/diskvault" completion bash > "$bash_dir/diskvault"
"$home/bin/diskvault" completion zsh > "$zsh_dir/_diskvault"
"$home/bin/diskvault" completion fish > "$fish_dir/diskvault.fish"

say "diskvault installed in $home; the command is $bin/diskvault"
case ":$PATH:" in
  *":$bin:"*) ;;
  *) say "$bin is not on your PATH yet: run $bin/diskvault by its full path, or add" \
         "'export PATH=\"$bin:\$PATH\"' to ~/.profile (Debian's adds ~/.local/bin at the" \
         "next login by itself)" ;;
esac
