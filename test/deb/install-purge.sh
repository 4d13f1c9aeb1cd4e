#!/bin/sh
# Installs the xl-kemari .deb on this (dom0) host, uses it through the
# opt-in xl dispatcher, purges it and checks that nothing is left: no file
# that was not there before, /usr/sbin/xl untouched, no diversion. Run as
# root, e.g. in the Xen lab's dom0 by .ci/run:
#
#   sh /mnt/host/deb/install-purge.sh /mnt/host/deb/xl-kemari_*.deb
#
# With NO_HYPERVISOR=1 (a chroot, test/deb/check.sh), `xl list` is only
# checked to reach the real xl, which then finds no hypervisor.
set -eu
deb=$1
fail() { echo "install-purge: FAIL: $*" >&2; exit 1; }
step() { echo "install-purge: $*"; }
[ -f "$deb" ] || fail "no package $deb"

# Everything on the root file system but dpkg's own bookkeeping and the
# places that Xen's daemons and the shell write to meanwhile (those are
# searched for anything named kemari instead: volatile).
volatile="/run /var/tmp /var/log /var/lib/xen /var/lib/xenstored /root"
snapshot() {
	find / -xdev \( -path /proc -o -path /sys -o -path /dev -o -path /mnt \
		-o -path /run -o -path /tmp -o -path /var/tmp -o -path /var/log -o -path /var/lib/xen \
		-o -path /var/lib/xenstored -o -path /root \
		-o -path /var/lib/dpkg -o -path /var/cache/debconf -o -path /var/cache/ldconfig \) -prune -o -print | LC_ALL=C sort
}
xl_before=$(ls -l /usr/sbin/xl)
divert_before=$(dpkg-divert --list | LC_ALL=C sort)
snapshot >/tmp/install-purge.before
# shellcheck disable=SC2086
find $volatile -xdev -name '*kemari*' 2>/dev/null | LC_ALL=C sort >/tmp/install-purge.vbefore || true

step "dpkg -i $deb"
dpkg -i "$deb"
dpkg-query -W -f='${Status}\n' xl-kemari | grep -qx 'install ok installed' || fail "not installed"
[ "$(ls -l /usr/sbin/xl)" = "$xl_before" ] || fail "/usr/sbin/xl changed: $(ls -l /usr/sbin/xl)"
[ -x /usr/sbin/xl-kemari ] || fail "no /usr/sbin/xl-kemari"
/usr/sbin/xl-kemari version
/usr/sbin/xl-kemari version | grep -q '^hypervisor backends: .*xen' || fail "the packaged xl-kemari has no xen backend"
[ -f /etc/xen/kemari.toml ] || fail "no /etc/xen/kemari.toml"
/usr/sbin/xl-kemari config --help >/dev/null 2>&1 || fail "config --help"

# The dispatcher, opted in by PATH as xl-kemari(1) says.
export PATH="/usr/lib/xl-kemari/bin:$PATH"
[ "$(command -v xl)" = /usr/lib/xl-kemari/bin/xl ] || fail "xl is $(command -v xl), not the dispatcher"
step "xl kemari status"
xl kemari status || fail "xl kemari status: exit $?"
step "xl list"
if [ "${NO_HYPERVISOR:-0}" = 1 ]; then
	# The real xl (xen-utils-wrapper) runs and finds no hypervisor.
	out=$(xl list 2>&1) && fail "xl list succeeded without a hypervisor: $out"
	echo "$out"
	echo "$out" | grep -q 'kemari' && fail "xl list went to xl-kemari: $out"
else
	xl list | tee /tmp/install-purge.xl
	grep -q '^Domain-0 ' /tmp/install-purge.xl || fail "xl list through the dispatcher did not list Domain-0"
fi

step "dpkg --purge xl-kemari"
dpkg --purge xl-kemari
dpkg-query -W -f='${Status}\n' xl-kemari 2>/dev/null | grep -q installed && fail "still installed"
[ "$(ls -l /usr/sbin/xl)" = "$xl_before" ] || fail "/usr/sbin/xl changed: $(ls -l /usr/sbin/xl)"
[ "$(dpkg-divert --list | LC_ALL=C sort)" = "$divert_before" ] || fail "diversions changed"
snapshot >/tmp/install-purge.after
if ! diff -u /tmp/install-purge.before /tmp/install-purge.after; then
	fail "the purge left the files above (+) or removed the ones marked -"
fi
# shellcheck disable=SC2086
find $volatile -xdev -name '*kemari*' 2>/dev/null | LC_ALL=C sort >/tmp/install-purge.vafter || true
left=$(LC_ALL=C comm -13 /tmp/install-purge.vbefore /tmp/install-purge.vafter)
[ -z "$left" ] || fail "the purge left: $left"
step "OK: installed, used, purged; nothing left"
