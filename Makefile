# xl-kemari — see README.md. All targets work on a fresh Debian 12 machine
# with Go 1.26; nothing here needs Xen except the xenlab targets.
GO      ?= go
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
PREFIX  ?= /usr/local
DESTDIR ?=
SEEDS   ?= 10000
SBINDIR ?= $(PREFIX)/sbin
SHIMDIR ?= /usr/local/sbin# before /usr/sbin in root's PATH; never /usr/sbin
UNITDIR ?= $(PREFIX)/lib/systemd/system
INITDIR ?= /etc/init.d

.PHONY: all build test demo bench fuzz verify man clean install

all: build

build:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o bin/xl-kemari ./xlkemari

# Tiers 1-4 and 6 (short): unit, scenario, contract, the seeded cluster
# harness over $(SEEDS) seeds, the multi-process kill test, short fuzzing.
test: build
	$(GO) vet ./...
	$(GO) test -count=1 ./...
	$(GO) test -count=1 -timeout 20m ./checkpoint/checkpointtest -run 'TestCluster$$' -seeds $(SEEDS)
	$(MAKE) fuzz FUZZTIME=5s

demo: build
	./bin/xl-kemari demo

bench: build
	$(GO) run ./bench
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
	$(GO) mod tidy -diff

man:
	mandoc -T lint -W warning man/xl-kemari.cfg.5 man/xl-kemari.1

install: build
	@test "$(SHIMDIR)" != /usr/sbin || { echo "SHIMDIR=/usr/sbin would replace the real xl" >&2; exit 1; }
	install -D -m 0755 bin/xl-kemari $(DESTDIR)$(SBINDIR)/xl-kemari
	install -D -m 0755 dist/xl $(DESTDIR)$(SHIMDIR)/xl
	install -D -m 0644 man/xl-kemari.1 $(DESTDIR)$(PREFIX)/share/man/man1/xl-kemari.1
	install -D -m 0644 man/xl-kemari.cfg.5 $(DESTDIR)$(PREFIX)/share/man/man5/xl-kemari.cfg.5
	install -D -m 0644 dist/kemari.toml.example $(DESTDIR)$(PREFIX)/share/doc/xl-kemari/kemari.toml.example
	install -d $(DESTDIR)$(UNITDIR) $(DESTDIR)$(INITDIR)
	for u in xl-kemari-listen.service xl-kemari@.service xl-kemari-autostart.service; do \
		sed 's|@SBINDIR@|$(SBINDIR)|g' dist/systemd/$$u.in > $(DESTDIR)$(UNITDIR)/$$u && chmod 0644 $(DESTDIR)$(UNITDIR)/$$u || exit 1; done
	sed 's|@SBINDIR@|$(SBINDIR)|g' dist/init.d/xl-kemari.in > $(DESTDIR)$(INITDIR)/xl-kemari && chmod 0755 $(DESTDIR)$(INITDIR)/xl-kemari

clean:
	rm -rf bin
include test/xenlab/xenlab.mk
