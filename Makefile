# One-command set-up: `make test` and `make demo` create .venv and install everything first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install test demo lint format clean-venv

$(STAMP): setup.py pyproject.toml requirements/platform.txt requirements/detectron2-runtime.txt tools/install_detectron2.sh
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements/platform.txt
	bash tools/install_detectron2.sh $(PY)
	$(PY) -m pip install -q -e ".[dev]"
	@touch $(STAMP)
	@echo "installed into $(VENV)"

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest tests $(PYTEST_ARGS)

demo: $(STAMP)
	$(PY) -m demo $(DEMO_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m black --check .

format: $(STAMP)
	$(PY) -m ruff check --fix .
	$(PY) -m black .

clean-venv:
	rm -rf $(VENV)
