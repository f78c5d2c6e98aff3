"""The suite's fixtures (plain helpers are in helpers.py) and the thread settings every test runs with."""
import os

import pytest

# set before helpers imports cmbcube (cmbcube.stages reads CMBCUBE_SHT_THREADS when imported)
os.environ.setdefault("CMBCUBE_SHT_THREADS", "1")
# Dask's nanny writes the workers' thread variables into this process's environment (NUMBA_NUM_THREADS=1,
# cluster.thread_env); numba then refuses to compile if its pool was started here with another size,
# so whichever test first runs pysm3's kernels in-process, the pool has that size from the start
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

from helpers import small_recipe


@pytest.fixture(scope="session")
def tiny_recipe():
    return small_recipe()


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory, tiny_recipe):
    from cmbcube.stages.simulate import run
    path = tmp_path_factory.mktemp("cube") / "tiny.zarr"
    report = run(tiny_recipe, str(path), scheduler="synchronous", progress=False)
    assert report.ok and len(report.written) == 6
    return str(path)
