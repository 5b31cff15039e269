# The two commands of the README: `make run` (the main job) and `make test` (the whole suite).
# Both set everything up from nothing: .venv, torch, the other dependencies (pinned by constraints.txt;
# the dev extra brings the data, tune, lightning and huggingface extras), the package and its compiled ops.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
SOURCES := setup.py pyproject.toml constraints.txt $(wildcard csrc/*/*.cpp csrc/*/*.h csrc/*/*.cu csrc/*/*.cuh)
RUN_ARGS ?=

.PHONY: install test run data clean

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

# The cluster wheel (docs/WHEELS.md): the sdist, the CUDA wheel built from it (CPU + CUDA ops, one cubin per
# architecture in CUDA_ARCHS, version 0.1.0+cu<CUDA>torch<A.B>) in dist/cuda/, the ptxas register/spill report in
# build-cuda.log, then the wheel installed with its dependencies (torch from the local wheels) into a fresh
# environment, where .ci/check_cuda_wheel.py checks that its CUDA ops register and that its build record and its
# cubins name CUDA_ARCHS. No GPU needed.
CUDA_ARCHS ?= 8.0;9.0
WHEEL_ENV := build/cuda-wheel-env
.PHONY: cuda-wheel
cuda-wheel: install
	rm -rf dist/cuda $(WHEEL_ENV)
	FASTDSTN_CUDA=1 TORCH_CUDA_ARCH_LIST="$(CUDA_ARCHS)" CUDA_HOME=/usr/local/cuda MAX_JOBS=$${MAX_JOBS:-2} \
	  $(PY) -m build --no-isolation --outdir dist/cuda . > build-cuda.log 2>&1 || (tail -50 build-cuda.log; exit 1)
	@n=$$(grep -c "ptxas info    : Used" build-cuda.log); echo "ptxas register reports in build-cuda.log: $$n"; \
	  test "$$n" -gt 0
	$(PYTHON) -m venv $(WHEEL_ENV)
	$(WHEEL_ENV)/bin/pip install -q -c constraints.txt dist/cuda/fastdstn-*+cu*.whl
	$(WHEEL_ENV)/bin/python .ci/check_cuda_wheel.py "$(CUDA_ARCHS)"
	rm -rf $(WHEEL_ENV)

# The sdist and the CPU wheel built from it, in dist/ (CUDA wheels, the cluster matrix: docs/WHEELS.md).
.PHONY: wheel
wheel: install
	MAX_JOBS=$${MAX_JOBS:-2} $(PY) -m build --no-isolation

clean:
	rm -rf build *.egg-info fastdstn/_C*.so
