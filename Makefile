# medcondense: the two commands a new user needs are `make demo` and `make test`.
# Both install into ./.venv first. TORCH pins the CPU wheel that CI and CPU machines use;
# on a GPU machine run `make install TORCH=torch` to keep pip's default (CUDA) build.

PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
PY     := $(VENV)/bin/python
MC     := $(VENV)/bin/medcondense
STAMP  := $(VENV)/.installed

DEMO_DIR  ?= demo
# Demo-sized budgets (a few minutes on 2 CPU cores); examples/pipeline/run_pipeline.sh documents
# every knob, e.g. `make demo DEMO_ENV="METHOD=dsa IPC=1"`, `make demo DEMO_ENV="METHOD=mtt"` (MTT quick
# preset, experts included) or PRESET=paper on a GPU.
DEMO_ENV  ?= ITERATIONS=60 MODELS=1 EPOCHS=30 FULL_STEPS=60

.PHONY: install demo test bench bench-table clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[dev,codecs,pacs,dp,tiff]"
	touch $(STAMP)

# The whole pipeline on the example data shipped in examples/data (ch2 T1 + AAL atlas):
# build the brain-region patch task as a DICOM tree, then ingest -> distill -> evaluate -> score -> export.
demo: install
	$(DEMO_ENV) PYTHON=$(PY) MEDCONDENSE=$(MC) bash examples/pipeline/run_pipeline.sh $(DEMO_DIR)
	@$(PY) examples/pipeline/summary.py $(DEMO_DIR)/report.json $(DEMO_DIR)/score.json

# pytest exits 5 when it collects no tests; that is reported and mapped to 0, every other code passes on.
test: install
	$(PY) -m pytest -q; rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; rc=0; fi; exit $$rc

# Speed benchmarks: JSON in benchmarks/results/, a table on stdout. The distill run is sized for
# a CPU (tens of minutes); on a GPU: `$(PY) benchmarks/distill.py --device cuda --iterations 20 --max-outer 0`.
bench: install
	$(PY) benchmarks/ingest.py
	$(PY) benchmarks/distill.py --iterations 1 --ipc 1 10 --variants base bf16+compile
	@if [ -n "$$MEDCONDENSE_REF_DIR" ]; then \
		$(PY) benchmarks/versus_reference.py --method dm dc dsa --ipc 1 10 --iterations 1 --rounds 3; \
	else \
		echo "versus_reference.py skipped: set MEDCONDENSE_REF_DIR to a reference checkout (benchmarks/reference.py says how)"; \
	fi

bench-table: install
	$(PY) benchmarks/table.py --quick

clean:
	rm -rf $(DEMO_DIR) build dist .pytest_cache examples/generated benchmarks/results
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
