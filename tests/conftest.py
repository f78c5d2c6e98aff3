import os

import numpy as np
import pytest

from cmbcube import recipe as recipe_mod

os.environ.setdefault("CMBCUBE_SHT_THREADS", "1")
# Dask's nanny writes the workers' thread variables into this process's environment (NUMBA_NUM_THREADS=1,
# cluster.thread_env); numba then refuses to compile if its pool was started here with another size,
# so whichever test first runs pysm3's kernels in-process, the pool has that size from the start
os.environ.setdefault("NUMBA_NUM_THREADS", "1")


def small_recipe(**changes):
    """A tiny but complete recipe: nside 16, sky 32, all detectors, IQU, every component."""
    data = {
        "name": "tiny", "seed": 7, "nside": 16,
        "splits": {"train": 3, "valid": 1, "test": 2},
        "keep": ["cmb", "components", "noise"],
        "cluster": {"kind": "synchronous"},
    }
    for key, value in changes.items():
        node = data
        parts = key.split("__")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return recipe_mod.validate(data)


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


def zarr_files(path):
    """{relative path: bytes} of every file under a store."""
    out = {}
    for root, _, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            out[os.path.relpath(full, path)] = open(full, "rb").read()
    return out


def rms(x):
    return float(np.sqrt(np.mean(np.square(x))))
