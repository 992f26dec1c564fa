# The README's two commands: `make demo` (the main job) and `make test`.
# Both create or reuse .venv with the pinned environment.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv test demo clean-venv

venv: $(STAMP)

$(STAMP): requirements.txt setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps ve-fairseq==0.12.3
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

# make demo K=16 CONC=1 DEMO_ARGS="--epochs 3"
demo: $(STAMP)
	$(PY) -m pass_fairseq.experiments.demo $(if $(K),--heads $(K)) $(if $(CONC),--concentrator) $(DEMO_ARGS)

clean-venv:
	rm -rf $(VENV)
