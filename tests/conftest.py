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


def moto_s3(bucket: str, tag: str):
    """moto's S3 server on loopback with one bucket and this test file's own dummy AWS_* credentials
    (restored after): a context manager yielding (env, boto3 client)."""
    import contextlib
    import logging

    @contextlib.contextmanager
    def running():
        from moto.server import ThreadedMotoServer
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        env = {"AWS_ACCESS_KEY_ID": f"cmbcube-{tag}", "AWS_SECRET_ACCESS_KEY": f"cmbcube-{tag}-secret",
               "AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_REGION": "us-east-1"}
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            import boto3
            client = boto3.client("s3")
            client.create_bucket(Bucket=bucket)
            yield env, client
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            server.stop()
    return running()
