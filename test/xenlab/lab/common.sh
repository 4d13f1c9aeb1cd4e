# Helpers for the dom0-side lab scripts; sourced.
GUEST_IP=192.0.2.100
DISK_FILE=/var/lib/xenlab/domu-disk.img

now_ms() { echo $(($(date +%s%N) / 1000000)); }

# query prints the guest service's status line; fails if it does not answer.
query() {
	local r
	r=$(nc -N -w 3 "$GUEST_IP" 7 </dev/null 2>/dev/null) || return 1
	case $r in xenlab*) echo "$r" ;; *) return 1 ;; esac
}

# wait_service TIMEOUT polls the service until it answers: readiness by the
# guest's own answer, not by a guessed delay.
wait_service() {
	local end=$(($(now_ms) + $1 * 1000))
	until query >/dev/null; do
		[ "$(now_ms)" -lt "$end" ] || return 1
		sleep 0.2
	done
}

disk_file() {
	[ -f "$DISK_FILE" ] || truncate -s 16M "$DISK_FILE"
}

# domains prints "name:state" for every domain, for reports.
domains() { xl list 2>/dev/null | awk 'NR > 1 { printf "%s%s:%s", sep, $1, $5; sep = " " }'; }
