# xenlab: real Xen 4.17 hosts in QEMU (test/xenlab/README.md).
# Included from the top-level Makefile; paths are relative to the repo root.
# Needs root, qemu-system-x86, qemu-utils and debootstrap.

XENLAB := test/xenlab
XENLAB_PY ?= python3

.PHONY: xenlab-up xenlab-test xenlab-down xenlab-netbuf xenlab-baseline-2host xenlab-clean

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

## xenlab-clean: stop the lab and delete its cache (/var/cache/xenlab)
xenlab-clean: xenlab-down
	$(XENLAB)/clean.sh
