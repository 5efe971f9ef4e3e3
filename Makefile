# Two commands do everything on a fresh machine: `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test bench setup clean browser

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/ehr init
	$(BIN)/ehr serve

test: $(STAMP) browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Debian's Chromium for tests/e2e/test_browser_launch.py, installed when missing and we are root.
# Never fails the target: without it that test skips (or, with CI=true, fails) and says why.
browser:
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; } \
			|| echo "make: could not install chromium; the browser test will say what is missing" >&2; \
	fi

bench: $(STAMP)
	$(BIN)/python -m tests.benchmarks.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
