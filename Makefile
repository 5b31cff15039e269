# The two commands of the README: `make run` (the main job) and `make test` (the whole suite).
# Both set everything up from nothing: .venv, torch, the other dependencies (pinned by constraints.txt;
# the dev extra brings the data, tune, lightning and huggingface extras), the package and its compiled ops.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
SOURCES := setup.py pyproject.toml constraints.txt $(wildcard csrc/*/*.cpp csrc/*/*.h csrc/*/*.cu csrc/*/*.cuh)
RUN_ARGS ?=

.PHONY: install test run data cuda-build clean

$(VENV)/.torch:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip "setuptools>=68" wheel
	$(PY) -m pip install -c constraints.txt torch torchvision numpy
	touch $@

$(VENV)/.installed: $(VENV)/.torch $(SOURCES)
	$(PY) -m pip install -c constraints.txt -e ".[dev]" --no-build-isolation
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest -q -ra tests benchmarks --benchmark-disable

data:
	@if [ ! -f $(FMNIST) ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    (apt-get install -y -q dataset-fashion-mnist || (apt-get update -q && apt-get install -y -q dataset-fashion-mnist)); \
	  else \
	    echo "Fashion-MNIST is missing: run 'sudo apt-get install dataset-fashion-mnist', or put torchvision's" \
	         "FashionMNIST/raw files under ./data and pass --data-root ./data"; exit 1; \
	  fi; \
	fi

run: install data
	$(PY) -m fastdstn train fmnist-quick --out runs/fmnist-quick --overwrite $(RUN_ARGS)

# Compile the CUDA extension too (no GPU needed); the ptxas register/spill report lands in build-cuda.log.
cuda-build: $(VENV)/.torch
	FASTDSTN_CUDA=1 TORCH_CUDA_ARCH_LIST="8.0;9.0" CUDA_HOME=/usr/local/cuda \
	  $(PY) -m pip install -c constraints.txt -e ".[dev]" --no-build-isolation -v > build-cuda.log 2>&1 || (tail -50 build-cuda.log; exit 1)
	@grep -c "ptxas info    : Used" build-cuda.log | xargs echo "ptxas register reports in build-cuda.log:"
	$(PY) -c "import torch, fastdstn.ops.cpp as c; r = c.cuda_registered(); print('CUDA ops registered:', r); assert r, c.UNAVAILABLE_REASON or 'no CUDA kernels registered'"

# The sdist and the CPU wheel built from it, in dist/ (CUDA wheels, the cluster matrix: docs/WHEELS.md).
.PHONY: wheel
wheel: install
	MAX_JOBS=$${MAX_JOBS:-2} $(PY) -m build --no-isolation

clean:
	rm -rf build *.egg-info fastdstn/_C*.so
