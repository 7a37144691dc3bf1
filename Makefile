# Two commands: `make demo` and `make test`. Both set up what they need first.
VENV := .venv
STAMP := $(VENV)/.setup-done

.PHONY: setup demo test lint bench

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup.sh tests/whip_clients/package-lock.json \
		tests/hls_player/package-lock.json
	bash scripts/setup.sh
	touch $@

demo: setup
	$(VENV)/bin/python -m livemod demo

lint: setup
	$(VENV)/bin/ruff check livemod tests benchmarks
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

test: lint
	@# Measured once per CPU and model (cached): the suite's daemons then start at once.
	$(VENV)/bin/python -m livemod models --runtimes
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider --durations=30

bench: setup
	$(VENV)/bin/python benchmarks/latency.py
