#!/bin/bash
# make xenlab-clean: delete the xenlab cache. Run after xenlab-down; chroot
# mounts left by an interrupted build are undone first, so rm cannot reach
# through them into /dev or /proc.
. "$(dirname "$0")/lib.sh"
for r in "$XENLAB_CACHE"/rootfs-* "$XENLAB_CACHE"/buildroot-*; do
	[ -d "$r" ] && chroot_umount "$r"
done
if grep -q " $XENLAB_CACHE/" /proc/mounts; then
	die "mounts remain under $XENLAB_CACHE; not deleting"
fi
rm -rf "$XENLAB_CACHE"
log "removed $XENLAB_CACHE"
