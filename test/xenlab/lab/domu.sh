#!/bin/bash
# Guest control in a xenlab dom0 (shared read-only at /mnt/lab).
#
#   domu.sh start [DIRTY_MB] [DISK]  create the PV guest, wait until its
#                                    service answers; prints its status line
#   domu.sh prepare [DISK]           create the guest's disk file only (the
#                                    backup host of a two-host run needs it)
#   domu.sh query                    one status line from the guest's port 7
#   domu.sh wait TIMEOUT             wait until the service answers
#   domu.sh stop                     destroy domu and any domu--incoming
#
# DISK=1 gives the guest /dev/xvda backed by a file in dom0; the disk
# hotplug script skips the sharing check so the localhost backup (same dom0,
# same file) can attach it too.
set -u
. /mnt/lab/common.sh

cmd=${1:-}
shift || true
case $cmd in
prepare)
	disk_file
	;;
start)
	dirty=${1:-8}
	disk=${2:-1}
	if ! xl domid domu >/dev/null 2>&1; then
		cfg=/run/xenlab/domu.cfg
		mkdir -p /run/xenlab
		cat >"$cfg" <<EOF
name = "domu"
kernel = "/var/lib/xenlab/vmlinuz"
ramdisk = "/var/lib/xenlab/domu-initrd.gz"
extra = "console=hvc0 rdinit=/init quiet xenlab.dirty_mb=$dirty"
memory = 192
vcpus = 1
on_crash = "preserve"
vif = [ "bridge=xenbr0,mac=00:16:3e:00:00:64" ]
EOF
		if [ "$disk" = 1 ]; then
			disk_file
			echo "disk = [ \"format=raw,vdev=xvda,access=rw,script=/mnt/lab/block-shared,target=$DISK_FILE\" ]" >>"$cfg"
		fi
		t0=$(now_ms)
		xl create -q "$cfg" || exit 1
		wait_service 180 || {
			echo "domu: service did not answer within 180 s" >&2
			xl list >&2
			exit 1
		}
		echo "created_ms=$(($(now_ms) - t0))"
	fi
	query
	;;
query)
	query
	;;
wait)
	wait_service "${1:-120}"
	;;
stop)
	for d in domu domu--incoming; do
		while id=$(xl domid "$d" 2>/dev/null); do xl destroy "$id"; done
	done
	;;
*)
	echo "usage: domu.sh start|prepare|query|wait|stop" >&2
	exit 2
	;;
esac
