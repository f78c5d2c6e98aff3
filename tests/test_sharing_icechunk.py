"""Icechunk store locations: bad spellings, versions on plain stores and missing repositories are clear
errors (exit 2, no traceback) that create nothing."""
import os

import pytest

pytest.importorskip("icechunk")

import cmbcube
from cmbcube.cli import main
from cmbcube.cube import icechunk_store as ics


def test_location_spellings_parse_and_bad_ones_name_the_allowed(tmp_path):
    loc = ics.parse("icechunk+s3://bucket/some/prefix@paper-v1")
    assert (loc.scheme, loc.root, loc.prefix, loc.version) == ("s3", "bucket", "some/prefix", "paper-v1")
    assert ics.parse(f"icechunk+file://{tmp_path}/c").root == f"{tmp_path}/c"
    for bad in ("icechunk+gs://bucket/x", "icechunk+s3://", "icechunk+file:///x@bad!name"):
        with pytest.raises(ics.IcechunkError, match="icechunk\\+s3://BUCKET/PREFIX|version 'bad!name': use"):
            ics.parse(bad)


def test_bad_inputs_exit_2_and_create_nothing(tmp_path, capsys):
    missing = f"icechunk+file://{tmp_path}/nothing-here"
    assert main(["info", missing]) == 2
    assert "no such store" in capsys.readouterr().err
    assert main(["tag", str(tmp_path), "v1"]) == 2
    assert "only Icechunk stores have versions" in capsys.readouterr().err
    assert main(["info", str(tmp_path), "--version", "v1"]) == 2
    assert "only Icechunk stores have versions" in capsys.readouterr().err
    assert main(["info", "icechunk+gs://bucket/x"]) == 2
    err = capsys.readouterr().err
    assert "icechunk+s3://BUCKET/PREFIX" in err and "Traceback" not in err
    with pytest.raises(ics.IcechunkError, match="only Icechunk stores"):
        cmbcube.open(str(tmp_path), version="v1")
    assert os.listdir(tmp_path) == []


def test_checkpoints_of_a_store_on_object_storage_go_to_a_local_folder(tmp_path, monkeypatch):
    """A run's checkpoints are files torch writes: beside a local store or an icechunk+file repository,
    and for s3:// or icechunk+s3:// stores under $CMBCUBE_RUNS_DIR, never a folder named after the URL
    in the current directory (which `icechunk+file:` made before)."""
    from cmbcube.cube.runs import run_dir
    monkeypatch.setenv("CMBCUBE_RUNS_DIR", str(tmp_path / "runs"))
    assert run_dir(str(tmp_path / "s.zarr"), "unet") == tmp_path / "s.zarr.runs" / "unet"
    repo = tmp_path / "s.icechunk"
    assert run_dir(f"icechunk+file://{repo}", "unet") == tmp_path / "s.icechunk.runs" / "unet"
    assert run_dir(f"icechunk+file://{repo}@v1", "unet") == tmp_path / "s.icechunk.runs" / "unet"
    for url, name in (("icechunk+s3://bucket/cubes/q", "bucket_cubes_q.runs"),
                      ("s3://bucket/q.zarr", "bucket_q.zarr.runs")):
        assert run_dir(url, "unet") == tmp_path / "runs" / name / "unet"


def test_train_and_predict_on_an_icechunk_store_match_a_local_store(tmp_path, monkeypatch):
    """train and predict work on an Icechunk repository as on a local store: the same predictions to the
    bit (a pixel-wise toy network, seeded), each stage one or more commits, checkpoints beside the
    repository."""
    import numpy as np
    import torch

    import cmbcube
    from cmbcube.networks import NETWORKS, Network
    from cmbcube.stages import predict, simulate, train
    from helpers import small_recipe

    NETWORKS.register("toy-ice", Network(
        build=lambda cin, cout, nside, config=None, **kw: torch.nn.Conv1d(cin, cout, 1), view="sky",
        summary="pixel-wise linear map", defaults=dict(detectors=(100, 143), transform="scale:100",
                                                       target_transform="scale:100", loss="mse", batch_size=2,
                                                       repeats=1, lr_start=0.01, lr_end=0.001)))
    monkeypatch.setattr(train, "plot_losses", lambda *args: None)
    try:
        recipe = small_recipe(detectors=[100, 143], fields=["I"], keep=["cmb"], splits={"train": 2, "valid": 1,
                              "test": 1}, foregrounds__components=["dust"])
        repo = f"icechunk+file://{tmp_path / 'r.icechunk'}"
        local = str(tmp_path / "l.zarr")
        config = train.TrainConfig(**{**NETWORKS.get("toy-ice").defaults, "model": "toy-ice", "fields": ("I",),
                                      "epochs": 2})
        for store in (repo, local):
            assert simulate.run(recipe, store, scheduler="synchronous", progress=False).ok
            torch.manual_seed(0)
            train.run(store, config, "toy", device="cpu", progress=False)
            predict.run(store, "toy", splits=("test",), device="cpu", progress=False)
        a, b = cmbcube.open(repo), cmbcube.open(local)
        got, want = (x.pred.sel(run="toy", split="test", sim=0).values for x in (a, b))
        assert np.isfinite(want).all() and np.array_equal(got, want)
        assert (tmp_path / "r.icechunk.runs" / "toy").is_dir() and a.attrs["icechunk_snapshot"]
    finally:
        NETWORKS.unregister("toy-ice")
