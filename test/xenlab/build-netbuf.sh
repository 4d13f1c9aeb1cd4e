#!/bin/bash
# Optional layer: libxenlight with Remus network buffering (pitfall 5).
#
# Debian builds Xen without libnl3, which compiles upstream Remus's network
# buffering out. This rebuilds only tools/libs from the Debian source, with
# Debian's configure flags plus libnl, in a separate cached build chroot, and
# outputs libxenlight.so.4.17.0 and upstream's remus-netbuf-setup.
#
# The source should be the exact $XEN_VERSION. If the mirror does not serve
# that source (security pools are often not mirrored for source), the newest
# 4.17 source it does serve is used instead and the fallback is recorded in
# $out/source; within 4.17 the public libxenctrl/libxenguest headers match,
# and dom0 keeps Debian's own library for everything else (see lab/remus.sh).
# Idempotent: prints the output directory.
. "$(dirname "$0")/lib.sh"

out=$NETBUF_DIR
if [ -f "$out/.xenlab-done" ]; then
	echo "$out"
	exit 0
fi
t0=$SECONDS
BUILD_PKGS="dpkg-dev,build-essential,autoconf,automake,pkg-config,python3,python3-dev,bison,flex,libnl-3-dev,libnl-route-3-dev,uuid-dev,libyajl-dev,zlib1g-dev,liblzma-dev,libbz2-dev,libzstd-dev,liblzo2-dev,libncurses-dev,libglib2.0-dev,libpixman-1-dev,libfdt-dev,acpica-tools,gettext"
# The chroot depends only on what is installed in it, so script edits reuse it.
BROOT=$XENLAB_CACHE/buildroot-$(echo "$SUITE $BUILD_PKGS" | sha256sum | cut -c1-8)

trap 'chroot_umount "$BROOT"' EXIT
if [ ! -f "$BROOT/.xenlab-done" ]; then
	chroot_umount "$BROOT"
	rm -rf "$BROOT"
	log "debootstrap build chroot $BROOT"
	mkdir -p "$XENLAB_CACHE/debs-build"
	debootstrap --variant=minbase --cache-dir="$XENLAB_CACHE/debs-build" --include="$BUILD_PKGS" \
		"$SUITE" "$BROOT" "$MIRROR" >"$XENLAB_CACHE/debootstrap-build.log" 2>&1 ||
		{ tail -n 30 "$XENLAB_CACHE/debootstrap-build.log" >&2; die "build chroot debootstrap failed"; }
	write_sources "$BROOT" deb-src
	touch "$BROOT/.xenlab-done"
	log "build chroot took $((SECONDS - t0)) s"
fi
chroot_mount "$BROOT" "$XENLAB_CACHE/debs-build"

blog=$XENLAB_CACHE/netbuf-build.log
: >"$blog"
# Pick the source: exact version first, else the newest 4.17 on offer.
chroot "$BROOT" /bin/sh -c "apt-get -q update" >>"$blog" 2>&1 || die "apt-get update in build chroot failed (log: $blog)"
src=""
for v in "$XEN_VERSION" $(chroot "$BROOT" apt-cache showsrc xen | sed -n 's/^Version: //p' | sort -rV); do
	case $v in 4.17.*) ;; *) continue ;; esac
	[ "$v" = "$XEN_VERSION" ] && [ -n "${tried:-}" ] && continue
	tried=1
	rm -rf "$BROOT/src"
	mkdir -p "$BROOT/src"
	if chroot "$BROOT" /bin/sh -c "cd /src && apt-get -q source xen=$v" >>"$blog" 2>&1; then
		src=$v
		break
	fi
	log "source xen=$v not available from the mirror"
done
[ -n "$src" ] || die "no xen 4.17 source available (log: $blog)"
[ "$src" = "$XEN_VERSION" ] || log "WARNING: building netbuf libxenlight from xen $src source (dom0 runs $XEN_VERSION)"

log "building libxenlight with libnl from xen $src"
chroot "$BROOT" /bin/bash -c '
	set -e
	cd /src/xen-*/
	export WGET=/bin/false GIT=/bin/false
	ma="$(dpkg-architecture -qDEB_HOST_MULTIARCH)"
	uv=$(echo '"$src"' | sed "s/^\([0-9]*\.[0-9]*\).*/\1/")
	flags="EXTRA_CFLAGS_XEN_TOOLS=$(dpkg-buildflags --get CFLAGS) $(dpkg-buildflags --get CPPFLAGS)"
	for f in config.sub config.guess; do
		cp /usr/share/misc/$f . 2>/dev/null || cp /usr/share/automake-*/$f .
	done
	[ -x configure ] || ./autogen.sh
	./configure --disable-stubdom --prefix=/usr --includedir=/usr/include --libdir=/usr/lib/$ma \
		--with-libexec-libdir-suffix=/$ma --host=$ma --mandir=/usr/share/man --infodir=/usr/share/info \
		--sysconfdir=/etc --localstatedir=/var --with-libexec-leaf-dir=xen-$uv \
		--disable-blktap1 --disable-blktap2 --disable-qemu-traditional --disable-rombios \
		--with-system-qemu=/usr/libexec/xen-qemu-system-i386 --disable-ocamltools --disable-docs \
		--enable-ovmf --with-system-ovmf=/usr/share/ovmf/OVMF.fd \
		--with-system-seabios=/usr/share/seabios/bios-256k.bin
	grep -q "^CONFIG_LIBNL *:= *y" config/Tools.mk
	make -j2 -C tools/include "$flags" XEN_COMPILE_ARCH=x86_64 XEN_TARGET_ARCH=x86_64
	make -j2 -C tools/libs "$flags" XEN_COMPILE_ARCH=x86_64 XEN_TARGET_ARCH=x86_64
	readelf -d tools/libs/light/libxenlight.so.4.17.0 | grep -q "libnl-route-3" || { echo "netbuf not linked in"; exit 1; }
' >>"$blog" 2>&1 || { tail -n 40 "$blog" >&2; die "netbuf libxenlight build failed (log: $blog)"; }

rm -rf "$out.tmp"
mkdir -p "$out.tmp"
d=$(ls -d "$BROOT"/src/xen-*/ | head -n1)
cp "$d/tools/libs/light/libxenlight.so.4.17.0" "$d/tools/hotplug/Linux/remus-netbuf-setup" "$out.tmp/"
echo "$src" >"$out.tmp/source"
touch "$out.tmp/.xenlab-done"
chroot_umount "$BROOT"
trap - EXIT
rm -rf "$out"
mv "$out.tmp" "$out"
log "netbuf libxenlight ready: $out ($((SECONDS - t0)) s)"
echo "$out"
