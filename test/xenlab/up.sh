#!/bin/bash
# make xenlab-up: build what is missing (cached under /var/cache/xenlab) and
# boot host 1 with the repo's bin/ shared read-only at /mnt/host in dom0.
#   XENLAB_NETBUF=0   skip the netbuf libxenlight (no network-buffered rows)
#   XENLAB_SHARE=DIR  share DIR instead of bin/
. "$(dirname "$0")/lib.sh"
t0=$SECONDS
share=${XENLAB_SHARE:-$XENLAB_DIR/../../bin}
mkdir -p "$share"

# The netbuf build runs beside the dom0 build: both mostly wait on apt and
# dpkg, so together they take little more than the longer one alone.
nbpid=""
if [ "${XENLAB_NETBUF:-1}" = 1 ] && [ ! -f "$NETBUF_DIR/.xenlab-done" ]; then
	"$XENLAB_DIR/build-netbuf.sh" >/dev/null &
	nbpid=$!
fi
image=$("$XENLAB_DIR/build-image.sh")
if [ -n "$nbpid" ]; then
	wait "$nbpid" || die "netbuf build failed; XENLAB_NETBUF=0 skips it"
fi
args=()
[ "${XENLAB_NETBUF:-1}" = 1 ] && [ -f "$NETBUF_DIR/.xenlab-done" ] && args+=(--netbuf "$NETBUF_DIR")
log "images ready after $((SECONDS - t0)) s; booting host 1"
python3 "$XENLAB_DIR/xenlab.py" boot 1 --image "$image" --share "$share" "${args[@]}" \
	--timeout "${XENLAB_BOOT_TIMEOUT:-300}"
log "xenlab-up done in $((SECONDS - t0)) s"
