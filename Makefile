# xl-kemari — see README.md. All targets work on a fresh Debian 12 machine
# with Go 1.26; nothing here needs Xen except the xenlab targets.
#
# The Xen backend (libxl/xen, cgo) is built in when pkg-config finds Xen's
# libraries (apt-get install libxen-dev): XEN=1 requires them, XEN=0 builds
# the simulator-only binary on purpose. Without them `build` warns loudly
# and `install` refuses, unless told XEN=0.
GO      ?= go
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
PREFIX  ?= /usr/local
DESTDIR ?=
# Harness seeds for make test: under -race the harness runs about 100
# seeds a minute (it runs on one P; measured on the shared 2-core machine),
# so 600 take ~6 min and keep make test under 20 minutes with the rest of
# the suite (go test -race ./... ~6-10 min there). Every mutant of make
# mutants is caught well inside this budget.
SEEDS   ?= 600
# make mutants: seeds each mutant may take to be caught (the CI budget).
MUTANT_SEEDS ?= $(SEEDS)
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
SBINDIR ?= $(PREFIX)/sbin
SHIMDIR ?= /usr/local/sbin# before /usr/sbin in root's PATH; never /usr/sbin
UNITDIR ?= $(PREFIX)/lib/systemd/system
INITDIR ?= /etc/init.d
XENSCRIPTDIR ?= /etc/xen/scripts# block-kemari, the disk front's hotplug script
XEN_PKGS = xenlight xencontrol xenguest xenforeignmemory xentoollog
XEN     ?= $(shell pkg-config --exists $(XEN_PKGS) 2>/dev/null && echo 1 || echo 0)
GOTAGS   = $(if $(filter 1,$(XEN)),-tags xen)
GOBUILDFLAGS ?=
GOLDFLAGS ?=
BENCHOUT ?= bin/bench# untracked; make bench BENCHOUT=bench refreshes the committed snapshot

.PHONY: all build test demo bench fuzz verify mutants man clean install install-files deb

all: build

build:
ifeq ($(XEN),1)
	@pkg-config --exists $(XEN_PKGS) || { echo "make: XEN=1 but pkg-config does not find $(XEN_PKGS): apt-get install libxen-dev" >&2; exit 1; }
else
	@echo "*****************************************************************************" >&2
	@echo "WARNING: building WITHOUT the Xen backend (simulator only; XEN=$(XEN))." >&2
	@echo "  This xl-kemari cannot protect a Xen domain: --hypervisor=xen will fail." >&2
	@echo "  For the real thing: apt-get install libxen-dev, then make build again" >&2
	@echo "  (it then builds with -tags xen), or make deb for a Debian package." >&2
	@echo "*****************************************************************************" >&2
endif
	$(GO) build $(GOTAGS) $(GOBUILDFLAGS) -ldflags "-X main.version=$(VERSION) $(GOLDFLAGS)" -o bin/xl-kemari ./xlkemari

# Tiers 1-4 and 6 (short): unit, scenario, contract, the seeded cluster
# harness over $(SEEDS) seeds, the multi-process kill test, short fuzzing;
# all under the race detector. Then the partition and stall suites in
# network namespaces (as root; they skip saying why otherwise), last, alone
# and without -race: 204 seeded trials with 200 ms timeouts, ~2-3 min on 2
# cores (test/netns/partition_test.go; KEMARI_PARTITION_SEED reruns one).
test: build
	$(GO) vet ./...
	$(GO) test -race -count=1 ./...
	$(GO) test -race -count=1 -timeout 20m ./checkpoint/checkpointtest -run 'TestCluster$$' -seeds $(SEEDS)
	$(GO) test -count=1 ./checkpoint/checkpointtest -run 'TestReproducible$$'
	$(MAKE) fuzz FUZZTIME=5s
	$(GO) test -count=1 -timeout 15m ./test/netns -run '^(TestPartition|TestStall)$$' -partition

# The mutation check: deliberate bugs applied to a copy of the tree, each
# of which the harness must catch within $(MUTANT_SEEDS) seeds; prints the
# seeds each one took (checkpoint/checkpointtest/mutants_test.go).
mutants:
	$(GO) test -tags mutants -count=1 -timeout 120m -v ./checkpoint/checkpointtest -run '^TestMutants$$' -mutant-seeds $(MUTANT_SEEDS)

demo: build
	./bin/xl-kemari demo

# Results go to $(BENCHOUT)/results.{json,txt}; the committed
# bench/results.* are snapshots, refreshed on purpose (BENCHOUT=bench).
bench: build
	mkdir -p $(BENCHOUT)
	$(GO) run ./bench -out $(BENCHOUT)/results.json | tee $(BENCHOUT)/results.txt
	$(GO) test -run '^$$' -bench Release -benchtime 20x ./netbuf/...

FUZZTIME ?= 10s
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzReader$$' -fuzztime $(FUZZTIME) ./checkpoint/wire
	$(GO) test -run '^$$' -fuzz '^FuzzPages$$' -fuzztime $(FUZZTIME) ./checkpoint/wire
	$(GO) test -run '^$$' -fuzz '^FuzzStandbyStream$$' -fuzztime $(FUZZTIME) ./checkpoint
	$(GO) test -run '^$$' -fuzz '^FuzzParseXLCfg$$' -fuzztime $(FUZZTIME) ./conf
	$(GO) test -run '^$$' -fuzz '^FuzzParseKemariSpec$$' -fuzztime $(FUZZTIME) ./conf

verify:
	test -z "$$(gofmt -l $$(git ls-files '*.go'))"
	$(GO) vet ./...
	$(GO) vet -tags mutants ./checkpoint/checkpointtest
	$(GO) mod tidy -diff
	$(GO) run $(STATICCHECK) ./...

man:
	mandoc -T lint -W warning man/xl-kemari.cfg.5 man/xl-kemari.1

install: build install-files

# install-files installs what build made (debian/rules uses it).
install-files:
	@test "$(SHIMDIR)" != /usr/sbin || { echo "SHIMDIR=/usr/sbin would replace the real xl" >&2; exit 1; }
	@if ./bin/xl-kemari version | grep -q '^xen backend: not built in' && [ "$(XEN)$(origin XEN)" != "0command line" ]; then \
		echo "make install: bin/xl-kemari was built without the Xen backend and cannot protect a Xen domain." >&2; \
		echo "  apt-get install libxen-dev and run make install again, or say XEN=0 to install the simulator-only build." >&2; \
		exit 1; fi
	install -D -m 0755 bin/xl-kemari $(DESTDIR)$(SBINDIR)/xl-kemari
	install -D -m 0755 dist/xl $(DESTDIR)$(SHIMDIR)/xl
	install -D -m 0755 dist/block-kemari $(DESTDIR)$(XENSCRIPTDIR)/block-kemari
	install -D -m 0644 man/xl-kemari.1 $(DESTDIR)$(PREFIX)/share/man/man1/xl-kemari.1
	install -D -m 0644 man/xl-kemari.cfg.5 $(DESTDIR)$(PREFIX)/share/man/man5/xl-kemari.cfg.5
	install -D -m 0644 dist/kemari.toml.example $(DESTDIR)$(PREFIX)/share/doc/xl-kemari/kemari.toml.example
	install -d $(DESTDIR)$(UNITDIR) $(DESTDIR)$(INITDIR)
	for u in xl-kemari-listen.service xl-kemari@.service xl-kemari-autostart.service; do \
		sed 's|@SBINDIR@|$(SBINDIR)|g' dist/systemd/$$u.in > $(DESTDIR)$(UNITDIR)/$$u && chmod 0644 $(DESTDIR)$(UNITDIR)/$$u || exit 1; done
	sed 's|@SBINDIR@|$(SBINDIR)|g' dist/init.d/xl-kemari.in > $(DESTDIR)$(INITDIR)/xl-kemari && chmod 0755 $(DESTDIR)$(INITDIR)/xl-kemari

# A Debian package (debian/, plain debhelper), built offline from the
# module cache in a copy of the tree under bin/deb/ (dpkg-buildpackage
# writes beside the source directory), then checked by lintian. The .deb
# lands in bin/deb/; test/deb/check.sh checks its contents.
DEB_OUT ?= bin/deb
deb:
	rm -rf $(DEB_OUT) && mkdir -p $(DEB_OUT)/src/xl-kemari
	git ls-files -co --exclude-standard | grep -v '^bin/' | tar -cf - -T - | tar -xf - -C $(DEB_OUT)/src/xl-kemari
	cd $(DEB_OUT)/src/xl-kemari && XLK_VERSION="$(VERSION)" GOMODCACHE="$$($(GO) env GOMODCACHE)" GOCACHE="$$($(GO) env GOCACHE)" \
		GOTOOLCHAIN=local GOPROXY=off GOFLAGS=-mod=readonly PATH="$$(dirname "$$(command -v $(GO))"):$$PATH" \
		dpkg-buildpackage -b -us -uc
	mv $(DEB_OUT)/src/*.deb $(DEB_OUT)/src/*.buildinfo $(DEB_OUT)/src/*.changes $(DEB_OUT)/
	rm -rf $(DEB_OUT)/src
	lintian --fail-on error,warning --info $(DEB_OUT)/xl-kemari_*.changes

clean:
	rm -rf bin
include test/xenlab/xenlab.mk
