# Every target creates the virtual environment when it is missing (torch comes from local wheels here).
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup test test-slow bench reproduce clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)  ## the fast suite (what CI runs)
	$(PY) -m pytest -m "not slow" -q

test-slow: $(STAMP)  ## the checks too long for every run
	$(PY) -m pytest -m slow -q

bench: $(STAMP)  ## optimizer step time and state size against torch.optim.Adam
	$(PY) scripts/bench_optimizers.py

reproduce: $(STAMP)  ## the embedded main job: every toy experiment -> results/toy/ (JSON, Figures 1-5, README.md)
	$(PY) -m experiments.toy

clean:
	rm -rf $(VENV) .pytest_cache
