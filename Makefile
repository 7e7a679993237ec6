# Every target creates the virtual environment when it is missing (torch comes from local wheels here).
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The sweep targets' own runs (deleted and rewritten by each target): never the runs/ of your own commands.
SWEEPS := runs/make_sweeps

.PHONY: setup test test-slow bench bench-training bench-sharded check-gpu reproduce synthetic-sweep lm-sweep clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,experiments]' -c constraints.txt
	touch $(STAMP)

# Two pytest workers of one thread each (pytest-xdist): the 2 cores are kept busy while a test waits on
# its subprocesses, and the suite takes 6 minutes instead of 9.
test: $(STAMP)  ## the fast suite (what CI runs)
	OMP_NUM_THREADS=1 $(PY) -m pytest -m "not slow" -q -n 2

test-slow: $(STAMP)  ## the checks too long for every run
	$(PY) -m pytest -m slow -q

bench: $(STAMP)  ## step time of the CM optimizers, eager and compiled, against torch.optim.Adam (both)
	$(PY) scripts/bench_optimizers.py

# Targets that run several processes at once give each one thread (the cores are shared, not multiplied).
reproduce: $(STAMP)  ## the embedded main job: every toy experiment -> results/toy/ (JSON, Figures 1-5, README.md)
	OMP_NUM_THREADS=1 $(PY) -m experiments.toy

check-gpu: $(STAMP)  ## on a GPU: optimizer steps vs fused/compiled Adam, a sync-free captured step, 200 bf16 steps per runner and strategy -> results/bench/gpu.md (one line and exit 0 without a GPU)
	$(PY) scripts/check_gpu.py --out results/bench

bench-sharded: $(STAMP)  ## optimizer state per process and step time under FSDP2 for 1, 2, 4 processes -> results/bench/sharded.md
	OMP_NUM_THREADS=1 $(PY) scripts/bench_sharded.py --out results/bench

bench-training: $(STAMP)  ## a whole ResNet-18 training step with adam_cm against adam
	$(PY) scripts/bench_training.py

synthetic-sweep: $(STAMP)  ## the runner end to end: 5 optimizers x 3 seeds on synthetic data -> results/
	rm -rf $(SWEEPS)/synthetic
	$(PY) -m experiments.image_classification -m experiment=synthetic runs_dir=$(SWEEPS) \
		optimizer=adam,adam_cg,adam_cm,sam_adam,sam_adam_cm seed=0,1,2
	$(PY) scripts/collect_results.py $(SWEEPS)/synthetic --out results/image_classification_synthetic

lm-sweep: $(STAMP)  ## the language-modelling runner end to end: 5 optimizers x 3 seeds on the embedded Markov-chain text
	rm -rf $(SWEEPS)/synthetic_lm
	$(PY) -m experiments.language_modeling -m experiment=synthetic_lm runs_dir=$(SWEEPS) \
		optimizer=adam,adam_cg,adam_cm,sam_adam,sam_adam_cm seed=0,1,2
	$(PY) scripts/collect_results.py $(SWEEPS)/synthetic_lm --out results/language_modeling_synthetic

clean:
	rm -rf $(VENV) .pytest_cache

.PHONY: online-sweep
online-sweep: $(STAMP)  ## online learning end to end: 5 optimizers x 5 seeds on synthetic_tasks -> results/
	rm -rf $(SWEEPS)/synthetic_tasks
	OMP_NUM_THREADS=1 $(PY) -m experiments.online_learning -m experiment=synthetic_tasks runs_dir=$(SWEEPS) \
		optimizer=adam,adam_cg,adam_cm,sam_adam,sam_adam_cm seed=0,1,2,3,4
	$(PY) scripts/collect_results.py $(SWEEPS)/synthetic_tasks --out results/online_learning_synthetic
