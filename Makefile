# geofusion: the two commands a new user needs are `make reports` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PROFILE ?= quick

.PHONY: reports sweeps test test-cpu-paths lint benchmark clean smoke-full cost-full

# The venv is (re)built when pyproject.toml changes. torch is pinned so that pip takes the
# CPU wheel on disk here instead of pulling a multi-GB CUDA build of a newer release.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev,grib]"
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

## Run every numbered notebook on the embedded (synthetic) default and render reports/.
## REPORT_JOBS notebooks run side by side (each when the notebooks it needs are done, one
## thread per kernel on 2 cores; geofusion.reporting.scheduling.NOTEBOOK_PREREQUISITES, as
## tasks on a local dask.distributed cluster; README "Running on a cluster"); 1: one by one.
REPORT_JOBS ?= 2
reports: $(VENV)/.installed
	$(PY) -m geofusion.pipeline --profile $(PROFILE) --jobs $(REPORT_JOBS)

## The full profile's code path end to end before any GPU time: every notebook with the full
## architectures and settings (ResNet-18 width 64, batch 128, latent 1000, the report's views,
## full-size decoders, LSTM, fusion, assimilation and diffusion) on five synthetic years, one
## epoch, a handful of evaluation days, on the CPU (profile `smoke`,
## geofusion.experiments.profiles.smoke_profile); fails on any error. Reports in runs/smoke/.
smoke-full: $(VENV)/.installed
	$(PY) -m geofusion.pipeline --profile smoke --jobs $(REPORT_JOBS) --output-dir runs/smoke/reports

## Projected training time and peak memory of the full profile, measured on this machine.
cost-full: $(VENV)/.installed
	$(PY) -m geofusion.pipeline cost --profile full --cost-output reports/benchmarks/full_cost.md

## The report's hyper-parameter sweeps (Barlow Twins lambda, SimCLR / SupCon temperature).
sweeps: $(VENV)/.installed
	$(PY) -m geofusion.pipeline sweeps --profile $(PROFILE)

## Run the test suite (CPU only, well under 15 minutes on 2 cores). The browser tests
## (pytest -m browser) drive Debian's Chromium, installed here where apt-get runs as root.
## One pytest-xdist worker per core (TEST_WORKERS=0: serial); --dist loadfile keeps each test
## file on one worker, so its module-scoped fixtures (e.g. the 10-year world of
## tests/test_synthetic.py) are built once. Every test writes under its own tmp_path and the
## browser tests take free ports, so the workers share nothing. The full-size smoke notebooks
## (marker full_smoke, tests/notebooks/test_full_smoke.py; 09 alone 10 min on 2 cores) are skipped
## here: `make test TEST_MARKERS=` runs them too, or `pytest -m full_smoke` alone.
TEST_WORKERS ?= 2
TEST_MARKERS ?= not full_smoke
test: $(VENV)/.installed
	bash scripts/install_browser.sh
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "$(TEST_MARKERS)" tests

## The numerical tests again on a second CPU code path: torch's portable kernels
## (ATEN_CPU_CAPABILITY=default instead of the machine's best, AVX2 / AVX-512) at two intra-op
## threads instead of one, so that a pass on one machine stands for others (CONTRIBUTING.md).
NUMERICAL_TESTS ?= tests/data tests/downstream tests/experiments tests/learning tests/models \
	tests/verification tests/world tests/test_grids.py tests/test_leaks.py tests/test_reproducibility.py
test-cpu-paths: $(VENV)/.installed
	ATEN_CPU_CAPABILITY=default GEOFUSION_TEST_THREADS=2 \
	  $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile $(NUMERICAL_TESTS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check lib tests benchmarks scripts notebooks

benchmark: $(VENV)/.installed
	$(PY) benchmarks/train_step.py

clean:
	rm -rf runs reports/*.html reports/*.ipynb
