# All set-up happens here: `make demo` and `make test` work on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test test-long lint bench clean browser

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py

test: $(STAMP) browser
	$(BIN)/python -m pytest -q -p no:cacheprovider

# The UI's browser tests drive Debian's Chromium. Installed when missing and we are root (CI);
# otherwise the browser tests skip and say how to install it.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; \
	  else echo "make: chromium is missing and we are not root: browser tests will skip"; fi; }

# The same suite with crash loops and property tests run longer.
test-long: $(STAMP)
	FLORQL_TEST_SCALE=10 $(BIN)/python -m pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check florql storage tests bench examples
	$(BIN)/ruff format --check florql storage tests bench examples
	$(BIN)/mypy florql storage

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info .florql
