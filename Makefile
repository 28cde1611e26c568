# The two commands a newcomer needs: `make demo` and `make test`.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: demo test lint install clean chromium slurm-local docs

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Stamp files: reinstall only when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/bench run --method mlnnet --source ffdm --target dbt

# The HTML report test screenshots the page in headless Chromium (Debian's package).
chromium:
	@command -v chromium >/dev/null || { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium; }

# The cluster integration tests start a throw-away Slurm (scripts/slurm-local/cluster.py):
# Debian's Slurm, munge and MariaDB packages.
slurm-local:
	@command -v slurmctld >/dev/null && command -v slurmdbd >/dev/null \
	  && command -v munged >/dev/null && command -v mariadbd >/dev/null || { \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq slurm-wlm munge slurmdbd \
	  mariadb-server; }

test: $(VENV)/.installed-test chromium slurm-local
	$(BIN)/python -m pytest -q

# The manual (mkdocs.yml): built offline into site/ (git-ignored); strict, so any warning fails.
docs: $(VENV)/.installed-test
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

lint: $(VENV)/.installed-test
	$(BIN)/ruff check benchmark methods datasets tests

clean:
	rm -rf $(VENV) .calcbench-cache
