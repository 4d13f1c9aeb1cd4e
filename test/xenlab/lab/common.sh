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

# field NAME LINE prints NAME's value from a status line.
field() { sed -n "s/.*[ ^]$1=\([^ ]*\).*/\1/p" <<<" $2"; }

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

# ping_stats COUNT INTERVAL prints '"loss_pct": L, "min_ms": .., "avg_ms": .., "max_ms": ..'.
ping_stats() {
	ping -n -q -c "$1" -i "$2" -W 2 "$GUEST_IP" 2>/dev/null | awk '
		/packet loss/ { for (i = 1; i <= NF; i++) if ($i ~ /%$/) { loss = $i; sub(/%/, "", loss) } }
		/^rtt|^round-trip/ { split($4, a, "/"); min = a[1]; avg = a[2]; max = a[3] }
		END { if (min == "") { min = "null"; avg = "null"; max = "null" } if (loss == "") loss = 100;
		      printf "\"loss_pct\": %s, \"min_ms\": %s, \"avg_ms\": %s, \"max_ms\": %s", loss, min, avg, max }'
}

# service_stats COUNT prints the guest service's round-trip times in ms
# (connect, request, reply) as '"svc_avg_ms": .., "svc_max_ms": .., "svc_fail": n'.
service_stats() {
	local i t0 t sum=0 max=0 ok=0 fail=0
	for i in $(seq "$1"); do
		t0=$(now_ms)
		if query >/dev/null; then
			t=$(($(now_ms) - t0))
			sum=$((sum + t))
			ok=$((ok + 1))
			[ "$t" -gt "$max" ] && max=$t
		else
			fail=$((fail + 1))
		fi
	done
	[ "$ok" -gt 0 ] || ok=1
	printf '"svc_avg_ms": %d, "svc_max_ms": %d, "svc_fail": %d' $((sum / ok)) "$max" "$fail"
}
