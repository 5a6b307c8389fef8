# The two commands of the README: `make run` and `make test`. Both set up .venv first.
.PHONY: setup run test bench clean-venv
PY := .venv/bin/python

setup:
	@bash scripts/setup.sh

run: setup
	$(PY) -m ray_app train --env prospector

test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

clean-venv:
	rm -rf .venv
