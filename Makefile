# The README's two commands:  `make demo`  and  `make test`.
# Both create .venv (Python 3.10+; CPU build of torch) and install nlptool into it first.

PYTHON ?= python3
VENV   ?= .venv
# The CPU build of torch (this pin matches the wheel available offline on the project's machines;
# any torch>=2.2 works: override with `make TORCH=torch==2.5.1 ...` or install torch yourself first).
TORCH  ?= torch==2.13.0
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.nlptool-installed
# Slow tests (@pytest.mark.slow) run in CI (CI=true) or with `make test SLOW=1`.
PYTEST_MARK = $(if $(or $(CI),$(SLOW)),,-m "not slow")

.PHONY: venv demo test lint bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade --quiet pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[default-model,dev]"
	touch $(STAMP)

demo: venv
	bash scripts/demo.sh $(BIN)

test: venv
	$(BIN)/python -m pytest -q $(PYTEST_MARK)

lint: venv
	$(BIN)/ruff check nlptool tests benchmarks scripts
	$(BIN)/ruff format --check nlptool tests benchmarks scripts

bench: venv
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	PYTHONPATH=. $(BIN)/python benchmarks/bench_entropy.py
	PYTHONPATH=. $(BIN)/python benchmarks/bench_can.py
	PYTHONPATH=. $(BIN)/python benchmarks/bench_can_real.py
	PYTHONPATH=. $(BIN)/python benchmarks/bench_cosent.py --encode

clean:
	rm -rf $(VENV) demo_out bench_out .pytest_cache
