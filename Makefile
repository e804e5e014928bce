# qtune: every way to build, run and test the project goes through these targets.
# The Dockerfile calls the same targets (see tests/test_serve_packaging.py).
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
# The shared data folder where it exists; without one the loaders read the Hugging Face Hub.
ifneq ($(wildcard ../shared/datasets),)
export QTUNE_DATA_DIR ?= $(abspath ../shared/datasets)
endif

.PHONY: help setup run serve ui test test-fast lint docs bench finetune-all eval-all study study-designs study-frontier study-preference screenshots clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-17s %s\n", $$1, $$2}'

setup:  ## create .venv, install pinned packages, prepare the embedded model (idempotent)
	scripts/setup.sh

run: setup  ## set up if needed, then start vLLM + the web UI on the embedded model
	$(BIN)/qtune up --host $(HOST) --api-host $(HOST)

serve: setup  ## only the OpenAI-compatible endpoint
	$(BIN)/qtune serve --host $(HOST)

ui: setup  ## only the web UI (against a running endpoint)
	$(BIN)/qtune ui --host $(HOST)

test: setup  ## every test, the real-model, real-server and browser ones included
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -v --durations=15

test-fast: setup  ## the quick tests only (no real model, server or browser)
	$(BIN)/python -m pytest -m "not slow and not browser" -q

lint:  ## ruff and hadolint (the Dockerfile)
	$(BIN)/ruff check .
	$(BIN)/hadolint Dockerfile

docs:  ## rewrite docs/cli.md and the training-settings table from the code
	$(BIN)/python -m qtune.cli_reference --update

finetune-all: setup  ## retrain the four shipped adapters (see configs/)
	$(BIN)/qtune finetune --all --overwrite

study: setup  ## run (or resume) the fair study of studies/circuit.toml -> docs/study.md (hours)
	$(BIN)/qtune study --config studies/circuit.toml

study-designs: setup  ## run (or resume) the quantum-designs study, studies/designs.toml -> docs/study-designs.md (hours)
	$(BIN)/qtune study --config studies/designs.toml

study-frontier: setup  ## run (or resume) the compact-adapter frontier, studies/frontier.toml -> docs/study-frontier.md (hours)
	$(BIN)/qtune study --config studies/frontier.toml

study-preference: setup  ## run (or resume) DPO on CounselChat's upvotes and math pairs, studies/preference.toml -> docs/study-preference.md (hours)
	$(BIN)/qtune data pairs math --answers studies/preference-answers
	$(BIN)/qtune study --config studies/preference.toml

screenshots: setup  ## rerun the browser tests and copy their screenshots into docs/screenshots
	$(BIN)/python -m pytest -q -m browser tests/test_ui_browser.py
	for name in chat compare leaderboard history; do cp test-artifacts/ui-$$name.png docs/screenshots/$$name.png; done

eval-all: setup  ## rebuild docs/results.md from the served adapters (100 GSM8K problems, as shipped)
	$(BIN)/qtune report --limit 100

bench:  ## the cost benchmarks behind docs/benchmarks.md (run on a quiet machine)
	$(BIN)/python bench/bench_circuits.py --markdown
	$(BIN)/python bench/bench_qwth_step.py --markdown
	$(BIN)/python bench/bench_serve.py --out test-artifacts/bench-serve.md
	$(BIN)/python bench/bench_serve_load.py --out test-artifacts/bench-load.md

clean:  ## remove caches (not the venv or the prepared model)
	rm -rf .pytest_cache .ruff_cache test-artifacts
