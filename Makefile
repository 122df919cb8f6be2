# The two commands a newcomer needs: `make demo` and `make test`.
# Set-up is idempotent: the venv is created once and re-installed only when pyproject.toml or the
# constraints (the known-good versions CI and vehicle images install) change.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
CONSTRAINTS := .ci/constraints.txt
DURATION ?= 20

.PHONY: setup demo lint test test-all clean

setup: $(STAMP)

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -c $(CONSTRAINTS) -e '.[test,bench]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/edgert run --duration $(DURATION)

# ruff over every Python file, then mypy over the packages (settings in pyproject.toml).
lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -c "$$TYPECHECK_TREE"
	$(PY) -m mypy

test: lint
	$(PY) -m pytest -q

test-all: $(STAMP)
	$(PY) -m pytest -q -m ''

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis .mypy_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

# mypy cannot follow the editable install's import hook, so it checks the packages under their
# installed names through links: build/typecheck/edgert/runtime -> runtime/ and so on, as
# pyproject.toml's package-dir maps them; the top package (runtime/api) gets its files linked one by
# one, so that its sub-packages can sit beside them. Rebuilt on every run: it takes milliseconds.
define TYPECHECK_TREE
import os, shutil
from pathlib import Path
try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib
dirs = tomllib.loads(Path("pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
root = Path("build/typecheck")
shutil.rmtree(root, ignore_errors=True)
for pkg, src in sorted(dirs.items()):
    dst = root.joinpath(*pkg.split("."))
    if os.path.lexists(dst):
        continue
    if pkg.rpartition(".")[0] in dirs:
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.symlink_to(os.path.relpath(src, dst.parent), target_is_directory=True)
    else:
        dst.mkdir(parents=True)
        for f in Path(src).glob("*.py"):
            (dst / f.name).symlink_to(os.path.relpath(f, dst))
endef
export TYPECHECK_TREE
