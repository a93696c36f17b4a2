#!/usr/bin/env bash
# What the VM tests need on a fresh Debian machine, installed as root when missing (idempotent):
# qemu (TCG), a static busybox for the guest, cpio/xz/kmod to build its initramfs, tgtd. The guest's
# kernel package is downloaded, not installed, by test/vm/guest-image.ts on first use.
set -euo pipefail
missing=()
command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
dpkg -s busybox-static >/dev/null 2>&1 || missing+=(busybox-static)  # static: the guest's whole userland
command -v cpio >/dev/null || missing+=(cpio)
command -v tgtd >/dev/null || missing+=(tgt)  # the host-side iSCSI target of the two-guest test
command -v xz >/dev/null || missing+=(xz-utils)
[ -x /sbin/depmod ] || missing+=(kmod)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing for the VM tests: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # tgt's package would start a system tgtd; the tests run their own.
  if [ ! -e /usr/sbin/policy-rc.d ]; then printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; trap 'rm -f /usr/sbin/policy-rc.d' EXIT; fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
