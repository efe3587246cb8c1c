# gcl-orchestrator: everything a fresh machine needs goes through these targets.
#   make demo   set up, then run the analytics pipeline on the bundled weather data on the embedded default store,
#               a local directory
#   make test   set up (Debian's chromium too, for the live page), then run the whole test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
DEMO_STORE ?= demo-store

.PHONY: setup browser demo demo-local demo-s3 demo-ml demo-sim demo-tree test test-fast bench bench-full bench-scale reliability soak clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "gcl-orchestrator needs Python >= 3.11; set PYTHON=python3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,test,bench,packs,dask]'
	@rm -f $(VENV)/.installed-*
	@touch $@

# The main job on the embedded default, a local directory (no server at all): the bundled CSV is copied in, the
# pipeline runs until idle, then the status and the report are printed.
demo: $(STAMP)
	rm -rf $(DEMO_STORE)
	mkdir -p $(DEMO_STORE)/incoming
	cp handlers/data/seattle-weather.csv $(DEMO_STORE)/incoming/
	$(BIN)/gclo run --store $(DEMO_STORE) --handlers handlers/analytics.py --rules handlers/rules.yaml --until-idle
	@echo
	$(BIN)/gclo status --store $(DEMO_STORE)
	@echo
	@cat $(DEMO_STORE)/reports/seattle-weather.md

demo-local: demo

# The same pipeline through the S3 protocol end to end: gclo dev starts SeaweedFS on 127.0.0.1, uploads the CSV,
# runs the pipeline until idle, prints the status and the report, and stops the server.
demo-s3: $(STAMP)
	$(BIN)/gclo dev --handlers handlers/analytics.py --rules handlers/rules.yaml \
		--put handlers/data/seattle-weather.csv incoming/seattle-weather.csv \
		--until-idle --show reports/seattle-weather.md

# The use-case packs, each on a local directory (handlers/packs/, README "Use-case packs"): the run's log shows the
# graph growing, then the report; the exit code says whether the result is right.
demo-ml: $(STAMP)
	$(BIN)/python handlers/packs/demo.py ml

demo-sim: $(STAMP)
	$(BIN)/python handlers/packs/demo.py sim

demo-tree: $(STAMP)
	$(BIN)/python handlers/packs/demo.py tree

# The live page's tests drive Debian's Chromium (the browser is never downloaded by a test tool).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@command -v chromium >/dev/null 2>&1 || { echo "installing Debian's chromium for the live page's tests"; \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 || \
		{ $(SUDO) apt-get update -q >/dev/null && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; } || \
		{ echo "could not install chromium (apt-get install chromium); the live page's tests will fail"; exit 1; }; }

test: $(STAMP) browser
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m 'not e2e'

# Benchmarks print each figure next to its target and write JSON to bench/results/ (see README, "Speed").
bench: $(STAMP)
	$(BIN)/python bench/run.py

bench-full: $(STAMP)
	$(BIN)/python bench/run.py --full

# At scale (README, "Speed"): a tree fan-out end to end at 10k and 100k computations, then restarts of the finished
# store; a 30,000-part fan-in; the tree at 100k on a SeaweedFS of its own. SIZES=10000,100000,1000000 for the
# million, SEAWEEDFS=0 to leave SeaweedFS out.
SIZES ?= 10000,100000
SEAWEEDFS ?= 100000
bench-scale: $(STAMP)
	$(BIN)/python bench/scale.py --sizes $(SIZES) --seaweedfs $(SEAWEEDFS)

# The fault suite: kill -9, lost workers, chaotic notifications, late writers, an S3 outage, on the local store and
# SeaweedFS. Prints scenario, runs, faults, computations, lost, duplicated, re-executions (see README, "Reliability").
reliability: $(STAMP)
	$(BIN)/python reliability/run.py

soak: $(STAMP)
	$(BIN)/python reliability/run.py --profile soak

clean:
	rm -rf $(VENV) $(DEMO_STORE) demo-ml-store demo-sim-store demo-tree-store .pytest_cache *.egg-info
