# polnet: `make demo` and `make test` work on a fresh machine (they build .venv first).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# torch is pinned exactly here (a CPU build ships on the dev machines; a looser pin
# pulls a multi-GB CUDA build). The project itself accepts a range that admits it.
TORCH := torch==2.13.0

.PHONY: demo test test-fast lint bench clean fuzz

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[dev]'
	@# py-libp2p pulls in trio-typing, whose trio-stubs describe trio 0.2x and shadow trio's
	@# own inline types (TaskStatus, to_thread's abandon_on_cancel): type-check against trio.
	rm -rf $(VENV)/lib/python*/site-packages/trio-stubs
	@touch $(STAMP)

# The market on the real stack in netsim (seconds), then the same with real daemons:
# separate processes on loopback with py-libp2p, sqlite and torch (a few minutes).
demo: $(STAMP)
	$(BIN)/polnet demo
	$(BIN)/polnet swarm up --nodes 6 --tasks 2 --cheaters 1 --private

# --dist loadgroup: the suites marked xdist_group("heavy-daemons") share one worker, so
# two networks of daemon processes never compete for the two cores at once.
test: $(STAMP) lint
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup --timeout=600 tests

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup -m "not slow" tests

lint: $(STAMP)
	$(BIN)/ruff check protocol node netsim cli tests bench
	$(BIN)/mypy --strict protocol node netsim cli
	$(BIN)/lint-imports

bench: $(STAMP)
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

fuzz: $(STAMP)
	$(BIN)/python -m tests.fuzz_envelope --seconds 60

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
