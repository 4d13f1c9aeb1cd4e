#!/bin/bash
# Layer 2: the bootable artefact. Copies the cached rootfs; installs the dom0
# init, ssh keys shared by all hosts, the guest kernel and busybox initramfs;
# picks a hypervisor that can checkpoint PV guests; packs dom0.img with
# mke2fs -d (no loop mount) and extracts the boot files.
# Idempotent: prints the image directory, building it only if it is missing.
. "$(dirname "$0")/lib.sh"

IMAGE_KEY=$(printf '%s %s\n' "$ROOTFS_KEY" "$(hash_of "$XENLAB_DIR/build-image.sh" \
	"$XENLAB_DIR"/dom0/* "$XENLAB_DIR"/guest/*)" | sha256sum | cut -c1-16)
IMAGE=$XENLAB_CACHE/image-$IMAGE_KEY
if [ -f "$IMAGE/.xenlab-done" ]; then
	echo "$IMAGE"
	exit 0
fi

t0=$SECONDS
"$XENLAB_DIR/build-rootfs.sh" >/dev/null

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

# bookworm's libnl-utils looks for its qdisc modules under libnl/ but installs
# them under libnl-3/; upstream remus-netbuf-setup needs nl-qdisc-add plug.
ln -sfn libnl-3 "$stage/usr/lib/x86_64-linux-gnu/libnl"

# Checkpointing a PV guest needs log-dirty mode, which Xen implements for PV
# with shadow paging. Debian's 4.17.7 security build turned
# CONFIG_SHADOW_PAGING off, so save, migrate and Remus of PV guests fail
# there ("Failed to enable logdirty: 95"). The dom0 userland stays at
# $XEN_VERSION (the libxen-dev ABI); only the hypervisor binary comes from the
# newest 4.17 build that still has shadow paging. The hypercall interface
# does not change within a stable branch.
hv_gz=$stage/boot/xen-4.17-amd64.gz
hv_version=$XEN_VERSION
if ! grep -q '^CONFIG_SHADOW_PAGING=y' "$stage/boot/xen-4.17-amd64.config"; then
	hv_version=""
	for v in ${XENLAB_HV_VERSION:-$(apt-cache madison xen-hypervisor-4.17-amd64 | awk '{ print $3 }' | sort -urV)}; do
		deb=$XENLAB_CACHE/debs/xen-hypervisor-4.17-amd64_${v//:/%3a}_amd64.deb
		[ -f "$deb" ] || (cd "$XENLAB_CACHE/debs" && apt-get -q download "xen-hypervisor-4.17-amd64=$v" >/dev/null 2>&1) || continue
		rm -rf "$stage/tmp/hv"
		dpkg-deb -x "$deb" "$stage/tmp/hv"
		if grep -q '^CONFIG_SHADOW_PAGING=y' "$stage/tmp/hv/boot/xen-4.17-amd64.config"; then
			hv_version=$v
			hv_gz=$stage/tmp/hv/boot/xen-4.17-amd64.gz
			break
		fi
	done
	[ -n "$hv_version" ] || die "no xen-hypervisor-4.17-amd64 build with CONFIG_SHADOW_PAGING=y available; set XENLAB_HV_VERSION"
	log "hypervisor $XEN_VERSION lacks shadow paging (no PV log-dirty); booting hypervisor $hv_version with $XEN_VERSION tools"
fi
echo "$hv_version" >"$stage/var/lib/xenlab/hypervisor"

log "packing dom0.img"
zcat "$hv_gz" >"$tmp/boot/xen"
rm -rf "$stage/tmp/hv"
cp "$stage/boot/vmlinuz-$kver" "$tmp/boot/vmlinuz"
cp "$stage/boot/initrd.img-$kver" "$tmp/boot/initrd.img"
truncate -s 3G "$tmp/dom0.img"
mkfs.ext4 -q -F -L xenlab -d "$stage" "$tmp/dom0.img"
printf 'xen=%s hypervisor=%s kernel=%s rootfs=%s\n' "$XEN_VERSION" "$hv_version" "$kver" "$ROOTFS_KEY" >"$tmp/info"
rm -rf "$stage"
touch "$tmp/.xenlab-done"
rm -rf "$IMAGE"
mv "$tmp" "$IMAGE"
# Older images go, unless a running host still boots from one.
for old in "$XENLAB_CACHE"/image-*; do
	[ "$old" = "$IMAGE" ] && continue
	grep -qsxF "$old" "$XENLAB_RUN"/host*.image || rm -rf "$old"
done
log "image ready: $IMAGE ($((SECONDS - t0)) s)"
echo "$IMAGE"
