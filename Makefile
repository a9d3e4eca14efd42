# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.install.stamp
PYTEST_ARGS ?=

.PHONY: install test test-fast demo bench bench-peers clean docs

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first, pinned: an unpinned torch pulls GBs of CUDA wheels
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[dev,bench]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow and not cluster" $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/voxray demo

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

# Optional peers for benchmarks/store.py (nnU-Net v2.8.1, run for real) in their own venv: torch pinned first, then
# nnU-Net and its own packages without their dependency lists (they would pull timm, torchvision, CUDA wheels), then
# only the runtime dependencies its conversion, load_case, crop_and_pad_nd, data loader, trainer and predictor import
# (benchmarks/quality.py trains and predicts with it).
PEERS := .venv-peers
PEER_STAMP := $(PEERS)/.install.stamp
$(PEER_STAMP): Makefile
	test -x $(PEERS)/bin/python || $(PY) -m venv $(PEERS)
	$(PEERS)/bin/python -m pip install --quiet torch==2.13.0
	$(PEERS)/bin/python -m pip install --quiet --no-deps nnunetv2==2.8.1 dynamic-network-architectures==0.4.4 \
		acvl-utils==0.2.6 batchgenerators==0.25.5 batchgeneratorsv2==0.3.6
	$(PEERS)/bin/python -m pip install --quiet numpy blosc2 SimpleITK nibabel scipy scikit-image pandas tqdm \
		threadpoolctl connected-components-3d matplotlib seaborn scikit-learn
	$(PEERS)/bin/python -c "import importlib.util as u, sys; bad = [m for m in ('torchvision', 'timm') if u.find_spec(m)]; sys.exit(f'peer venv has {bad}' if bad else 0)"
	$(PEERS)/bin/python -c "import nnunetv2.experiment_planning.plan_and_preprocess_api, nnunetv2.training.dataloading.data_loader, nnunetv2.training.nnUNetTrainer.nnUNetTrainer, nnunetv2.inference.predict_from_raw_data"
	touch $(PEER_STAMP)

bench-peers: $(PEER_STAMP)

docs: $(STAMP)
	$(BIN)/voxray schema --markdown > docs/spec-reference.md

clean:
	rm -rf $(VENV) build dist *.egg-info work
