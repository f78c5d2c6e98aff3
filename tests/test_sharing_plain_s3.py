"""Plain Zarr on object storage (``s3://``, through fsspec/s3fs), for collaborations without Icechunk,
against a real S3 API server: moto's server mode on 127.0.0.1, a random port, this test's own dummy
credentials.  A local store uploaded to the bucket reads identically; simulate -> ilc -> analyze into
``s3://`` writes the very bytes the same pipeline writes into a local store; a rerun has nothing to do;
``verify`` reads the remote store back."""
import logging
import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")

import cmbcube
from cmbcube.cli import main
from cmbcube.cube.datasets import CubeDataset
from cmbcube.stages import analyze, ilc, simulate
from helpers import moto_s3, shared_recipe, zarr_files

BUCKET = "plain-cubes"


@pytest.fixture(scope="module")
def s3():
    """moto's S3 server on loopback; AWS_* variables of this test only (restored after)."""
    with moto_s3(BUCKET, "plain-test") as (_, client):
        yield client


def bucket_files(client, prefix):
    """{relative key: bytes} of every object under ``prefix``."""
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix + "/"):
        for obj in page.get("Contents", []):
            out[obj["Key"][len(prefix) + 1:]] = client.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read()
    return out


def pipeline(store):
    rep = simulate.run(shared_recipe(), store, scheduler="synchronous", progress=False)
    assert rep.ok and rep.status == "created" and len(rep.written) == 2
    rep = ilc.run(store, ilc.ILCConfig(method="hilc"), progress=False)
    assert rep.ok and len(rep.written) == 2
    rep = analyze.run(store, estimator="pseudo-fast", progress=False)
    assert rep.ok and len(rep.written) == 2


@pytest.fixture(scope="module")
def fixed_sky():
    """CAMB runs once: the recipe's cosmology is fixed (cmb.prior: fixed), so every sim asks for the same
    spectra; what these tests check is the storage, which gets the same numbers either way."""
    from cmbcube.science import cosmology
    real, memo = cosmology.camb_lensed, {}

    def camb_lensed(params, lmax, lens_potential_accuracy=0):
        key = (tuple(sorted(params.items())), lmax, lens_potential_accuracy)
        if key not in memo:
            memo[key] = real(params, lmax, lens_potential_accuracy)
        return memo[key].copy()
    cosmology.camb_lensed = camb_lensed
    yield
    cosmology.camb_lensed = real


@pytest.fixture(scope="module")
def local_store(tmp_path_factory, fixed_sky):
    """simulate -> ilc -> analyze into a local plain Zarr store."""
    path = str(tmp_path_factory.mktemp("plain") / "tiny.zarr")
    pipeline(path)
    return path


def test_uploaded_local_store_reads_identically_through_s3(s3, local_store):
    for root, _, files in os.walk(local_store):
        for name in files:
            full = Path(root, name)
            s3.upload_file(str(full), BUCKET, "uploaded/tiny.zarr/" + full.relative_to(local_store).as_posix())
    url = f"s3://{BUCKET}/uploaded/tiny.zarr"
    local, remote = cmbcube.open(local_store), cmbcube.open(url)
    assert set(remote.data_vars) == set(local.data_vars) and list(remote.run.values) == ["hilc"]
    for name in ("obs", "cmb", "sim_done", "pred", "pred_done", "metrics"):
        np.testing.assert_array_equal(remote[name].values, local[name].values)
    a, b = CubeDataset(local_store, split="test"), CubeDataset(url, split="test")
    assert len(a) == len(b) == 2
    for i in range(len(a)):
        x, y = a[i], b[i]
        assert set(x) == set(y)
        for key in x:
            np.testing.assert_array_equal(np.asarray(y[key]), np.asarray(x[key]))


def test_pipeline_into_plain_s3_writes_what_a_local_store_holds(s3, local_store, capsys, caplog):
    local = local_store
    url = f"s3://{BUCKET}/shared/tiny.zarr"
    with caplog.at_level(logging.WARNING, logger="cmbcube"):
        pipeline(url)
    assert "has no locks: a second writer on this store at the same time is not kept apart" in caplog.text
    theirs, ours = bucket_files(s3, "shared/tiny.zarr"), zarr_files(local)
    data = {k for k in ours if not k.endswith("zarr.json")}           # chunks, shards, done-flags
    assert data and {k for k in theirs if not k.endswith("zarr.json")} == data
    assert all(theirs[k] == ours[k] for k in data)                    # byte-identical arrays
    assert set(cmbcube.open(url).data_vars) == set(cmbcube.open(local).data_vars)
    # a rerun has nothing to do (the done-flags and the data objects are found) and writes nothing
    rep = simulate.run(shared_recipe(), url, scheduler="synchronous", progress=False)
    assert rep.ok and rep.status == "existing" and rep.written == [] and rep.already_done == 2
    rep = ilc.run(url, ilc.ILCConfig(method="hilc"), progress=False)
    assert rep.ok and rep.written == [] and rep.already_done == 2
    assert bucket_files(s3, "shared/tiny.zarr") == theirs
    capsys.readouterr()
    assert main(["verify", url]) == 0
    out = capsys.readouterr().out
    assert "6 finished unit(s)" in out and "no damage found" in out


def test_missing_bucket_and_other_urls_are_refused_by_name(s3):
    from cmbcube.cube import StoreError
    with pytest.raises(StoreError, match=r"s3://no-such-bucket/x.zarr: cannot create the store there .*bucket"):
        simulate.run(shared_recipe(), "s3://no-such-bucket/x.zarr", scheduler="synchronous", progress=False)
    with pytest.raises(StoreError, match=r"s3://BUCKET/PREFIX .*gs://b/x.zarr is another URL"):
        simulate.run(shared_recipe(), "gs://b/x.zarr", scheduler="synchronous", progress=False)
    # (drop on s3:// works: tests/test_sharing_drop.py)
