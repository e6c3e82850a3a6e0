# Set-up and checks. `make demo` and `make test` each install what they need first.
# Installs go into the active virtualenv / conda env if there is one, else into ./.venv.
ifneq ($(VIRTUAL_ENV)$(CONDA_PREFIX),)
PYTHON ?= python
else
PYTHON := .venv/bin/python
endif
PIP := $(PYTHON) -m pip
# The offline demo and the tests never reach the model hub.
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: venv install install-test browser demo test lint typecheck pytest

venv:
ifeq ($(VIRTUAL_ENV)$(CONDA_PREFIX),)
	test -x .venv/bin/python || python3 -m venv .venv
endif

# torch first: the CPU build torch==2.13.0 only when no torch is importable, so a user's own
# (CUDA) torch is kept. torchvision is never installed by default (see "Traps" in docs/development.md).
install: venv
	$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) install "torch==2.13.0"
	$(PIP) install -e ".[vision]"

install-test: venv
	$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) install "torch==2.13.0"
	$(PIP) install -e ".[test,vision,serve]"

# The serve page's browser test drives Debian's Chromium: installed here when missing and we are root
# (never a browser downloaded from elsewhere; `playwright install` is not used). Otherwise the test skips.
browser:
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update && apt-get install -y chromium || echo "chromium could not be installed: the browser test will skip"; \
	fi

demo: install-test
	$(PYTHON) -m fmit_plugin.demo

lint:
	$(PYTHON) -m ruff check fmit_plugin tests benchmarks

typecheck:
	$(PYTHON) -m mypy fmit_plugin

pytest:
	$(PYTHON) -m pytest -q tests

test: install-test browser lint typecheck pytest
