# Every target makes and uses .venv by itself, so each works on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: sandbox test bench soak lint tools clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

## sandbox: the bot with a local Slack workspace (http://localhost:3000) and local AWS
sandbox: $(STAMP)
	ERP_TOOLS_BIN="$$(bash scripts/build-test-tools.sh)" $(PY) -m bot sandbox

## tools: kube-apiserver and helm for the tests, built once into a cache outside the repository
tools:
	@bash scripts/build-test-tools.sh >/dev/null

## test: the whole test suite, on TEST_WORKERS parallel workers (4 on 2 cores: the tests wait on servers, helm and browsers as much as they compute; 0 runs it in this process)
TEST_WORKERS ?= 4
test: $(STAMP) .venv-checkov/bin/checkov
	CHECKOV_BIN=.venv-checkov/bin/checkov ERP_TOOLS_BIN="$$(bash scripts/build-test-tools.sh)" $(PY) -m pytest -n $(TEST_WORKERS) --dist worksteal

## bench: latency, throughput and footprint figures, printed and saved under bench/results/
bench: $(STAMP)
	$(PY) -m bench

## soak: the many-replica soak, longer than CI runs it (1,000 executions, three replicas killed along the way)
soak: $(STAMP)
	SOAK_EXECUTIONS=$${SOAK_EXECUTIONS:-1000} SOAK_KILLS=$${SOAK_KILLS:-3} SOAK_REPLICAS=$${SOAK_REPLICAS:-3} \
		$(PY) -m pytest tests/test_soak.py -s -p no:cacheprovider

## lint: ruff and mypy
lint: $(STAMP)
	$(VENV)/bin/ruff check bot handlers sandbox tests bench
	$(VENV)/bin/mypy bot handlers sandbox

clean:
	rm -rf $(VENV) .venv-checkov .pytest_cache .mypy_cache .ruff_cache

## checkov: its own virtualenv (it pins many packages of its own)
.venv-checkov/bin/checkov:
	$(PYTHON) -m venv .venv-checkov
	.venv-checkov/bin/python -m pip install --quiet 'checkov>=3.2,<4'
