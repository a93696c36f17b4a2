#!/bin/busybox sh
# /init of the test guest: modules, the host's root over 9p (read-only), a target per the
# kernel command line (tko.setup: a comma list of tcm_loop, scsi_debug; or none), then the job: `chroot /host` and
# run the command in tko.job (a file on the host). Lines the job prints starting with "TKO "
# are its results; "TKO-EXIT n" ends the run. Then power off.
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
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144 hostroot /host || echo "TKO-LOG 9p mount failed"

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
# Device nodes appear asynchronously once the hosts are scanned.
i=0; while [ $i -lt 50 ] && [ "$SETUP" != none ] && [ ! -e /dev/sg0 ]; do sleep 0.1; i=$((i+1)); done
sleep 0.3

for d in proc sys dev; do mount --bind /$d /host/$d; done
mount -t tmpfs tmpfs /host/tmp
if [ -n "$JOB" ]; then
  chroot /host /bin/sh "$JOB"
  echo "TKO-EXIT $?"
else
  echo "TKO-EXIT 127"
fi
sync
poweroff -f
