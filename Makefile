# The two commands of the README: `make run` and `make test`. Both set up .venv first.
.PHONY: setup run test bench clean-venv
PY := .venv/bin/python

setup:
	@bash scripts/setup.sh

run: setup
	$(PY) -m ray_app train --env prospector

test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench: setup
	$(PY) -m pip install -q -e '.[test,bench]' -c constraints.txt
	$(PY) bench/env_speed.py
	$(PY) bench/bots.py
	$(PY) bench/throughput.py

clean-venv:
	rm -rf .venv
