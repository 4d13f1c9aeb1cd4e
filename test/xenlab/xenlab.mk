# xenlab: real Xen 4.17 hosts in QEMU (test/xenlab/README.md).
# Included from the top-level Makefile; paths are relative to the repo root.
# Needs root, qemu-system-x86, qemu-utils and debootstrap.

XENLAB := test/xenlab
XENLAB_PY ?= python3

.PHONY: xenlab-up xenlab-test xenlab-down xenlab-netbuf xenlab-baseline-2host xenlab-clean \
	xenlab-kemari-bin xenlab-bench xenlab-failover xenlab-soak

## xenlab-up: build (cached) and boot one Xen host; shares bin/ at /mnt/host
xenlab-up:
	$(XENLAB)/up.sh

## xenlab-test: upstream xl remus baseline on the running host -> test/xenlab/results/
xenlab-test:
	$(XENLAB_PY) $(XENLAB)/baseline.py

## xenlab-down: stop every xenlab QEMU and relay (by pid file)
xenlab-down:
	$(XENLAB_PY) $(XENLAB)/xenlab.py down

## xenlab-netbuf: build only the netbuf-enabled libxenlight (xenlab-up does it too)
xenlab-netbuf:
	$(XENLAB)/build-netbuf.sh

## xenlab-baseline-2host: two hosts, host1's QEMU killed mid-replication (~5 min)
xenlab-baseline-2host:
	$(XENLAB_PY) $(XENLAB)/baseline.py --two-host

# The share dom0 sees at /mnt/host (up.sh: XENLAB_SHARE, else bin/).
XENLAB_SHARE_DIR = $(or $(XENLAB_SHARE),bin)

## xenlab-kemari-bin: the xen build of xl-kemari (cgo, libxen-dev) into the share
xenlab-kemari-bin:
	mkdir -p $(XENLAB_SHARE_DIR)
	$(GO) build -tags xen -ldflags "-X main.version=$(VERSION)" -o $(XENLAB_SHARE_DIR)/xl-kemari ./xlkemari

## xenlab-bench: xl remus vs xl-kemari on one host, 25/100/200 ms (~35 min) -> results/bench.{md,json}
xenlab-bench: xenlab-kemari-bin xenlab-up
	$(XENLAB_PY) $(XENLAB)/bench.py

## xenlab-failover: two hosts; xl-kemari and xl remus, sender killed and host killed (~15 min) -> results/failover.{md,json}
xenlab-failover: xenlab-kemari-bin
	$(XENLAB_PY) $(XENLAB)/failover.py

## xenlab-soak: two hosts; xl-kemari at --timeout=2s under load for 10 min, counts false failovers (~13 min) -> results/soak.{md,json}
xenlab-soak: xenlab-kemari-bin
	$(XENLAB_PY) $(XENLAB)/soak.py

## xenlab-clean: stop the lab and delete its cache (/var/cache/xenlab)
xenlab-clean: xenlab-down
	$(XENLAB)/clean.sh
