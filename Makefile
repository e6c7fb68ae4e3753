# wharf — see README.md. `make run` starts a dev registry; `make test` runs every test.
GO      ?= go
BIN     := bin/wharf
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)

.PHONY: build run test unit e2e bench lint fuzz clean

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/wharf

run: build
	./$(BIN) serve

# Unit tests (race detector) and then the real-client end-to-end tests.
test: lint
	$(GO) test -race -count=1 -timeout 20m $$($(GO) list ./... | grep -v /e2e)
	$(GO) test -count=1 -timeout 25m ./e2e/...

bench:
	bench/run

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo 'gofmt needed'; exit 1; }
	$(GO) vet ./...
	@# issue #10: no function of gateway/ above cyclomatic complexity 25 (tests aside)
	@out=$$($(GO) run github.com/fzipp/gocyclo/cmd/gocyclo@v0.6.0 -over 25 -ignore '_test\.go$$' gateway/ cmd/); \
	  test -z "$$out" || { echo "$$out"; echo 'gocyclo: split these functions'; exit 1; }

# Short fuzzing of every parser (FUZZTIME=30s make fuzz for longer).
FUZZTIME ?= 10s
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

clean:
	rm -rf bin
