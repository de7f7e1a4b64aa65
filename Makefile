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

.PHONY: venv demo test lint bench bench-ner bench-zero-shot bench-kgqa clean

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

# The later commands' benchmarks (CPU times on 2 cores in BENCHMARKS.md): each writes bench_out/ and prints its tables.
NER_ARGS = --task conll --epochs 1 --batch-size 16 --lr 1e-4 --max-length 128 --seed 0 --out-dir bench_out/ner_full
bench-ner: venv  # ~15 min: full CoNLL-2003 train, peer / EGP / GP, then the interleaved throughput run
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	PYTHONPATH=. $(BIN)/python benchmarks/bench_ner.py --system peer $(NER_ARGS)
	PYTHONPATH=. $(BIN)/python benchmarks/bench_ner.py --system egp --head-lr-scale 10 --tag=-hlr10 $(NER_ARGS)
	PYTHONPATH=. $(BIN)/python benchmarks/bench_ner.py --system gp --head-lr-scale 10 --tag=-hlr10 $(NER_ARGS)
	PYTHONPATH=. $(BIN)/python benchmarks/bench_ner.py --speed --task conll --limit-train 4000 --speed-steps 30 \
		--speed-texts 500 --speed-repeats 2 --out-dir bench_out/ner_full
	PYTHONPATH=. $(BIN)/python benchmarks/bench_ner.py --report --out-dir bench_out/ner_full

bench-zero-shot: venv  # ~20 min: nsp-adapt on CoNLL-2003 train documents, SST-2 and AG News, throughput
	PYTHONPATH=. $(BIN)/python benchmarks/bench_zero_shot.py

bench-kgqa: venv  # ~20 min: KgCLUE prepare, 8-epoch char BART, dev ablations and speed; the 1M-key trie comparison
	PYTHONPATH=. $(BIN)/python benchmarks/bench_trie.py --keys 1000000 --seed 0
	PYTHONPATH=. $(BIN)/python benchmarks/bench_kgqa.py prepare --data ../shared/data/kgqa --out bench_out/kgqa
	OMP_NUM_THREADS=1 $(BIN)/nlptool kg-qa train --kb bench_out/kgqa/kb.tsv --train bench_out/kgqa/train.jsonl \
		--dev bench_out/kgqa/val.jsonl --out bench_out/kgqa/model --epochs 8 --force
	OMP_NUM_THREADS=1 PYTHONPATH=. $(BIN)/python benchmarks/bench_kgqa.py eval --out bench_out/kgqa \
		--model bench_out/kgqa/model --splits dev --speed-questions 256 --repeats 3

clean:
	rm -rf $(VENV) demo_out bench_out .pytest_cache
