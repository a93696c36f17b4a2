#!/bin/busybox sh
# /init of the test guest: modules, the host's root over 9p (read-only), targets per the
# kernel command line (tko.setup: a comma list of tcm_loop, lio_iscsi, scsi_debug, iscsi, net;
# or none), the virtio disks in tko.disks mounted, then the job: `chroot /host` and run the
# command in tko.job (a file on the host). Lines the job prints starting with "TKO " are its
# results; "TKO-EXIT n" ends the run. Then power off.
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
ip link set lo up
for m in virtio_pci 9pnet_virtio 9p sg sd_mod; do modprobe $m || echo "TKO-LOG modprobe $m failed"; done
arg() { sed -n "s/.*$1=\([^ ]*\).*/\1/p" /proc/cmdline; }
SETUP=$(arg tko.setup)
JOB=$(arg tko.job)

mkdir -p /host
# tko.hostcache=loose: the guest caches the host's files (no revalidation: right for a share
# nothing changes during the run). Node then starts in ~4 s instead of ~15 under a loaded host:
# without a cache every page of its binary is a 9p round trip through the emulated CPU.
HOSTCACHE=$(arg tko.hostcache)
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144${HOSTCACHE:+,cache=$HOSTCACHE} hostroot /host || echo "TKO-LOG 9p mount failed"

case ",$SETUP," in *,tcm_loop,*)
  # LIO writes persistent-reservation state (APTPL files) under its db_root, /etc/target.
  mkdir -p /etc/target/pr
  modprobe target_core_file && modprobe tcm_loop || echo "TKO-LOG tcm_loop modules failed"
  mount -t configfs none /sys/kernel/config 2>/dev/null
  mkdir -p /scratch && mount -t tmpfs -o size=80m tmpfs /scratch
  C=/sys/kernel/config/target
  mkdir -p $C/core/fileio_0/disk0
  echo "fd_dev_name=/scratch/disk0,fd_dev_size=33554432" > $C/core/fileio_0/disk0/control
  echo tko-disk0 > $C/core/fileio_0/disk0/wwn/vpd_unit_serial
  echo 1 > $C/core/fileio_0/disk0/enable
  # One LUN seen through two I_T nexuses: two "nodes". The nexus must exist before the LUN.
  for n in 1 2; do
    T=$C/loopback/naa.5001405000000a0$n/tpgt_1
    mkdir -p $T
    echo naa.5001405000000b0$n > $T/nexus
    mkdir -p $T/lun/lun_0
    ln -s $C/core/fileio_0/disk0 $T/lun/lun_0/disk0
  done
  i=0; while [ $i -lt 50 ] && [ ! -e /dev/sg1 ]; do sleep 0.1; i=$((i+1)); done ;;
esac
case ",$SETUP," in *,scsi_debug,*)
  modprobe scsi_debug dev_size_mb=8 || echo "TKO-LOG scsi_debug failed" ;;
esac

for d in proc sys dev; do mount --rbind /$d /host/$d; done
# The job runs in the checkout it came from (tko.checkout); one under /tmp or /run would be
# hidden by the guest's own, so it is bound there again.
CHECKOUT=$(arg tko.checkout)
mkdir -p /checkout && mount --bind /host$CHECKOUT /checkout || echo "TKO-LOG checkout $CHECKOUT not found"
mount -t tmpfs tmpfs /host/tmp
mount -t tmpfs tmpfs /host/run
[ -d /host$CHECKOUT ] || { mkdir -p /host$CHECKOUT && mount --bind /checkout /host$CHECKOUT; }
# Virtio disks (tko.disks=vda,vdb...), each an ext4 file system (made on the host), mounted
# at /tmp/vdX in the job's chroot with the kernel's defaults (data=ordered, barriers on: the
# fdatasync of a file sends the device a FLUSH).
DISKS=$(arg tko.disks)
if [ -n "$DISKS" ]; then
  modprobe virtio_blk && modprobe crc32c_generic && modprobe ext4 || echo "TKO-LOG disk modules failed"
  for d in $(echo $DISKS | tr , ' '); do
    i=0; while [ $i -lt 50 ] && [ ! -e /dev/$d ]; do sleep 0.1; i=$((i+1)); done
    mkdir -p /host/tmp/$d && mount -t ext4 /dev/$d /host/tmp/$d || echo "TKO-LOG mount $d failed"
  done
fi

# The kernel iSCSI initiator logs in with iscsistart, a host binary (open-iscsi unpacked under
# tko.iscsistart), run in the chroot. One session per call: iscsistart refuses a second session
# to the same target and portal, so a second node needs a second portal.
login() { # TARGET INITIATOR ADDRESS PORT
  chroot /host env LD_LIBRARY_PATH=$OI/usr/lib/x86_64-linux-gnu $OI/sbin/iscsistart -i $2 -t $1 -g 1 -a $3 -p $4 \
    || echo "TKO-LOG iscsistart $2 -> $1 at $3:$4 failed"
}
OI=$(arg tko.iscsistart)
case ",$SETUP," in *,lio_iscsi,*)
  # LIO's iSCSI fabric on the tcm_loop setup's backstore: the same LUN through two iSCSI I_T
  # nexuses (initiators ...:a and ...:b, via 127.0.0.1 and 127.0.0.2). Unlike tcm_loop, this
  # fabric completes PREEMPT AND ABORT.
  modprobe crc32c_generic && modprobe iscsi_target_mod && modprobe iscsi_tcp || echo "TKO-LOG lio_iscsi modules failed"
  T=$C/iscsi/iqn.2026-11.io.takeover:lio/tpgt_1
  mkdir -p $T/lun/lun_0 && ln -s $C/core/fileio_0/disk0 $T/lun/lun_0/disk0
  mkdir $T/np/127.0.0.1:3260 $T/np/127.0.0.2:3260
  # Demo mode: any initiator, no CHAP, writable.
  echo 0 > $T/attrib/authentication; echo 1 > $T/attrib/generate_node_acls; echo 0 > $T/attrib/demo_mode_write_protect
  echo 1 > $T/enable
  # Both logins at once (each its own portal and session): one after the other took ~1.5 s
  # more of the emulated CPU. Then until both sessions' LUNs have their sg nodes.
  login iqn.2026-11.io.takeover:lio iqn.2026-11.io.takeover:a 127.0.0.1 3260 &
  login iqn.2026-11.io.takeover:lio iqn.2026-11.io.takeover:b 127.0.0.2 3260 &
  wait
  i=0; while [ $i -lt 50 ] && [ "$(ls -d /sys/class/iscsi_session/session*/device/target*/*/scsi_generic/sg* 2>/dev/null | wc -l)" -lt 2 ]; do sleep 0.1; i=$((i+1)); done ;;
esac
case ",$SETUP," in *,iscsi,*|*,net,*)
  # qemu's user network: guestfwds map 10.0.2.100:PORT to the host's loopback, hostfwds the
  # host's loopback to this guest (10.0.2.15); nothing else is routed.
  modprobe virtio_net || echo "TKO-LOG virtio_net failed"
  ip addr add 10.0.2.15/24 dev eth0 && ip link set eth0 up ;;
esac
case ",$SETUP," in *,iscsi,*)
  # The host's tgtd (tko.iscsi=TARGET,INITIATOR[,INITIATOR...]): guestfwds map
  # 10.0.2.100:(3260+i) to the host's portals.
  modprobe crc32c_generic && modprobe iscsi_tcp || echo "TKO-LOG iscsi modules failed"
  ISCSI=$(arg tko.iscsi)
  TGT=${ISCSI%%,*}; n=0
  for INI in $(echo ${ISCSI#*,} | tr , ' '); do login $TGT $INI 10.0.2.100 $((3260 + n)); n=$((n+1)); done
  # Each session brings LUN 0 (tgtd's controller) and LUN 1 (the disk).
  last=/dev/sg$((n * 2 - 1))
  i=0; while [ $i -lt 50 ] && [ ! -e $last ]; do sleep 0.1; i=$((i+1)); done ;;
esac
# SCSI device nodes appear asynchronously once the hosts are scanned.
case ",$SETUP," in *,tcm_loop,*|*,lio_iscsi,*|*,scsi_debug,*|*,iscsi,*)
  i=0; while [ $i -lt 50 ] && [ ! -e /dev/sg0 ]; do sleep 0.1; i=$((i+1)); done ;;
esac
sleep 0.3
if [ -n "$JOB" ]; then
  chroot /host /bin/sh "$JOB"
  echo "TKO-EXIT $?"
else
  echo "TKO-EXIT 127"
fi
sync
poweroff -f
