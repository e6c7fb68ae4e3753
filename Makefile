# wharf — see README.md. `make run` starts a dev registry; `make test` runs every test.
GO      ?= go
BIN     := bin/wharf
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
LDFLAGS := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
DOCKER  ?= docker
CA_BUNDLE ?= /etc/ssl/certs/ca-certificates.crt

.PHONY: build run test unit e2e bench lint fuzz clean dist image

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
	@# issue #10: no function of gateway/ (tests included) or of cmd/ (tests aside) above cyclomatic complexity 25
	@out=$$($(GO) run github.com/fzipp/gocyclo/cmd/gocyclo@v0.6.0 -over 25 gateway/; \
	  $(GO) run github.com/fzipp/gocyclo/cmd/gocyclo@v0.6.0 -over 25 -ignore '_test\.go$$' cmd/); \
	  test -z "$$out" || { echo "$$out"; echo 'gocyclo: split these functions'; exit 1; }

# Short fuzzing of every parser (FUZZTIME=30s make fuzz for longer).
FUZZTIME ?= 10s
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

# Static release binaries (no cgo) with the version stamped, and their
# checksums in sha256sum format: cd dist && sha256sum -c SHA256SUMS.
dist:
	rm -rf dist && mkdir -p dist
	for arch in amd64 arm64; do \
	  CGO_ENABLED=0 GOOS=linux GOARCH=$$arch $(GO) build -trimpath -ldflags '$(LDFLAGS)' \
	    -o dist/wharf-$(VERSION)-linux-$$arch ./cmd/wharf || exit 1; \
	done
	cd dist && sha256sum wharf-$(VERSION)-linux-* > SHA256SUMS
	cat dist/SHA256SUMS

# The container image, built offline: the static binary and this machine's
# CA bundle in a FROM scratch image (deploy/Dockerfile.scratch), tagged
# wharf:$(VERSION) and wharf:latest. DOCKER_HOST picks the daemon.
image:
	rm -rf build/image && mkdir -p build/image/var-lib-wharf
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o build/image/wharf ./cmd/wharf
	cp $(CA_BUNDLE) build/image/ca-certificates.crt
	cp deploy/gateway.toml build/image/gateway.toml
	$(DOCKER) build -f deploy/Dockerfile.scratch --build-arg VERSION=$(VERSION) \
	  -t wharf:$(VERSION) -t wharf:latest build/image

clean:
	rm -rf bin dist build
