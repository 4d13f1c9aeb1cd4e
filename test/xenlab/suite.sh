#!/bin/bash
# test/xenlab/suite.sh PKG [REGEX]: build PKG's test binary into bin/
# (shared at /mnt/host in the lab's dom0), run it as root in host 1's dom0
# (make xenlab-up first) and judge its verbose output: at least one test
# must pass, none may fail, and none may skip except those named in
# $SUITE_MAY_SKIP (a regex of test names, e.g. helper-process entries).
# The exit code alone would pass a suite whose tests all skipped (no
# sch_plug, no nbd module): this is for the kernel features only the lab's
# Debian 6.1 dom0 kernel has.
#   test/xenlab/suite.sh ./netbuf/plug
#   SUITE_MAY_SKIP='^TestHelperHolder$' test/xenlab/suite.sh ./netbuf/nfqueue
#   test/xenlab/suite.sh ./diskbuf/nbd 'TestKernel|TestIOFlusher'
set -euo pipefail
cd "$(dirname "$0")/../.."
pkg=$1
regex=${2:-.}
name=$(basename "$pkg")
results=${KEMARI_LAB_RESULTS:-bin/xenlab-results/kemari}
mkdir -p bin "$results"
go test -c -o "bin/$name.test" "$pkg"
cat >"bin/suite-$name.sh" <<SCRIPT
#!/bin/sh
modprobe -a sch_plug ifb nbd nfnetlink_queue br_netfilter 2>/dev/null
cd /tmp && timeout 900 /mnt/host/$name.test -test.count=1 -test.v -test.run '$regex'
SCRIPT
log=$results/suite-$name.log
set +e
python3 test/xenlab/xenlab.py run --timeout 1000 1 "sh /mnt/host/suite-$name.sh" >"$log" 2>&1
rc=$?
set -e
grep -E '^(--- |ok|PASS|FAIL)' "$log" | tail -40
fail=0
[ "$rc" = 0 ] || { echo "suite $pkg: exit $rc (log $log)"; tail -30 "$log"; fail=1; }
grep -q -- '^--- PASS' "$log" || { echo "suite $pkg: no test passed"; fail=1; }
skips=$(grep -- '^--- SKIP' "$log" | awk '{print $3}' | grep -Ev "${SUITE_MAY_SKIP:-^$}" || true)
[ -z "$skips" ] || { echo "suite $pkg: tests skipped in the lab: $skips"; grep -A2 -- '^--- SKIP' "$log"; fail=1; }
exit $fail
