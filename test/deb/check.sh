#!/bin/sh
# Builds the Debian package (make deb, unless DEB names one), runs lintian
# on it and checks what it holds: paths and modes, conffiles, the systemd
# units' ordering, the maintainer scripts, that /usr/sbin/xl and
# /usr/local are never touched, and that the binary has the Xen backend.
#
# With DEB_CHECK_ROOTFS=DIR (a Debian 12 root with xen-utils-4.17, such as
# the Xen lab's cached dom0 rootfs), it also installs, uses and purges the
# package in a chroot on an overlay of DIR (DIR itself is not written) and
# checks that nothing is left (install-purge.sh). Needs root for that.
#
#   test/deb/check.sh                # from the top of the tree
set -eu
cd "$(dirname "$0")/../.."
fail() { echo "check: FAIL: $*" >&2; exit 1; }
ok() { echo "check: ok: $*"; }

if [ -z "${DEB:-}" ]; then
	make deb
	DEB=$(ls bin/deb/xl-kemari_*.deb | grep -v dbgsym)
fi
[ -f "$DEB" ] || fail "no package $DEB"
changes=${DEB%.deb}.changes

# lintian: no error or warning (overrides, with reasons, in debian/).
lintian --fail-on error,warning "$changes" || fail "lintian"
ok "lintian"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
dpkg-deb -c "$DEB" | awk '{ print $1, $6 }' | sed 's|^\(l[^ ]*\) \(.*\)|\1 \2 -> link|' >"$tmp/list"
mode() { # path: the mode string of ./path in the package
	awk -v p="./$1" '$2 == p { print $1 }' "$tmp/list"
}
for want in "usr/sbin/xl-kemari -rwxr-xr-x" "usr/lib/xl-kemari/bin/xl -rwxr-xr-x" \
	"etc/xen/kemari.toml -rw-r--r--" "etc/default/xl-kemari -rw-r--r--" "etc/init.d/xl-kemari -rwxr-xr-x" \
	"etc/xen/scripts/block-kemari -rwxr-xr-x" \
	"lib/systemd/system/xl-kemari-listen.service -rw-r--r--" "lib/systemd/system/xl-kemari@.service -rw-r--r--" \
	"lib/systemd/system/xl-kemari-autostart.service -rw-r--r--" \
	"usr/share/man/man1/xl-kemari.1.gz -rw-r--r--" "usr/share/man/man5/xl-kemari.cfg.5.gz -rw-r--r--" \
	"usr/share/doc/xl-kemari/copyright -rw-r--r--"; do
	set -- $want
	[ "$(mode "$1")" = "$2" ] || fail "$1: mode '$(mode "$1")', want $2"
done
grep -q '^lrwxrwxrwx ./usr/lib/xl-kemari/bin/xl-kemari ' "$tmp/list" || fail "no usr/lib/xl-kemari/bin/xl-kemari link"
! grep -q ' ./usr/sbin/xl$' "$tmp/list" || fail "the package ships /usr/sbin/xl"
! grep -q ' ./usr/local' "$tmp/list" || fail "the package ships files in /usr/local"
ok "paths and modes"

dpkg-deb -e "$DEB" "$tmp/DEBIAN"
printf '/etc/default/xl-kemari\n/etc/init.d/xl-kemari\n/etc/xen/kemari.toml\n/etc/xen/scripts/block-kemari\n' >"$tmp/want-conffiles"
diff -u "$tmp/want-conffiles" "$tmp/DEBIAN/conffiles" || fail "conffiles"
ok "conffiles"

dpkg-deb -f "$DEB" Depends | grep -q 'libxenmisc4.17' || fail "Depends lacks libxenmisc4.17: $(dpkg-deb -f "$DEB" Depends)"
dpkg-deb -f "$DEB" Recommends | grep -q 'xen-utils-4.17' || fail "Recommends lacks xen-utils-4.17"
ok "Depends: $(dpkg-deb -f "$DEB" Depends)"

for s in preinst postinst prerm postrm; do
	[ -f "$tmp/DEBIAN/$s" ] || fail "no $s"
	sh -n "$tmp/DEBIAN/$s" || fail "$s: syntax"
	! grep -q 'dpkg-divert' "$tmp/DEBIAN/$s" || fail "$s diverts a file"
done
grep -q "deb-systemd-helper enable 'xl-kemari-autostart.service'" "$tmp/DEBIAN/postinst" || fail "postinst does not enable the autostart unit"
# --no-enable: listen is enabled again on upgrade only if it was before.
grep -q "if deb-systemd-helper debian-installed 'xl-kemari-listen.service'; then" "$tmp/DEBIAN/postinst" || fail "postinst enables the listen unit"
! grep -q 'deb-systemd-invoke start\|invoke-rc.d xl-kemari start' "$tmp/DEBIAN/postinst" || fail "postinst starts a service"
grep -q "deb-systemd-helper purge 'xl-kemari-autostart.service'" "$tmp/DEBIAN/postrm" || fail "postrm does not purge the unit state"
grep -q 'rm -f /var/log/xen/xl-kemari' "$tmp/DEBIAN/postrm" || fail "postrm purge keeps the logs"
grep -q 'xl-kemari stop --all' "$tmp/DEBIAN/prerm" || fail "prerm does not end the protections on remove"
ok "maintainer scripts"

dpkg-deb -x "$DEB" "$tmp/root"
for u in xl-kemari-listen xl-kemari@ xl-kemari-autostart; do
	grep -q '^After=.*xen\.service' "$tmp/root/lib/systemd/system/$u.service" || fail "$u.service not after xen.service"
	grep -q '/usr/sbin/xl-kemari' "$tmp/root/lib/systemd/system/$u.service" || fail "$u.service does not run /usr/sbin/xl-kemari"
done
grep -q '^After=.*xendomains\.service' "$tmp/root/lib/systemd/system/xl-kemari-autostart.service" || fail "autostart not after xendomains"
grep -q '^Type=notify' "$tmp/root/lib/systemd/system/xl-kemari-listen.service" || fail "listen is not Type=notify"
cmp -s dist/xl "$tmp/root/usr/lib/xl-kemari/bin/xl" || fail "the packaged dispatcher differs from dist/xl"
"$tmp/root/usr/sbin/xl-kemari" version | grep -q '^hypervisor backends: .*xen' || fail "the packaged binary has no xen backend"
ok "units, dispatcher, binary ($("$tmp/root/usr/sbin/xl-kemari" version | head -1))"

if [ -n "${DEB_CHECK_ROOTFS:-}" ]; then
	o=$(mktemp -d)
	mkdir "$o/upper" "$o/work" "$o/root"
	mount -t overlay overlay -o "lowerdir=$DEB_CHECK_ROOTFS,upperdir=$o/upper,workdir=$o/work" "$o/root"
	cp "$DEB" test/deb/install-purge.sh "$o/root/tmp/"
	rc=0
	NO_HYPERVISOR=1 chroot "$o/root" sh /tmp/install-purge.sh "/tmp/$(basename "$DEB")" || rc=$?
	umount "$o/root"
	rm -rf "$o"
	[ "$rc" = 0 ] || fail "install, use and purge in a chroot of $DEB_CHECK_ROOTFS"
	ok "installed, used and purged in a chroot of $DEB_CHECK_ROOTFS"
fi
echo "check: PASS $DEB"
