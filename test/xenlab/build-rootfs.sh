#!/bin/bash
# Layer 1: a Debian bookworm dom0 rootfs with Xen at exactly $XEN_VERSION.
#
# debootstrap only sees bookworm main, so Xen arrives there at the point
# release; the security suite is added afterwards and the Xen packages are
# pinned to the version the build machine's libxen-dev has (pitfall 10).
# Idempotent: prints the rootfs path and does nothing if it is complete.
. "$(dirname "$0")/lib.sh"

if [ -f "$ROOTFS/.xenlab-done" ]; then
	echo "$ROOTFS"
	exit 0
fi
command -v debootstrap >/dev/null || die "debootstrap missing: apt-get install debootstrap qemu-system-x86 qemu-utils"

tmp=$ROOTFS.tmp
chroot_umount "$tmp"
rm -rf "$tmp"
mkdir -p "$XENLAB_CACHE/debs" "$tmp"
trap 'chroot_umount "$tmp"' EXIT

log "debootstrap $SUITE from $MIRROR into $tmp"
t0=$SECONDS
debootstrap --variant=minbase --cache-dir="$XENLAB_CACHE/debs" \
	--include="$ROOTFS_PKGS" "$SUITE" "$tmp" "$MIRROR" >"$XENLAB_CACHE/debootstrap.log" 2>&1 ||
	{ tail -n 30 "$XENLAB_CACHE/debootstrap.log" >&2; die "debootstrap failed (log: $XENLAB_CACHE/debootstrap.log)"; }
log "debootstrap took $((SECONDS - t0)) s"

write_sources "$tmp"
chroot_mount "$tmp" "$XENLAB_CACHE/debs"
pkgs=""
for p in xen-hypervisor-4.17-amd64 xen-utils-4.17 xen-utils-common libxenmisc4.17 libxenstore4 \
	libxenhypfs1 libxencall1 libxendevicemodel1 libxenevtchn1 \
	libxenforeignmemory1 libxengnttab1 libxentoolcore1 libxentoollog1 xenstore-utils; do
	pkgs="$pkgs $p=$XEN_VERSION"
done
log "upgrading Xen to $XEN_VERSION from $SUITE-security"
chroot "$tmp" /bin/sh -c "export DEBIAN_FRONTEND=noninteractive LC_ALL=C
	apt-get -q update && apt-get -y -q --no-install-recommends install $pkgs" \
	>"$XENLAB_CACHE/apt-rootfs.log" 2>&1 ||
	{ tail -n 30 "$XENLAB_CACHE/apt-rootfs.log" >&2; die "Xen upgrade failed (log: $XENLAB_CACHE/apt-rootfs.log)"; }
got=$(chroot "$tmp" dpkg-query -W -f='${Version}' xen-utils-4.17)
[ "$got" = "$XEN_VERSION" ] || die "dom0 has xen-utils-4.17 $got, want $XEN_VERSION"
chroot_umount "$tmp"
trap - EXIT

touch "$tmp/.xenlab-done"
rm -rf "$ROOTFS"
mv "$tmp" "$ROOTFS"
# Older rootfs builds go; unmount first in case an interrupted build left
# its chroot mounts, so rm cannot reach through them into /dev or /proc.
for old in "$XENLAB_CACHE"/rootfs-*; do
	[ "$old" = "$ROOTFS" ] && continue
	chroot_umount "$old"
	grep -q " $old/" /proc/mounts || rm -rf "$old"
done
log "rootfs ready: $ROOTFS (Xen $XEN_VERSION, $((SECONDS - t0)) s)"
echo "$ROOTFS"
