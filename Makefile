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

test: $(STAMP)
	$(PY) -m pytest -q

# dist/pmjax-*.whl, built offline with the venv's setuptools (the test extras install it)
wheel: $(STAMP)
	$(PY) -m pip wheel . --no-deps --no-build-isolation -w dist

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
