# The two set-up commands of the README. Each installs what it needs, then does its job.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test lab bench lint

demo:  ## run the examples on the embedded default (local processes, local MLflow)
	scripts/bootstrap.sh demo
	$(PY) -m examples.demo

test:  ## install everything, then run the whole test suite
	scripts/bootstrap.sh test
	$(PY) -m pytest

lab:  ## start JupyterLab with the nbscale extension on the embedded default
	scripts/bootstrap.sh demo
	$(VENV)/bin/jupyter lab --ip 127.0.0.1 --no-browser --notebook-dir examples

bench:  ## benchmarks, side by side with the baselines; results in benchmarks/results/
	scripts/bootstrap.sh test
	$(PY) -m benchmarks

lint:
	$(VENV)/bin/ruff check workflow_compiler notebook_plugin hub_extension tests benchmarks
	$(VENV)/bin/mypy workflow_compiler notebook_plugin hub_extension
