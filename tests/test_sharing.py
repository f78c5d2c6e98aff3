"""Sharing a finished store: read-only over plain HTTP (python -m http.server), consolidated metadata
after every stage (a remote open costs one metadata request), and read-only opens never write."""
import json
import os
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

import cmbcube
from cmbcube import cube
from cmbcube.cli import main
from cmbcube.cube.datasets import CubeDataset, make_loader
from cmbcube.stages import ilc, ingest, predict, preprocess, train
from cmbcube.testing import make_example_tree
from helpers import Server

META_NAMES = ("zarr.json", ".zarray", ".zgroup", ".zattrs", ".zmetadata")


@pytest.fixture(scope="module")
def served(tiny_store, tmp_path_factory):
    www = tmp_path_factory.mktemp("www")
    store = www / "tiny.zarr"
    shutil.copytree(tiny_store, store)
    server = Server(www, www.parent / f"{www.name}-server.log")
    yield server, str(store), f"http://127.0.0.1:{server.port}/tiny.zarr"
    server.close()


def test_open_select_and_dataset_over_plain_http(served):
    server, local, url = served
    mark = server.mark()
    ds = cmbcube.open(url)
    opened = server.requests(mark)
    # consolidated metadata: the whole store's metadata in one request, no array metadata fetched
    assert [r for r in opened if r.endswith(META_NAMES)] == ["/tiny.zarr/zarr.json"]
    # besides it only the small index coordinates (one chunk each) and n_sims (for sim_exists); no map is
    # read to open
    small = {f"/tiny.zarr/{name}/c/0" for name in [*ds.indexes, "beam_fwhm", "n_sims"]}
    assert set(opened) - {"/tiny.zarr/zarr.json"} <= small, sorted(opened)
    assert len(opened) <= 2 + len(ds.indexes)
    assert not any(r.startswith(("/tiny.zarr/obs/", "/tiny.zarr/cmb/")) for r in opened)

    mark = server.mark()
    m = ds.obs.sel(split="test", sim=1, detector=143, field="Q").values
    assert np.array_equal(m, zarr.open_group(local, mode="r")["obs"][2, 1, 4, 1])
    selected = server.requests(mark)
    # the sim's obs shard, and its done-flag once (cmbcube.open reads a sim whole or not at all)
    shard = [r for r in selected if r == "/tiny.zarr/obs/c/2/1/0/0/0"]
    flag = [r for r in selected if r.startswith("/tiny.zarr/sim_done/")]
    assert 1 <= len(shard) <= 2 and len(flag) <= 2 and len(shard) + len(flag) == len(selected), selected

    remote = CubeDataset(url, "test", detectors=[143, 353], fields=["I", "Q"], view="faces")
    here = CubeDataset(local, "test", detectors=[143, 353], fields=["I", "Q"], view="faces")
    assert len(remote) == len(here) == 2
    for i in range(2):
        a, b = remote[i], here[i]
        assert torch.equal(a["inputs"], b["inputs"]) and torch.equal(a["target"], b["target"])
    batch = next(iter(make_loader(remote, batch_size=2, shuffle=False)))
    assert torch.equal(batch["inputs"][1], here[1]["inputs"])
    assert "test 2/2 done" in cube.summary(url)
    assert server.writes() == []


def test_missing_or_unreachable_urls_are_clear_errors(served):
    server, _, url = served
    with pytest.raises(cube.StoreError, match="missing.zarr: cannot open a cube there"):
        cmbcube.open(url.replace("tiny.zarr", "missing.zarr"))
    with socket.socket() as s:                 # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(cube.StoreError, match="cannot open a cube there"):
        cmbcube.open(f"http://127.0.0.1:{port}/tiny.zarr")
    assert main(["info", url.replace("tiny.zarr", "missing.zarr")]) == 2


def stale_metadata(path) -> list[str]:
    """Arrays whose metadata in the root's consolidated copy differs from their own zarr.json
    (or is missing there, or names an array that no longer exists)."""
    path = Path(path)
    consolidated = json.loads((path / "zarr.json").read_text())["consolidated_metadata"]["metadata"]
    stale = []
    for meta in path.rglob("zarr.json"):
        name = meta.parent.relative_to(path).as_posix()
        if name != "." and consolidated.get(name) != json.loads(meta.read_text()):
            stale.append(name)
    return stale + [n for n in consolidated if not (path / n / "zarr.json").is_file()]


def test_every_stage_leaves_consolidated_metadata(tiny_store, tmp_path):
    store = str(tmp_path / "stages.zarr")
    shutil.copytree(tiny_store, store)
    assert stale_metadata(store) == []                                            # simulate
    preprocess.run(store, scheduler="synchronous")
    assert stale_metadata(store) == []
    ilc.run(store, ilc.ILCConfig(method="hilc", fields=("I",)), splits=("test",), scheduler="synchronous")
    assert stale_metadata(store) == []
    config = train.TrainConfig(model="patch-unet", detectors=(143,), epochs=1, batch_size=16, repeats=1,
                               patch_side=8, base_channels=4, train_sims=1, lr_start=1e-3, lr_end=1e-4,
                               transform="standardize", target_transform="standardize")
    train.run(store, config, run_name="tiny-unet", device="cpu", progress=False)
    assert stale_metadata(store) == []
    predict.run(store, "tiny-unet", splits=("test",), device="cpu", progress=False)
    assert stale_metadata(store) == []
    assert main(["analyze", store, "--scheduler", "synchronous", "--no-progress"]) == 0
    assert stale_metadata(store) == []
    assert {"stats_obs", "pred", "loss_train", "metrics", "spectra"} <= set(cmbcube.open(store).data_vars)
    # and a CMB-ML ingest
    tree = make_example_tree(tmp_path / "tree", nside=8, splits={"test": 1}, detectors=(143, 857))
    ingested = str(tmp_path / "ingested.zarr")
    assert ingest.run(tree, ingested, scheduler="synchronous", progress=False).ok
    assert stale_metadata(ingested) == []


def snapshot(folder) -> dict:
    """{relative path: (bytes, mtime_ns)} of every file and directory under ``folder``."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            full = os.path.join(root, name)
            st = os.stat(full)
            out[os.path.relpath(full, folder)] = (open(full, "rb").read() if name in files else None, st.st_mtime_ns)
    return out


def test_read_only_opens_never_write(tiny_store, tmp_path):
    store = tmp_path / "shared" / "tiny.zarr"
    shutil.copytree(tiny_store, store)
    preprocess.run(str(store), scheduler="synchronous")
    time.sleep(0.05)                         # any later write would move an mtime past the snapshot
    before = snapshot(store.parent)
    ds = cmbcube.open(store)
    _ = ds.obs.sel(split="train", sim=2, detector=353, field="U").values
    _ = ds.cmb.isel(sim=0).mean().values
    assert "train 3/3 done" in cube.summary(str(store))
    cube.done_flags(str(store))
    cube.read_attrs(str(store))
    preprocess.load_stats(str(store))
    data = CubeDataset(str(store), "train", detectors=[100, 143], fields=["I"], view="patches", patch_side=8,
                       transform="standardize")
    next(iter(make_loader(data, batch_size=4)))
    data[0]
    assert main(["info", str(store)]) == 0
    assert snapshot(store.parent) == before
