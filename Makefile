# The two set-up commands of the README. Each installs what it needs, then does its job.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test lab bench lint mlflow-ui

NBSCALE_HOME ?= $(HOME)/.nbscale
export NBSCALE_HOME
# the commands demo tells a user to type next name a home other than the default, which their shell may not have
HOME_PREFIX := $(if $(filter $(HOME)/.nbscale,$(NBSCALE_HOME)),,NBSCALE_HOME=$(NBSCALE_HOME) )

demo:  ## run the examples on the embedded default (local processes, local MLflow)
	scripts/bootstrap.sh demo
	$(VENV)/bin/nbscale inspect examples/train.ipynb
	$(VENV)/bin/nbscale run examples/train.ipynb -p n_estimators=200 -p model=forest
	$(VENV)/bin/nbscale run examples/pipeline.yaml
	$(VENV)/bin/nbscale compile examples/train.ipynb -p n_estimators=200 --gpus 1 --pool a100 -o $(NBSCALE_HOME)/train-workflow.yaml --validate
	@echo
	@echo "Runs:           $(HOME_PREFIX)$(VENV)/bin/nbscale runs"
	@echo "Argo manifest:  $(NBSCALE_HOME)/train-workflow.yaml"
	@echo "MLflow UI:      $(HOME_PREFIX)make mlflow-ui   (then open http://127.0.0.1:5000)"

mlflow-ui:  ## browse the local MLflow store the runs were logged to
	$(VENV)/bin/mlflow ui --host 127.0.0.1 --port 5000 --backend-store-uri sqlite:///$(NBSCALE_HOME)/mlflow.db

test:  ## install everything, then run the whole test suite
	scripts/bootstrap.sh test
	$(PY) -m pytest

lab:  ## start JupyterLab with the nbscale extension on the embedded default
	scripts/bootstrap.sh demo
	$(VENV)/bin/jupyter lab --ip 127.0.0.1 --no-browser --ServerApp.root_dir=examples $(if $(filter 0,$(shell id -u)),--allow-root)

bench:  ## benchmarks, side by side with the baselines; results in benchmarks/results/
	scripts/bootstrap.sh test
	$(PY) -m benchmarks

lint:
	$(VENV)/bin/ruff check workflow_compiler notebook_plugin hub_extension tests benchmarks
	$(VENV)/bin/mypy workflow_compiler notebook_plugin hub_extension
