# The README's two commands live here, set-up included: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
TORCH  := torch==2.13.0

# Python caches compiled modules in __pycache__ (git ignores it), and pytest caches its assert-rewritten
# test modules there too. An environment that sets PYTHONDONTWRITEBYTECODE (this project's CI machine
# does) makes every run compile and rewrite them again: ~3 s of make test-fast's ~15, and a fraction of a
# second in every study driver and trial process. The targets here keep the cache.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: demo demo-fresh test test-fast test-cluster bench bench-study bench-racing gpu-check clean-venv

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Torch first, from the pinned CPU build, so the project's `torch>=...` is already satisfied
# and pip never resolves a multi-GB CUDA build.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The default study on the embedded synthetic dataset, then its report. A finished study is not
# rerun (nothing is overwritten): its report is rebuilt; `make demo-fresh` moves it aside and reruns.
DEMO_STUDY := search_spaces/kl.toml
DEMO_DIR   := results/kl

demo: $(STAMP)
	@if [ -f $(DEMO_DIR)/finished.json ]; then \
		echo "$(DEMO_DIR) is finished; rebuilding its report (make demo-fresh reruns the study)"; \
		$(PY) -m study.report $(DEMO_DIR); \
	else \
		$(PY) -m study.run $(DEMO_STUDY); \
	fi

demo-fresh: $(STAMP)
	$(PY) -m study.run $(DEMO_STUDY) --fresh

# Tests run on up to 4 workers (2 on a 2-core machine). conftest.py's scheduler keeps each file of
# SHARED_MODULES (a cluster, an S3 server, a heavy fixture) whole on one worker, and the session's
# studies run once for all workers, so each is still built once.
XDIST := -n auto --maxprocesses=4

test: $(STAMP)
	$(PY) -m pytest $(XDIST)

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow and not ray and not cluster and not browser"

test-cluster: $(STAMP)
	$(PY) -m pytest -m cluster

bench: $(STAMP)
	$(PY) benchmarks/throughput.py

bench-study: $(STAMP)
	$(PY) benchmarks/study_overhead.py
	$(PY) benchmarks/asha_savings.py

# The seed race: replays results/kl-fixed8 (a fixed 8-seed kl study; `--run` makes it, ~1 h on 2 cores)
# and simulated populations with known means.
bench-racing: $(STAMP)
	$(PY) benchmarks/racing.py

# One prepared check for a machine with a GPU (at most ~8 minutes): the gpu-marked tests, training
# throughput at lab dims in fp32 / bf16 / bf16 + compile, a short lab-size study (search_spaces/lab/
# gpu_check.toml) and its margin over the floor per GPU-minute, and k trials packed on one GPU. Without
# CUDA it runs what it can and says so.
HAS_CUDA = $(PY) -c "import sys, torch; sys.exit(not torch.cuda.is_available())"
gpu-check: $(STAMP)
	$(PY) -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'devices', [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])"
	$(PY) -m pytest -m gpu -q -rs
	@if $(HAS_CUDA); then \
		$(PY) benchmarks/throughput.py --dims 128,32,12,192 --device cuda --precision fp32 --steps 20 --no-flops && \
		$(PY) benchmarks/throughput.py --dims 128,32,12,192 --device cuda --precision bf16 --steps 20 --no-flops && \
		$(PY) benchmarks/throughput.py --dims 128,32,12,192 --device cuda --precision bf16 --compile --steps 20 --no-flops && \
		$(PY) -m study.run search_spaces/lab/gpu_check.toml --storage results/gpu-check --fresh && \
		$(PY) benchmarks/study_margin.py results/gpu-check/lab-gpu_check; \
	else echo '{"benchmark": "throughput", "skipped": "no CUDA device on this machine"}'; \
		echo '{"benchmark": "study_margin", "skipped": "no CUDA device: search_spaces/lab/gpu_check.toml asks for a GPU share"}'; fi
	$(PY) benchmarks/gpu_packing.py --precision bf16

clean-venv:
	rm -rf $(VENV)
