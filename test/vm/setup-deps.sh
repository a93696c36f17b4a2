#!/usr/bin/env bash
# What the VM tests need on a fresh Debian machine, installed as root when missing (idempotent):
# qemu (TCG), a static busybox for the guest, cpio/xz/kmod to build its initramfs. The guest's
# kernel package is downloaded, not installed, by test/vm/guest-image.ts on first use.
set -euo pipefail
missing=()
command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
dpkg -s busybox-static >/dev/null 2>&1 || missing+=(busybox-static)  # static: the guest's whole userland
command -v cpio >/dev/null || missing+=(cpio)
command -v xz >/dev/null || missing+=(xz-utils)
[ -x /sbin/depmod ] || missing+=(kmod)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing for the VM tests: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
