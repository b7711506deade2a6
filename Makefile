# stagehand: the two commands of the README, and the rest.
SHELL := /bin/bash
GO ?= go
BIN := bin
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)

.PHONY: all build test unit fuzz demo bench harness harness-down vet clean

all: build

# Static binaries: they start faster (no dynamic loader; gitlab-runner
# starts a hook per stage of every job) and run on any runner host.
build:
	CGO_ENABLED=0 $(GO) build -ldflags "-X main.version=$(VERSION)" -o $(BIN)/ . ./cmd/stagehand-worker ./cmd/stagehand-config ./cmd/stagehand-deploy

# Starts (installing what is missing) the real components, then runs every
# test against them: the packages' own tests under the race detector (a
# build is goroutines around an engine, a registry and the API server),
# then the end-to-end tests, which run the built binaries.
test: harness vet
	$(GO) test -count=1 -race -timeout 30m $$($(GO) list ./... | grep -v /e2e)
	$(GO) test -count=1 -timeout 30m ./e2e/...
	$(MAKE) fuzz

# A short run of every fuzz target (the seeds in testdata/ run with the
# tests anyway): bad input gives errors, never panics. Each runs a number
# of inputs, about 10 s here, rather than for a duration: with a duration,
# Go 1.26's fuzzing coordinator can fail a clean run with "context deadline
# exceeded" as the time runs out (golang/go#75804, fixed in Go 1.27).
# FUZZTIME=30s (a duration or a count) overrides them all.
FUZZ_CONFIG ?= 6000x
FUZZ_TEMPLATE ?= 20000x
FUZZ_GITLAB ?= 300000x
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParseConfig$$' -fuzztime $(or $(FUZZTIME),$(FUZZ_CONFIG)) ./config/
	$(GO) test -run '^$$' -fuzz '^FuzzRenderTemplate$$' -fuzztime $(or $(FUZZTIME),$(FUZZ_TEMPLATE)) ./config/
	$(GO) test -run '^$$' -fuzz '^FuzzSlug$$' -fuzztime $(or $(FUZZTIME),$(FUZZ_GITLAB)) ./gitlab/
	$(GO) test -run '^$$' -fuzz '^FuzzDeriveEnv$$' -fuzztime $(or $(FUZZTIME),$(FUZZ_GITLAB)) ./gitlab/

# Tests that need nothing but Go.
unit:
	$(GO) test -count=1 $$($(GO) list ./... | grep -v /e2e)

vet:
	$(GO) vet ./...

# The main job end to end: the real gitlab-runner runs a sample pipeline
# through stagehand against the local Docker Engine and registry.
demo: harness
	$(GO) run ./e2e/cmd/demo

bench: harness
	$(GO) test -count=1 -run '^$$' -bench . -benchtime 1x -timeout 30m ./e2e/

harness:
	scripts/harness.sh up

harness-down:
	scripts/harness.sh down

clean:
	rm -rf bin
