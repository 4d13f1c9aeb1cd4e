#!/bin/bash
# Runs inside a xenlab dom0 from the read-only share /mnt/host (run.sh copies
# it there as kemari-lab.sh): the xen build of xl-kemari and the libxl/xen
# integration tests against PV guests made from the lab's guest image.
#
#   kemari-lab.sh version          xl-kemari version, ldd
#   kemari-lab.sh test [REGEX]     /mnt/host/xen.test -test.run REGEX
#   kemari-lab.sh engine [REGEX]   /mnt/host/kemari-engine.test -test.run REGEX
#   kemari-lab.sh disk             kemari-disk.sh (disk.sh: the NBD disk front)
set -u
cfg=/run/xenlab/hvtest.cfg
mkdir -p /run/xenlab
# The lab guest (lab/domu.sh) without its shared disk, so that several can
# run at once; the tests give each a name of its own.
cat >"$cfg" <<CFG
kernel = "/var/lib/xenlab/vmlinuz"
ramdisk = "/var/lib/xenlab/domu-initrd.gz"
extra = "console=hvc0 rdinit=/init quiet xenlab.dirty_mb=8"
memory = 192
vcpus = 1
on_crash = "preserve"
vif = [ "bridge=xenbr0" ]
CFG
# The same guest as a PVH domain: the same kernel and initrd, booted
# directly (no device model, no bootloader).
pvhcfg=/run/xenlab/hvtest-pvh.cfg
{ echo 'type = "pvh"'; cat "$cfg"; } >"$pvhcfg"
case ${1:-} in
version)
	/mnt/host/xl-kemari version
	rc=$?
	ldd /mnt/host/xl-kemari | grep -E 'xen|not found'
	exit $rc
	;;
test)
	cd /tmp || exit 1
	# TestContract's guests: the same, at 96 MB (the kernel needs about
	# 75): the suite streams their whole memory a dozen times.
	sed 's/^memory = .*/memory = 96/' "$cfg" >/run/xenlab/hvtest-contract.cfg
	# A replica test holds a guest's worth several times over (capture,
	# copies, the replica's pages) in a 1 GB dom0.
	sed 's/^memory = .*/memory = 96/' "$pvhcfg" >/run/xenlab/hvtest-pvh-contract.cfg
	GOMEMLIMIT=${GOMEMLIMIT:-640MiB} KEMARI_XEN_CFG=$cfg KEMARI_XEN_CONTRACT_CFG=/run/xenlab/hvtest-contract.cfg \
		KEMARI_XEN_PVH_CFG=/run/xenlab/hvtest-pvh-contract.cfg \
		/mnt/host/xen.test -test.v -test.timeout 30m -test.run "${2:-.}" 2>&1
	rc=$?
	xl list
	exit $rc
	;;
engine)
	cd /tmp || exit 1
	# Primary capture and replica pages are a guest's worth each in one
	# process, in a 1 GB dom0: keep the Go heap from doubling them.
	GOMEMLIMIT=${GOMEMLIMIT:-640MiB} KEMARI_XEN_CFG=$cfg KEMARI_XEN_PVH_CFG=$pvhcfg KEMARI_E2E_LOGS=/mnt/out /mnt/host/kemari-engine.test -test.v -test.timeout 30m -test.run "${2:-.}" 2>&1
	rc=$?
	xl list
	exit $rc
	;;
disk)
	# The NBD disk front: block-kemari, a front restart, start's lease,
	# failover to a standby on this host, fsck of its copy (disk.sh).
	GOMEMLIMIT=${GOMEMLIMIT:-640MiB} /mnt/host/kemari-disk.sh
	rc=$?
	xl list
	exit $rc
	;;
*)
	echo "usage: kemari-lab.sh version|test|engine|disk [REGEX]" >&2
	exit 2
	;;
esac
