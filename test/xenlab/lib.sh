# Common settings for the xenlab build scripts; sourced, never run.
#
# Layout (all under $XENLAB_CACHE, default /var/cache/xenlab):
#   debs/  debs-build/     .deb caches of the rootfs and of the build chroot
#   rootfs-<key>/          debootstrapped dom0 rootfs, Xen upgraded to $XEN_VERSION
#   buildroot-<key>/       build chroot for the netbuf-enabled libxenlight (optional)
#   netbuf-<xenver>-<key>/ its output: libxenlight.so.4.17.0 + remus-netbuf-setup
#   image-<key>/           dom0.img, boot/{xen,vmlinuz,initrd.img}, info (the finished artefact)
#   run/                   runtime state: overlays, sockets, pid files, console logs
#
# Keys are hashes of the scripts and files that built a layer plus the package
# versions apt would install, so editing a script or a security update rebuilds
# exactly the layers it affects and nothing else.

set -euo pipefail

XENLAB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
XENLAB_CACHE=${XENLAB_CACHE:-/var/cache/xenlab}
XENLAB_RUN=${XENLAB_RUN:-$XENLAB_CACHE/run}
SUITE=bookworm

mkdir -p "$XENLAB_CACHE"

log() { printf '[xenlab %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

# apt_uri SUITE prints the first URI the machine's apt config uses for SUITE.
# The mirror is read from this machine at run time rather than written into
# the repository, so the lab follows whatever mirror CI is configured with.
apt_uri() {
	local want=$1 f
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -r "$f" ] || continue
		awk -v want="$want" '
			function flush() { if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " want " ") && uri != "") { print uri; found=1; exit } types=""; suites=""; uri="" }
			/^[ \t]*$/ { flush(); next }
			/^Types:/ { sub(/^Types:[ \t]*/, ""); types=$0 }
			/^Suites:/ { sub(/^Suites:[ \t]*/, ""); suites=$0 }
			/^URIs:/ { sub(/^URIs:[ \t]*/, ""); split($0, u, " "); uri=u[1] }
			END { if (!found) flush() }' "$f"
	done
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[ -r "$f" ] || continue
		awk -v want="$want" '$1 == "deb" { i = 2; if ($2 ~ /^\[/) { while ($i !~ /\]$/) i++; i++ } if ($(i+1) == want) print $i }' "$f"
	done
}

MIRROR=${XENLAB_MIRROR:-$(apt_uri "$SUITE" | head -n1)}
SECURITY_MIRROR=${XENLAB_SECURITY_MIRROR:-$(apt_uri "$SUITE-security" | head -n1)}
[ -n "$MIRROR" ] || die "no apt source for $SUITE in /etc/apt; set XENLAB_MIRROR"
[ -n "$SECURITY_MIRROR" ] || die "no apt source for $SUITE-security in /etc/apt; set XENLAB_SECURITY_MIRROR"

# candidate PKG prints the version `apt-get install PKG` would pick here.
candidate() { apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ { print $2; exit }'; }

# The lab runs the Xen that the build machine's libxen-dev would give cgo, so
# a binary linked here finds the same libxenctrl/libxenguest ABI in dom0.
XEN_VERSION=${XENLAB_XEN_VERSION:-$(candidate libxen-dev)}
case $XEN_VERSION in
4.17.*) ;;
*) die "libxen-dev candidate is '${XEN_VERSION:-none}', want 4.17.x (run apt-get update, or set XENLAB_XEN_VERSION)" ;;
esac

ROOTFS_PKGS="xen-hypervisor-4.17-amd64,xen-utils-4.17,xen-utils-common,linux-image-amd64,initramfs-tools,iproute2,bridge-utils,iputils-ping,netcat-openbsd,busybox-static,cpio,kmod,procps,openssh-server,openssh-client,xz-utils,net-tools,libnl-utils,libnl-3-200,libnl-route-3-200"

# hash_of FILE... prints a short hash of the named files' contents and of the
# environment values that select what gets built.
hash_of() {
	{
		for f in "$@"; do printf '%s\n' "${f#"$XENLAB_DIR"/}"; cat "$f"; done
		printf 'xen=%s kernel=%s suite=%s pkgs=%s\n' "$XEN_VERSION" "$(candidate linux-image-amd64)" "$SUITE" "$ROOTFS_PKGS"
	} | sha256sum | cut -c1-16
}

ROOTFS_KEY=$(hash_of "$XENLAB_DIR/build-rootfs.sh")
ROOTFS=$XENLAB_CACHE/rootfs-$ROOTFS_KEY
NETBUF_DIR=$XENLAB_CACHE/netbuf-$XEN_VERSION-$(hash_of "$XENLAB_DIR/build-netbuf.sh" | cut -c1-8)

# chroot_mount DIR DEBS mounts proc, sys and dev in the chroot DIR and binds
# the .deb cache DEBS over its apt archive; chroot_umount undoes it. Each
# chroot has its own .deb cache, because the rootfs and the netbuf build
# chroot are bootstrapped at the same time and must not download into one
# directory together.
chroot_mount() {
	local r=$1 debs=$2
	mountpoint -q "$r/proc" || mount -t proc proc "$r/proc"
	mountpoint -q "$r/sys" || mount -t sysfs sys "$r/sys"
	mountpoint -q "$r/dev" || mount --bind /dev "$r/dev"
	mkdir -p "$r/var/cache/apt/archives" "$debs"
	mountpoint -q "$r/var/cache/apt/archives" || mount --bind "$debs" "$r/var/cache/apt/archives"
}
chroot_umount() {
	local r=$1 m
	for m in var/cache/apt/archives dev sys proc; do
		mountpoint -q "$r/$m" && umount -l "$r/$m"
	done
	return 0
}

# write_sources DIR [deb-src] points the chroot's apt at this machine's mirrors
# for bookworm and bookworm-security.
write_sources() {
	local r=$1 types="deb"
	[ "${2:-}" = deb-src ] && types="deb deb-src"
	rm -f "$r/etc/apt/sources.list"
	cat >"$r/etc/apt/sources.list.d/xenlab.sources" <<EOF
Types: $types
URIs: $MIRROR
Suites: $SUITE
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: $types
URIs: $SECURITY_MIRROR
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
	# Services must not start inside a build chroot.
	printf '#!/bin/sh\nexit 101\n' >"$r/usr/sbin/policy-rc.d"
	chmod +x "$r/usr/sbin/policy-rc.d"
}
