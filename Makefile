# Two entry points for a fresh clone: `make quickstart` (the main job) and `make test`; `make docs` builds the site.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: quickstart test docs benchmark clean pymaster

$(BIN)/cmbcube: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	# torch first, pinned to the CPU build on this machine's disk: an unpinned torch pulls a multi-GB CUDA build
	$(BIN)/pip install -q torch==2.13.0
	# NaMaster (the analysis' default spectrum estimator): sdist only, compiled against GSL/FFTW/CFITSIO/
	# chealpix; the script installs those with apt-get when missing and builds it offline-safe
	bash tools/install_pymaster.sh $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $@

quickstart: $(BIN)/cmbcube
	$(BIN)/cmbcube run recipes/quickstart.yaml --store quickstart.zarr

test: $(BIN)/cmbcube
	$(BIN)/ruff check .
	# two pytest workers, one test file each (module fixtures built once): the suite's waits (subprocesses,
	# servers, killed workers) overlap on the 2 cores
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

# the documentation site into site/ (open site/index.html): the docs tools installed if missing, mkdocs
# --strict (any warning fails), then every relative link and anchor of the built pages checked
docs: $(BIN)/cmbcube
	$(BIN)/python -c "import mkdocs, material, mkdocstrings_handlers.python" 2>/dev/null || $(BIN)/pip install -q -e '.[docs]'
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict
	$(BIN)/python tools/check_links.py site

benchmark: $(BIN)/cmbcube
	$(BIN)/python benchmarks/simulate.py --quick

pymaster:
	bash tools/install_pymaster.sh $(BIN)/python

clean:
	rm -rf quickstart.zarr quickstart.zarr.runs quickstart.zarr.namaster quickstart.zarr.views quickstart.report .pytest_cache site
