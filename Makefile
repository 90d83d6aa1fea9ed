# diffrl — `make help` lists the targets.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
EXTRAS ?= dev
ARGS   ?=
# Test workers: XLA compiles on one thread and compiling dominates the tests, so one file per core
# (--dist loadfile keeps a file's tests, and the programs they share, in one process).
TEST_WORKERS ?= auto
PYTEST_PARALLEL := $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile
BUDGET   ?= quick
LAUNCHER ?= local
TABLES   ?= $(or $(DIFFRL_OUTPUTS),outputs)/tables

.DEFAULT_GOAL := help
.PHONY: help install train test test-slow test-slurm test-gpu lint bench table1 table2 shac demos ild readme clean

help: ## list the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-10s %s\n", $$1, $$2}'

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-$(EXTRAS): pyproject.toml | $(BIN)/activate
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	@touch $@

install: $(VENV)/.installed-$(EXTRAS) ## create .venv and install diffrl (editable) with EXTRAS (default: dev)

train: install ## a short default training run (CE-APG on the acrobot, quick budget); ARGS="key=value ..." to override
	$(BIN)/diffrl train $(ARGS)

test: install ## the test suite (CPU, fast; slow and GPU tests are skipped); TEST_WORKERS=0 runs them in this process
	$(PYTEST_PARALLEL) $(ARGS)

test-slow: install ## the slow tests too
	$(PYTEST_PARALLEL) -m "not gpu" $(ARGS)

# A real single-node Slurm (slurmctld, slurmd, slurmdbd) on this machine; root on Debian/Ubuntu. docs/cluster.md
test-slurm: install ## the slow Slurm test: a table sweep through a local Slurm cluster, with requeue, preemption and a cancelled job (root)
	tools/slurm_cluster.sh up
	$(BIN)/python -m pytest -m slow tests/test_slurm.py $(ARGS)

# One process, not one per core: each JAX process preallocates most of the GPU's memory.
test-gpu: ## the gpu-marked tests, on a machine with a CUDA device (installs the gpu extra); they fail where JAX sees none
	$(MAKE) install EXTRAS=dev,gpu
	$(BIN)/python -m pytest -m gpu $(ARGS)

lint: install ## ruff
	$(BIN)/ruff check diffrl cli tests benchmarks tools hydra_plugins

bench: install ## benchmarks (not tests): env, gradient and wrapper speeds, PPO/SAC Brax vs SB3; tables under benchmarks/results/
	$(BIN)/python -m benchmarks.bench_envs --quick $(ARGS)
	$(BIN)/python -m benchmarks.bench_analytic --quick $(ARGS)
	$(BIN)/python -m benchmarks.bench_apg --quick $(ARGS)
	$(BIN)/python -m benchmarks.bench_ceapg_speed --rounds 1 $(ARGS)
	$(BIN)/python -m benchmarks.bench_baselines --quick $(ARGS)
	$(BIN)/python -m benchmarks.bench_contact --quick $(ARGS)
	$(BIN)/python -m benchmarks.bench_shac --quick $(ARGS)
	$(BIN)/python -m benchmarks.bench_devices --quick $(ARGS)

table1: install ## CE-APG paper Table I (CE-APG, PPO, SAC, Brax APG x 3 tasks x 8 seeds): sweep, then tables (the paper's final training return; evaluation/: diffrl's final evaluation) + curves; BUDGET=quick|paper LAUNCHER=local|joblib|slurm|submitit_local
	$(BIN)/diffrl train -m experiment=ceapg_table1 budget=$(BUDGET) launcher=$(LAUNCHER) $(ARGS)
	$(BIN)/diffrl table $(TABLES)/table1_$(BUDGET) --metric final_train_return
	$(BIN)/diffrl table $(TABLES)/table1_$(BUDGET) --out $(TABLES)/table1_$(BUDGET)/evaluation
	$(BIN)/diffrl plot $(TABLES)/table1_$(BUDGET)

table2: install ## CE-APG paper Table II (CE-APG, PAPG, CEM x 3 tasks x 8 seeds): sweep, then tables as table1 + curves; BUDGET, LAUNCHER as table1
	$(BIN)/diffrl train -m experiment=ceapg_table2 budget=$(BUDGET) launcher=$(LAUNCHER) $(ARGS)
	$(BIN)/diffrl table $(TABLES)/table2_$(BUDGET) --metric final_train_return
	$(BIN)/diffrl table $(TABLES)/table2_$(BUDGET) --out $(TABLES)/table2_$(BUDGET)/evaluation
	$(BIN)/diffrl plot $(TABLES)/table2_$(BUDGET)

shac: install ## SHAC paper Fig. 4 (SHAC, BPTT, PPO, SAC x SHAC's 5 tasks): sweep, then table + curves vs steps and wall clock; BUDGET, LAUNCHER as table1
	$(BIN)/diffrl train -m experiment=shac_fig4 budget=$(BUDGET) launcher=$(LAUNCHER) $(ARGS)
	$(BIN)/diffrl table $(TABLES)/shac_fig4_$(BUDGET)
	$(BIN)/diffrl plot $(TABLES)/shac_fig4_$(BUDGET)

# ILD's tasks (humanoid's SAC expert is out of reach on 2 CPU cores: diffrl demos env=humanoid expert=sac budget=paper).
ILD_TASKS ?= inverted_pendulum hopper walker2d ant reacher swimmer acrobot
DEMO_DIR  ?= diffrl/data/demos

demos: install ## remake the committed expert demos of ILD's tasks (ILD_TASKS) into DEMO_DIR: an expert per task (PPO), BUDGET=quick|paper
	for task in $(ILD_TASKS); do \
	  $(BIN)/diffrl demos env=$$task budget=$(BUDGET) demos.out=$(DEMO_DIR)/$$task.npz $(ARGS) || exit 1; \
	done
	$(BIN)/python tools/demo_table.py --demos $(DEMO_DIR)

ild: install ## ILD paper figure (ILD, ILD-L2, BC x ILD's tasks, committed demos): sweep, then tables as table1 + curves; BUDGET, LAUNCHER as table1
	$(BIN)/diffrl train -m experiment=ild_fig budget=$(BUDGET) launcher=$(LAUNCHER) $(ARGS)
	$(BIN)/diffrl table $(TABLES)/ild_fig_$(BUDGET)
	$(BIN)/diffrl table $(TABLES)/ild_fig_$(BUDGET) --metric final_sampled_return --out $(TABLES)/ild_fig_$(BUDGET)/sampled
	$(BIN)/python tools/ild_distances.py $(TABLES)/ild_fig_$(BUDGET)
	$(BIN)/diffrl plot $(TABLES)/ild_fig_$(BUDGET)

readme: install ## copy the committed result tables (docs/results/) into the generated blocks of the README and docs/cluster.md
	$(BIN)/python tools/sync_readme.py

clean: ## remove outputs, caches and the venv
	rm -rf outputs multirun wandb .pytest_cache .ruff_cache .cache $(VENV)
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
