#!/bin/bash
# Layer 2: the bootable artefact. Copies the cached rootfs, installs the dom0
# init, ssh keys shared by all hosts, the guest kernel and busybox initramfs,
# and (XENLAB_NETBUF=1) the netbuf-enabled libxenlight; then packs dom0.img
# with mke2fs -d (no loop mount) and extracts the boot files.
# Idempotent: prints the image directory, building it only if it is missing.
. "$(dirname "$0")/lib.sh"

NETBUF=${XENLAB_NETBUF:-1}
IMAGE_KEY=$(printf '%s %s %s\n' "$ROOTFS_KEY" "$NETBUF" "$(hash_of "$XENLAB_DIR/build-image.sh" \
	"$XENLAB_DIR"/dom0/* "$XENLAB_DIR"/guest/*)" | sha256sum | cut -c1-16)
IMAGE=$XENLAB_CACHE/image-$IMAGE_KEY
if [ -f "$IMAGE/.xenlab-done" ]; then
	echo "$IMAGE"
	exit 0
fi

t0=$SECONDS
"$XENLAB_DIR/build-rootfs.sh" >/dev/null
nb=""
if [ "$NETBUF" = 1 ]; then
	nb=$("$XENLAB_DIR/build-netbuf.sh")
fi

stage=$IMAGE.stage
tmp=$IMAGE.tmp
rm -rf "$stage" "$tmp"
mkdir -p "$tmp/boot"
log "staging dom0 rootfs"
cp -a "$ROOTFS" "$stage"
rm -f "$stage/.xenlab-done" "$stage/usr/sbin/policy-rc.d"

install -m 0755 "$XENLAB_DIR/dom0/xenlab-init" "$stage/usr/local/sbin/xenlab-init"
install -m 0644 "$XENLAB_DIR/dom0/bashrc" "$stage/root/.bashrc"
echo xenlab1 >"$stage/etc/hostname"
cat >"$stage/etc/hosts" <<'EOF'
127.0.0.1 localhost
192.0.2.1 xenlab1
192.0.2.2 xenlab2
192.0.2.100 domu
EOF
mkdir -p "$stage/mnt/host" "$stage/mnt/lab" "$stage/mnt/out" "$stage/var/lib/xenlab"

# One root key for every host: `ssh localhost` and `ssh xenlab2` (xl remus's
# transport) then work without prompts.
mkdir -p -m 0700 "$stage/root/.ssh"
ssh-keygen -q -t ed25519 -N '' -C xenlab -f "$stage/root/.ssh/id_ed25519"
cp "$stage/root/.ssh/id_ed25519.pub" "$stage/root/.ssh/authorized_keys"
cat >"$stage/root/.ssh/config" <<'EOF'
Host *
	StrictHostKeyChecking no
	UserKnownHostsFile /dev/null
	LogLevel ERROR
EOF
chmod 0600 "$stage/root/.ssh/"*
[ -f "$stage/etc/ssh/ssh_host_ed25519_key" ] || chroot "$stage" ssh-keygen -A

# The guest: dom0's own kernel (Debian's is PV-capable) and a busybox
# initramfs with the frontends it needs. Packed with the rootfs's cpio: the
# build machine may not have one (pitfall 8).
kver=$(basename "$(ls -d "$stage"/lib/modules/* | head -n1)")
g=$stage/tmp/guest
rm -rf "$g"
mkdir -p "$g/bin" "$g/lib/modules" "$g/proc" "$g/sys" "$g/dev" "$g/state"
cp "$stage/bin/busybox" "$g/bin/busybox"
install -m 0755 "$XENLAB_DIR/guest/init" "$g/init"
install -m 0755 "$XENLAB_DIR/guest/svc" "$g/bin/svc"
for m in drivers/net/xen-netfront drivers/block/xen-blkfront; do
	f=$(ls "$stage/lib/modules/$kver/kernel/$m".ko* | head -n1)
	case $f in
	*.xz) xz -dc "$f" >"$g/lib/modules/$(basename "$m").ko" ;;
	*.zst) zstd -qdc "$f" >"$g/lib/modules/$(basename "$m").ko" ;;
	*) cp "$f" "$g/lib/modules/" ;;
	esac
done
chroot "$stage" /bin/sh -c 'cd /tmp/guest && find . | cpio -o -H newc --quiet | gzip -9' >"$stage/var/lib/xenlab/domu-initrd.gz"
rm -rf "$g"
cp "$stage/boot/vmlinuz-$kver" "$stage/var/lib/xenlab/vmlinuz"

if [ -n "$nb" ]; then
	# Upstream Remus network buffering (pitfall 5): swap in the rebuilt
	# libxenlight and point the symlink at it by hand, keeping the Debian
	# copy outside the lib dir so ldconfig cannot switch back to it.
	lib=$stage/usr/lib/x86_64-linux-gnu
	mkdir -p "$stage/var/lib/xenlab/debian-libxenlight"
	cp -a "$lib/libxenlight.so.4.17.0" "$stage/var/lib/xenlab/debian-libxenlight/"
	install -m 0644 "$nb/libxenlight.so.4.17.0" "$lib/libxenlight.so.4.17.0"
	ln -sfn libxenlight.so.4.17.0 "$lib/libxenlight.so.4.17"
	install -m 0755 "$nb/remus-netbuf-setup" "$stage/etc/xen/scripts/remus-netbuf-setup"
	# bookworm's libnl-utils looks for its qdisc modules under libnl/ but
	# installs them under libnl-3/.
	ln -sfn libnl-3 "$lib/libnl"
	echo "$XEN_VERSION" >"$stage/var/lib/xenlab/netbuf"
fi

log "packing dom0.img"
zcat "$stage/boot/xen-4.17-amd64.gz" >"$tmp/boot/xen"
cp "$stage/boot/vmlinuz-$kver" "$tmp/boot/vmlinuz"
cp "$stage/boot/initrd.img-$kver" "$tmp/boot/initrd.img"
truncate -s 3G "$tmp/dom0.img"
mkfs.ext4 -q -F -L xenlab -d "$stage" "$tmp/dom0.img"
printf 'xen=%s netbuf=%s kernel=%s rootfs=%s\n' "$XEN_VERSION" "$NETBUF" "$kver" "$ROOTFS_KEY" >"$tmp/info"
rm -rf "$stage"
touch "$tmp/.xenlab-done"
rm -rf "$IMAGE"
mv "$tmp" "$IMAGE"
log "image ready: $IMAGE ($((SECONDS - t0)) s)"
echo "$IMAGE"
