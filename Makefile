# make demo / make test create .venv when it is missing and install pmjax with its test extras.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test install wheel clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/pmjax demo --out reports/demo

# two pytest-xdist workers: the suite's compiles and Python work spread over both cores of a 2-core CI machine
PYTEST_WORKERS ?= 2

test: $(STAMP)
	$(PY) -m pytest -q -n $(PYTEST_WORKERS)

# dist/pmjax-*.whl, built offline with the venv's setuptools (the test extras install it)
wheel: $(STAMP)
	$(PY) -m pip wheel . --no-deps --no-build-isolation -w dist

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
