# gemini-pl — run `make help` for the list of targets.
# The first target that needs it creates .venv and installs the project into it.

PYTHON     ?= python3
VENV       ?= .venv
PY         := $(VENV)/bin/python
# torch pin: on a CPU-only machine this takes the CPU wheel when one is available locally; on a
# Linux GPU machine PyPI's wheel of the same version is the CUDA build. Override for other builds,
# e.g. `make install TORCH_SPEC="torch==2.13.0 --index-url <your wheel index>"`.
TORCH_SPEC ?= torch==2.13.0
STAMP      := $(VENV)/.installed-stamp
CONFIG     ?= experiments/demo_pretrain.yaml
PYTEST_ARGS ?=
DEMO_ARGS  ?=

.DEFAULT_GOAL := help
.PHONY: help install demo demo-pretrain test test-all bench clean clean-runs reproduce-table2 reproduce

help: ## Show this help
	@grep -E '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}'

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check $(TORCH_SPEC)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[test]"
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install gemini-pl with its dependencies (CPU torch pin)

demo: $(STAMP) ## Real-anatomy (MNI152-derived) demo, 3 seeds: pre-train, fine-tune seg + reg, GEMINI-Semi, U-Net Five, demons; claims table
	$(PY) -m gemini_pl.demo $(DEMO_ARGS)

demo-pretrain: $(STAMP) ## Only pre-train GEMINI on 2D phantoms and print held-out registration Dice (CONFIG=...)
	$(VENV)/bin/gemini-pl fit --config $(CONFIG)

test: $(STAMP) ## Run the test suite (slow tests excluded)
	$(PY) -m pytest -m "not slow" -q $(PYTEST_ARGS)

test-all: $(STAMP) ## Run every test, slow ones included
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench: $(STAMP) ## Print the CPU benchmarks (step time vs floor, per-module step/memory/FLOPs, corruption speed)
	$(PY) benchmarks/step_time.py
	$(PY) benchmarks/modules.py --precision 32
	$(PY) benchmarks/corruption_speed.py

clean: ## Remove generated phantoms and caches (keeps .venv and trained runs: see clean-runs)
	rm -rf data/phantom2d data/phantom3d data/cache .pytest_cache
	find . -name __pycache__ -type d -prune -not -path "./$(VENV)/*" -exec rm -rf {} +
	@if [ -d runs ]; then echo "kept runs/ (trained checkpoints and logs); 'make clean-runs' deletes it after asking"; fi

clean-runs: ## Delete runs/ (checkpoints, logs) after asking; FORCE=1 skips the question
	@if [ ! -d runs ]; then echo "no runs/ folder"; exit 0; fi; \
	if [ "$(FORCE)" != "1" ]; then \
		printf "delete runs/ (%s checkpoint files)? [y/N] " "$$(find runs -name '*.ckpt' | wc -l | tr -d ' ')"; \
		read answer; case "$$answer" in y|Y|yes) ;; *) echo "kept runs/"; exit 0;; esac; \
	fi; rm -rf runs && echo "deleted runs/"

DATA       ?= real
JOBS       ?= $(if $(filter phantom mni synthseg,$(DATA)),2,1)
TABLE2_ARGS ?=

reproduce-table2: $(STAMP) ## Table II matrix (resumable) -> results/table2.{md,csv}; DATA=phantom: phantoms, <20 min on 2 cores; DATA=synthseg: 5 rows on real variability, 3 seeds (~1 h)
	$(PY) -m gemini_pl.reproduce --data $(DATA) --jobs $(JOBS) $(if $(filter phantom mni synthseg,$(DATA)),--threads 1,) $(if $(DATA_ROOT),--data-root $(DATA_ROOT),) $(TABLE2_ARGS)

TABLE      ?= 2
REPRODUCE_ARGS ?=

reproduce: $(STAMP) ## TABLE=2|3|6 (resumable) -> results/table<N>.{md,csv}; 3/6: each row pre-trained once, fine-tuned on every task; DATA=phantom: <20 min on 2 cores; TABLE=3 DATA=mni: real anatomy, 3 seeds (~1 h); TABLE=2|3 DATA=synthseg: real variability, 3 seeds, per-structure Dice
	$(PY) -m gemini_pl.reproduce --table $(TABLE) --data $(DATA) --jobs $(JOBS) $(if $(filter phantom mni synthseg,$(DATA)),--threads 1,) $(if $(DATA_ROOT),--data-root $(DATA_ROOT),) $(REPRODUCE_ARGS)
