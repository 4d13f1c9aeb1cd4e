#!/bin/bash
# Host-side driver: builds the xen binaries into bin/ (shared at /mnt/host in
# the lab's dom0), then runs dom0.sh there on host 1, which must be up
# (make xenlab-up). Output goes to stdout and $KEMARI_LAB_RESULTS/<what>.log
# (default bin/xenlab-results/kemari, untracked): a run never writes into
# tracked files. Results worth keeping are copied to results/ beside this
# script and committed deliberately.
#
#   test/xenlab/kemari/run.sh version
#   test/xenlab/kemari/run.sh test 'TestPrimitives'
#   test/xenlab/kemari/run.sh engine 'TestEnginePV'
#   test/xenlab/kemari/run.sh disk             (disk.sh: the NBD disk front)
set -eu
cd "$(dirname "$0")/../../.."
what=${1:-test}
regex=${2:-.}
go build -tags xen -o bin/xl-kemari ./xlkemari
go test -c -tags 'xen integration' -o bin/xen.test ./libxl/xen
go test -c -tags 'xen integration' -o bin/kemari-engine.test ./test/xenlab/kemari
install -m 0755 test/xenlab/kemari/dom0.sh bin/kemari-lab.sh
install -m 0755 test/xenlab/kemari/disk.sh bin/kemari-disk.sh
install -m 0755 dist/block-kemari bin/block-kemari
results=${KEMARI_LAB_RESULTS:-bin/xenlab-results/kemari}
mkdir -p "$results"
log=$results/$what.log
case $what in
test | engine) log=$results/$what-$(echo "$regex" | tr -c 'A-Za-z0-9\n' _).log ;;
esac
set +e
python3 test/xenlab/xenlab.py run 1 "/mnt/host/kemari-lab.sh $what '$regex'" --timeout "${KEMARI_LAB_TIMEOUT:-1800}" | tee "$log"
rc=${PIPESTATUS[0]}
echo "rc=$rc" >>"$log"
exit "$rc"
