# xl-kemari — see README.md. All targets work on a fresh Debian 12 machine
# with Go 1.26; nothing here needs Xen except the xenlab targets.
GO      ?= go
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
PREFIX  ?= /usr/local
DESTDIR ?=
SEEDS   ?= 10000

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
	$(GO) test -run '^$$' -fuzz '^FuzzParseXLCfg$$' -fuzztime $(FUZZTIME) ./conf
	$(GO) test -run '^$$' -fuzz '^FuzzParseKemariSpec$$' -fuzztime $(FUZZTIME) ./conf

verify:
	test -z "$$(gofmt -l $$(git ls-files '*.go'))"
	$(GO) vet ./...
	$(GO) mod tidy -diff

man:
	mandoc -T lint -W warning man/xl-kemari.cfg.5

install: build
	install -D -m 0755 bin/xl-kemari $(DESTDIR)$(PREFIX)/sbin/xl-kemari
	install -D -m 0644 man/xl-kemari.cfg.5 $(DESTDIR)$(PREFIX)/share/man/man5/xl-kemari.cfg.5

clean:
	rm -rf bin
include test/xenlab/xenlab.mk
