#!/bin/bash
# disk.sh: the NBD disk front on real Xen, in one lab dom0 (run.sh copies
# it to the share as kemari-disk.sh; dom0.sh runs it for "disk").
#
#   A. A PV guest whose second disk (xvdb, ext4 made in dom0) is served
#      through block-kemari: the hotplug script starts `xl-kemari disk
#      serve`, which attaches /dev/nbdN over netlink and publishes it. The
#      guest mounts it and appends records, each synced (sync(1): busybox has no fsync applet) before the
#      guest counts it acknowledged. The front is SIGKILLed and restarted
#      under that load: the new front reattaches the same device, and the
#      guest logged no I/O error.
#   B. `xl-kemari start` protects the guest toward a standby on the same
#      host (`receive`, with a run and disk directory of its own, so its
#      replica's block-kemari serves the standby's copy): start leases the
#      front's device and serves it from the engine. A client reads the
#      guest's acknowledged count (released output, held by sch_plug);
#      start is SIGKILLed and the guest destroyed; the replica takes over
#      with the same boot, its count at least the last one a client saw.
#      The resumed guest unmounts; the standby's copy is e2fsck-clean and
#      holds every record up to that count.
#
# Prints PASS/FAIL lines; exits non-zero on any FAIL.
set -u
X=${KEMARI_BIN:-/mnt/host/xl-kemari}
BK=/mnt/host/block-kemari
w=/var/tmp/kemari-disk # not /run: a tmpfs of 10% of dom0
name=kdisk-$$
port=$((8500 + $$ % 400))
fails=0
pass() { echo "PASS: $*"; }
fail() {
	echo "FAIL: $*"
	fails=$((fails + 1))
}
note() { echo "--- $(date +%T) $*"; }
cleanup() {
	for p in ${kill_pids:-}; do kill -9 "$p" 2>/dev/null; done
	for d in $(xl list 2>/dev/null | awk -v n="$name" 'index($1, n) == 1 { print $1 }'); do xl destroy "$d" 2>/dev/null; done
	for r in p s; do
		KEMARI_RUN_DIR=$w/$r "$X" disk stop kdisk >/dev/null 2>&1
	done
	ip neigh del 192.0.2.100 dev xenbr0 2>/dev/null
}
trap cleanup EXIT

rm -rf "$w"
mkdir -p "$w/p" "$w/s" "$w/g"
chmod 0700 "$w/p" "$w/s" # control sockets: xl-kemari wants private run directories
modprobe nbd || {
	echo "FAIL: no nbd module"
	exit 1
}

# The lab guest's initramfs plus ext4 (Debian builds it as a module; the
# guest's init insmods /lib/modules/*.ko in name order, hence the
# prefixes).
note "guest initramfs with ext4"
kver=$(uname -r)
(cd "$w/g" && gzip -dc /var/lib/xenlab/domu-initrd.gz | cpio -id --quiet) || exit 1
if ! grep -q '/ext4.ko' "/lib/modules/$kver/modules.builtin"; then
	i=0
	for m in $(modprobe --show-depends ext4 | awk '$1 == "insmod" { print $2 }'); do
		i=$((i + 1))
		dst=$w/g/lib/modules/0$i-$(basename "${m%%.ko*}").ko
		case $m in
		*.xz) xz -dc "$m" >"$dst" ;;
		*.zst) zstd -qdc "$m" >"$dst" ;;
		*) cp "$m" "$dst" ;;
		esac
	done
fi
(cd "$w/g" && find . | cpio -o -H newc --quiet | gzip -1) >"$w/initrd.gz" || exit 1

truncate -s 64M "$w/p/kdisk"
mkfs.ext4 -q -F -L kdisk "$w/p/kdisk" || exit 1
cat >"$w/$name.cfg" <<CFG
name = "$name"
kernel = "/var/lib/xenlab/vmlinuz"
ramdisk = "$w/initrd.gz"
extra = "console=hvc0 rdinit=/init quiet xenlab.dirty_mb=4"
memory = 192
vcpus = 1
on_crash = "preserve"
vif = [ "bridge=xenbr0,mac=00:16:3e:00:00:64" ]
disk = [ "format=raw, vdev=xvdb, access=rw, script=$BK, target=kdisk" ]
CFG
export XL_KEMARI=$X KEMARI_LOG_DIR=$w
ip neigh replace 192.0.2.100 lladdr 00:16:3e:00:00:64 nud permanent dev xenbr0

note "xl create (block-kemari add starts the front)"
t0=$(date +%s)
KEMARI_RUN_DIR=$w/p KEMARI_DISK_DIR=$w/p xl create -q "$w/$name.cfg" || {
	fail "xl create"
	cat "$w"/disk-kdisk.log
	exit 1
}
echo "created in $(($(date +%s) - t0)) s"
st=$(KEMARI_RUN_DIR=$w/p "$X" disk status kdisk) || fail "disk status"
echo "front: $st"
dev=$(cat "$w/p/disk/kdisk")
domid=$(xl domid "$name")
pd=$(xenstore-read "/local/domain/0/backend/vbd/$domid/51728/physical-device-path" 2>/dev/null)
[ "$pd" = "$dev" ] && pass "block-kemari published $dev as physical-device-path" || fail "physical-device-path '$pd', front published '$dev'"

# gsh DOMID CMD: type CMD into the guest's console shell.
gsh() {
	tty=$(xenstore-read "/local/domain/$1/console/tty")
	printf '%s\n' "$2" >"$tty"
}
# ask: one line from the guest's port 8 (acked=N boot=B ioerr=E mnt=M).
ask() {
	local line=
	exec 3<>/dev/tcp/192.0.2.100/8 || return 1
	read -r -t 10 line <&3
	exec 3<&-
	echo "$line"
}
field() { echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }
await_ask() { # SECONDS: until the guest's port 8 answers
	local end=$(($(date +%s) + $1)) a
	while [ "$(date +%s)" -lt "$end" ]; do
		a=$(ask 2>/dev/null) && [ -n "$a" ] && {
			echo "$a"
			return 0
		}
		sleep 2
	done
	return 1
}

note "waiting for the guest"
end=$(($(date +%s) + 240))
until exec 3<>/dev/tcp/192.0.2.100/7 2>/dev/null; do
	[ "$(date +%s)" -lt "$end" ] || {
		fail "guest did not come up"
		exit 1
	}
	sleep 3
done
exec 3<&-
gsh "$domid" 'mkdir -p /mnt && mount -t ext4 /dev/xvdb /mnt && echo yes >/state/mnt; echo 0 >/state/acked'
gsh "$domid" 'printf "#!/bin/sh\necho acked=\$(cat /state/acked) boot=\$(cat /state/boot) ioerr=\$(dmesg | grep -c -i -e \"I/O error\" -e \"EXT4-fs error\") mnt=\$(cat /state/mnt)\n" >/state/svc8; chmod +x /state/svc8; nc -ll -p 8 -e /state/svc8 &'
gsh "$domid" '( n=0; while :; do n=$((n+1)); echo "rec $n" >>/mnt/log; sync && echo $n >/state/acked; done ) >/dev/null 2>&1 & echo $! >>/state/pids'
gsh "$domid" '( i=0; while :; do i=$((i+1)); dd if=/dev/urandom of=/mnt/f$((i%4)) bs=64k count=8 conv=fsync 2>/dev/null; done ) & echo $! >>/state/pids'
a=$(await_ask 120) || {
	fail "guest service on port 8"
	exit 1
}
echo "guest: $a"
[ "$(field "$a" mnt)" = yes ] && pass "the guest mounted ext4 on xvdb ($dev)" || fail "guest did not mount xvdb: $a"
sleep 5
a1=$(ask)
n1=$(field "$a1" acked)
echo "guest: $a1"
[ "${n1:-0}" -gt 0 ] && pass "the guest appends fsync'ed records through the front ($n1)" || fail "no acknowledged records: $a1"

note "A: SIGKILL the front under load, restart it"
fpid=$(field "$(KEMARI_RUN_DIR=$w/p "$X" disk status kdisk)" pid)
kill -9 "$fpid"
sleep 3
setsid env KEMARI_RUN_DIR=$w/p KEMARI_DISK_DIR=$w/p "$X" disk serve kdisk </dev/null >>"$w/disk-kdisk.log" 2>&1 &
for _ in $(seq 30); do KEMARI_RUN_DIR=$w/p "$X" disk status kdisk >/dev/null 2>&1 && break; sleep 1; done
st=$(KEMARI_RUN_DIR=$w/p "$X" disk status kdisk) || fail "restarted front"
echo "front: $st"
[ "/dev/nbd$(echo "$st" | sed -n 's|.* /dev/nbd\([0-9]*\) .*|\1|p')" = "$dev" ] && pass "the restarted front reattached $dev" || fail "restarted front serves another device: $st"
# Requests in flight when the front died are requeued at the kernel's
# request timeout (30 s).
end=$(($(date +%s) + 90))
while :; do
	a2=$(ask)
	n2=$(field "$a2" acked)
	[ "${n2:-0}" -gt "${n1:-0}" ] || [ "$(date +%s)" -ge "$end" ] && break
	sleep 3
done
echo "guest: $a2"
[ "${n2:-0}" -gt "${n1:-0}" ] && [ "$(field "$a2" ioerr)" = 0 ] && pass "guest writes went on across the front's restart ($n1 -> $n2), no I/O error in the guest" ||
	fail "after the front's restart: $a2 (before: $a1)"
grep -i -E 'reattach|error' "$w/disk-kdisk.log" | tail -5

[ "${KEMARI_DISK_STAGE:-B}" = A ] && exit $((fails > 0))

note "B: start toward a standby on this host"
KEMARI_RUN_DIR=$w/s KEMARI_DISK_DIR=$w/s setsid "$X" receive --hypervisor=xen --insecure-tcp --listen "127.0.0.1:$port" --stay \
	--interval=100ms --timeout=10s --events "$w/standby.jsonl" </dev/null >"$w/standby.log" 2>&1 &
kill_pids="$!"
sleep 2
KEMARI_RUN_DIR=$w/p setsid "$X" start -F --hypervisor=xen --transport=tcp --insecure-tcp --interval=100ms --timeout=10s \
	--netbuf=plug --events "$w/primary.jsonl" "$name" "127.0.0.1:$port" </dev/null >"$w/primary.log" 2>&1 &
ppid=$!
kill_pids="$kill_pids $ppid"
t0=$(date +%s)
until grep -q '"state":"protected"' "$w/primary.jsonl" 2>/dev/null; do
	if ! kill -0 "$ppid" 2>/dev/null || [ $(($(date +%s) - t0)) -gt 420 ]; then
		fail "start did not reach protected"
		tail -20 "$w/primary.log"
		tail -10 "$w/standby.log"
		exit 1
	fi
	sleep 3
done
pass "protected after $(($(date +%s) - t0)) s"
KEMARI_RUN_DIR=$w/p "$X" disk status kdisk
best=0
boot=
for _ in $(seq 8); do
	a=$(ask) || continue
	n=$(field "$a" acked)
	boot=$(field "$a" boot)
	[ "${n:-0}" -gt "$best" ] && best=$n
	echo "guest (released output): $a"
	sleep 2
done
[ "$best" -gt "${n2:-0}" ] && pass "protected guest writes on ($best acknowledged)" || fail "no progress while protected ($best)"

note "kill the primary"
kill -9 "$ppid"
KEMARI_RUN_DIR=$w/p xl destroy "$name"
t0=$(date +%s)
until grep -q '"kind":"activate"' "$w/standby.jsonl" 2>/dev/null; do
	[ $(($(date +%s) - t0)) -lt 240 ] || {
		fail "standby did not activate"
		tail -20 "$w/standby.log"
		exit 1
	}
	sleep 2
done
pass "standby activated after $(($(date +%s) - t0)) s"
a=$(await_ask 180) || {
	fail "the replica's service does not answer"
	tail -20 "$w/standby.log"
	exit 1
}
echo "replica: $a"
[ "$(field "$a" boot)" = "$boot" ] && pass "same boot ($boot)" || fail "replica boot $(field "$a" boot), primary's $boot"
rn=$(field "$a" acked)
[ "${rn:-0}" -ge "$best" ] && pass "replica's count $rn >= last released $best" || fail "replica's count $rn < last released $best"
[ "$(field "$a" ioerr)" = 0 ] && pass "no I/O error in the resumed guest" || fail "resumed guest: $a"

note "orderly unmount in the resumed guest, then fsck the standby's copy"
rid=$(xl domid "$name" 2>/dev/null || xl list | awk -v n="$name" 'index($1, n) == 1 { print $2; exit }')
gsh "$rid" 'kill $(cat /state/pids); sleep 2; sync; umount /mnt && echo no >/state/mnt'
sleep 8
a=$(ask)
echo "replica: $a"
last=$(field "$a" acked)
[ "$(field "$a" mnt)" = no ] || fail "the resumed guest did not unmount xvdb: $a"
KEMARI_RUN_DIR=$w/s xl destroy "$rid" # block-kemari remove stops the standby's front
sleep 3
KEMARI_RUN_DIR=$w/s "$X" disk status kdisk >/dev/null 2>&1 && fail "the standby's front outlived its domain (block-kemari remove)"
KEMARI_RUN_DIR=$w/s "$X" disk stop kdisk >/dev/null 2>&1
e2fsck -fn "$w/s/kdisk" >"$w/fsck.log" 2>&1 && pass "e2fsck -fn of the standby's copy is clean" || {
	fail "e2fsck -fn of the standby's copy"
	tail -20 "$w/fsck.log"
}
debugfs -R 'cat /log' "$w/s/kdisk" 2>/dev/null >"$w/log.txt"
missing=$(awk -v n="$best" '$1 == "rec" { seen[$2] = 1 } END { m = 0; for (i = 1; i <= n; i++) if (!(i in seen)) m++; print m }' "$w/log.txt")
[ "$missing" = 0 ] && pass "the standby's copy holds every record up to $best (log has $(wc -l <"$w/log.txt") records; resumed guest reached $last)" ||
	fail "$missing of the records up to $best missing from the standby's copy"
exit $((fails > 0))
