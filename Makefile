# redrain: make run | make test | make sim | make bench | make lint | make fuzz
GO        ?= go
BIN       := bin/redrain
FUZZTIME  ?= 20s
DATA_DIR  ?= ./data
HTTP      ?= :8080
SEEDS     ?= 1000
SEED      ?=
WITHDRAW_MIN ?= 1

.PHONY: run build test test-deps unit sim e2e bench lint fuzz clean

# A complete node on embedded defaults: Kafka-protocol broker, TiKV test
# cluster and Redis protocol server in process, data under $(DATA_DIR);
# withdrawals pay through a payout test channel in process, "test", from
# 1 fen (the demo's packets are 1..200 fen).
run: build
	$(BIN) serve --data-dir $(DATA_DIR) --http $(HTTP) --withdraw-min $(WITHDRAW_MIN)

build:
	$(GO) build -o $(BIN) ./cmd/redrain

# Everything CI runs: formatting and vet, unit and integration tests under
# the race detector (against a real redis-server), the simulation of the
# whole pipeline under faults (SEEDS seeds), then the end-to-end tests (real
# node processes killed, paused and cut off mid-rain).
test: test-deps lint unit sim e2e

# Installs what the tests need when it is missing.
test-deps:
	@missing=""; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	command -v kcat >/dev/null 2>&1 || missing="$$missing kcat"; \
	command -v protoc >/dev/null 2>&1 || missing="$$missing protobuf-compiler"; \
	command -v etcd >/dev/null 2>&1 || missing="$$missing etcd-server"; \
	command -v promtool >/dev/null 2>&1 || missing="$$missing prometheus"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

unit:
	$(GO) test -race -count=1 -timeout 20m $$($(GO) list ./... | grep -v /e2e)

# The whole grant and booking pipeline simulated under faults, one seed
# after another in virtual time (1,000 seeds in ~20 s on two cores).
# `make sim SEEDS=N` runs more; `make sim SEED=N` replays one with its log.
sim:
ifeq ($(SEED),)
	sim/seeds.sh $(SEEDS) $(GO)
else
	$(GO) test -count=1 -timeout 30m -run TestSimulation ./sim/ -sim.seed=$(SEED) -v
endif

e2e:
	$(GO) test -count=1 -timeout 30m -v ./e2e/

# Micro-benchmarks of the hot paths. For whole-node figures run a node
# (make run) and then: $(BIN) bench --target http://127.0.0.1:8080
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./ledger/ ./tokens/ ./ingress/ ./bench/ ./booking/ ./lines/

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

# Every fuzz target for $(FUZZTIME) each.
fuzz:
	@for pkg in ./tokens ./ingress ./ledger ./bench ./adminauth ./presentation ./lines; do \
		for f in $$($(GO) test -list 'Fuzz.*' $$pkg | grep '^Fuzz'); do \
			echo "fuzz $$pkg $$f"; \
			$(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
		done; \
	done

clean:
	rm -rf bin
