# notiflow — the two commands: `make run` (the whole system on embedded defaults) and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test soak lint format bench schemas docs clean

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  (echo "notiflow needs Python >= 3.11 (found $(PYTHON))"; exit 1)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: install           ## engine + local SMTP/webhook stand-ins + sample workload + summary
	$(BIN)/notiflow demo

test: install          ## lint + the whole suite (real broker, SMTP, HTTP, Redis, chDB)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest -q

soak: install          ## the SIGKILL crash-recovery test 5 times over (12,000 requests, 3 kills, 3 ledger modes)
	for run in 1 2 3 4 5; do $(BIN)/pytest -q -s -p no:cacheprovider tests/e2e/test_recovery.py -k sigkill || exit 1; done

lint: install
	$(BIN)/ruff check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install         ## connector throughput (see benchmarks/)
	$(BIN)/python benchmarks/connectors_bench.py

schemas: install       ## regenerate schemas/json from the pydantic models
	$(BIN)/python -m schemas

docs: install          ## regenerate docs/configuration.md from the settings
	$(BIN)/notiflow config --markdown > docs/configuration.md

clean:
	rm -rf $(VENV) .notiflow .pytest_cache .ruff_cache
