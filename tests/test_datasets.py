import functools
import http.server
import os
import shutil
import threading

import numpy as np
import pytest
import torch
import zarr

import cmbcube
from cmbcube.cube.datasets import CubeDataset, SelectionError, make_loader
from cmbcube.science import geometry, transforms
from cmbcube.stages import preprocess, simulate
from helpers import small_recipe


@pytest.fixture(scope="module")
def prepped(tmp_path_factory, tiny_store):
    path = tmp_path_factory.mktemp("prep") / "p.zarr"
    shutil.copytree(tiny_store, path)
    assert preprocess.run(str(path), scheduler="synchronous").status == "computed"
    return str(path)


def test_statistics_equal_numpy(prepped):
    ds = cmbcube.open(prepped)
    raw = zarr.open_group(prepped, mode="r")
    obs = raw["obs"][0, :3].astype(np.float64)              # train sims 0..2
    cmb = raw["cmb"][0, :3].astype(np.float64)
    stats = ds.stats_obs
    for di, det in enumerate(ds.detector.values):
        for fi, field in enumerate(ds.field.values):
            x = obs[:, di, fi].ravel()
            s = stats.sel(detector=det, field=field)
            if np.isnan(x).all():
                assert np.isnan(s.values).all()
                continue
            assert float(s.sel(stat="min")) == x.min() and float(s.sel(stat="max")) == x.max()
            assert float(s.sel(stat="mean")) == pytest.approx(x.mean(), rel=1e-12, abs=1e-12)
            assert float(s.sel(stat="std")) == pytest.approx(x.std(), rel=1e-10)
            width = (x.max() - x.min()) / preprocess.BINS
            for p in preprocess.PERCENTILES:
                assert abs(float(s.sel(stat=f"p{p:g}")) - np.percentile(x, p)) <= 2 * width
    c = ds.stats_cmb.sel(field="I")
    assert float(c.sel(stat="std")) == pytest.approx(cmb[:, 0].std(), rel=1e-10)
    assert ds.stats_obs.attrs["split"] == "train" and ds.stats_obs.attrs["sims"] == "[0, 1, 2]"
    assert ds.attrs["recipe_hash"]                      # provenance kept
    assert preprocess.run(prepped, scheduler="synchronous").status == "up to date"


@pytest.mark.parametrize("spec", ["none", "minmax", "standardize", "robust", "scale:5"])
def test_transforms_round_trip(spec):
    rng = np.random.default_rng(0)
    x = rng.normal(30, 80, (3, 500)).astype(np.float32)
    stats = {"min": x.min(1), "max": x.max(1), "mean": x.mean(1), "std": x.std(1),
             "p25": np.percentile(x, 25, 1), "p50": np.median(x, 1), "p75": np.percentile(x, 75, 1)}
    t = transforms.build(spec, stats, 3)
    # exact in float64
    assert np.allclose(t.inverse(t.forward(x, dtype=np.float64)), x, rtol=1e-12, atol=1e-12)
    # float32 samples: exact up to float32 rounding of the transformed values
    y = t.forward(x)
    tol = 2 * np.finfo(np.float32).eps * (np.abs(x).max() + t.scale.max())
    assert np.abs(t.inverse(y) - x).max() < tol
    assert float((t.inverse(torch.from_numpy(y)) - torch.from_numpy(x).double()).abs().max()) < tol
    if spec == "minmax":
        assert y.min() == 0 and y.max() == pytest.approx(1)
    if spec == "scale:5":
        assert np.allclose(y, x / 5)
    batch = np.stack([x, x])
    assert np.abs(t.inverse(t.forward(batch, axis=1), axis=1) - batch).max() < tol


def test_transform_errors():
    with pytest.raises(ValueError, match="allowed: none, minmax"):
        transforms.build("zscore", None, 1)
    with pytest.raises(ValueError, match="cmbcube preprocess"):
        transforms.build("minmax", None, 1)


def test_views_and_channels(prepped):
    ds = CubeDataset(prepped, "train", fields=["I", "Q", "U"], view="faces", transform="standardize",
                     target_transform="scale:5")
    assert len(ds) == 3 and len(ds.channels) == 7 * 3 + 2
    assert ds.channels[-2:] == [(545, "I"), (857, "I")]
    item = ds[1]
    assert item["inputs"].shape == (23, 64, 48) and item["target"].shape == (3, 64, 48) and item["sim"] == 1
    raw = zarr.open_group(prepped, mode="r")
    truth = raw["cmb"][0, 1]
    back = ds.target_transform.inverse(ds.to_sphere(item["target"].numpy()))
    assert np.allclose(back, truth, rtol=1e-6, atol=1e-4)
    x = ds.transform.inverse(ds.to_sphere(item["inputs"].numpy()))
    assert np.allclose(x[ds.channels.index((143, "Q"))], raw["obs"][0, 1, 4, 1], rtol=1e-5, atol=1e-3)
    sky = CubeDataset(prepped, "test", detectors=[217, 100], view="sky")
    assert sky.channels == [(217, "I"), (100, "I")] and sky[0]["inputs"].shape == (2, 12 * 16 ** 2)
    patches = CubeDataset(prepped, "test", detectors=[143], view="patches", patch_side=4)
    assert len(patches) == 2 * 192 and patches.npatch == 192
    rebuilt = geometry.from_patches(np.stack([patches[k]["inputs"][0].numpy() for k in range(192)]), 16)
    assert np.array_equal(rebuilt, raw["obs"][2, 0, 4, 0])
    assert patches[194]["sim"] == 1 and patches[194]["patch"] == 2


def test_component_target(prepped):
    ds = CubeDataset(prepped, "valid", detectors=[353], target="dust", target_detector=353, fields=["I"])
    raw = zarr.open_group(prepped, mode="r")
    assert np.array_equal(ds[0]["target"][0].numpy(), raw["components"][1, 0, 0, 6, 0])


@pytest.mark.parametrize("kwargs, message", [
    ({"detectors": [143, 150]}, "detectors \\[150\\]"),
    ({"split": "training"}, "train, valid, test"),
    ({"detectors": [545, 857], "fields": ["Q", "U"]}, "I only"),
    ({"sims": [0, 7]}, "not finished"),
    ({"view": "mollweide"}, "sky, faces, patches"),
    ({"view": "patches", "patch_side": 32}, "exceeds nside"),
    ({"target": "dust"}, "target_detector"),
    ({"target": "co"}, "allowed: cmb, dust"),
    ({"transform": "minmax"}, None),
])
def test_bad_selections_are_clear(prepped, tiny_store, kwargs, message):
    if message is None:       # minmax without statistics in the store
        with pytest.raises(ValueError, match="cmbcube preprocess"):
            CubeDataset(tiny_store, **kwargs)
        return
    with pytest.raises((SelectionError, ValueError), match=message):
        CubeDataset(prepped, **kwargs)


def test_i_only_cube_refuses_polarisation(tmp_path):
    r = small_recipe(fields=["I"], detectors=[100, 143], splits={"train": 1, "valid": 0, "test": 0}, keep=["cmb"])
    store = str(tmp_path / "i.zarr")
    simulate.run(r, store, scheduler="synchronous", progress=False)
    with pytest.raises(SelectionError, match="fields \\['Q', 'U'\\] are not in the cube"):
        CubeDataset(store, fields=["I", "Q", "U"])
    with pytest.raises(SelectionError, match="target fields"):
        CubeDataset(store, fields=["I"], target_fields=["Q"])


class CountingStore(zarr.storage.LocalStore):
    bytes_read = 0

    async def get(self, key, prototype=None, byte_range=None):
        buf = await super().get(key, prototype, byte_range)
        if buf is not None and "/c/" in key:
            CountingStore.bytes_read += len(buf)
        return buf


def test_asking_for_i_reads_only_i(prepped):
    npix = 12 * 16 ** 2
    store = CountingStore(prepped, read_only=True)
    ds = CubeDataset(store, "train", detectors=[100, 143], fields=["I"], target_fields=["I"])
    CountingStore.bytes_read = 0
    ds[0]
    # 2 input maps + 1 target map (+ checksums and shard indexes): nothing of Q/U
    assert 3 * npix * 4 <= CountingStore.bytes_read < 3 * npix * 4 + 4096
    CountingStore.bytes_read = 0
    CubeDataset(store, "train", detectors=[100, 143], fields=["I", "Q", "U"])[0]
    assert CountingStore.bytes_read >= 9 * npix * 4


def test_dataloader_workers_match_single_process_even_after_dask(prepped):
    ds = CubeDataset(prepped, "train", fields=["I", "Q"], view="faces", transform="minmax")
    # the parent runs a Dask computation first (measured pitfall: forked workers hanging)
    assert np.isfinite(float(cmbcube.open(prepped).obs.sel(split="train", field="I").mean().compute()))
    runs = []
    for workers in (0, 2):
        batches = [(b["sim"].tolist(), b["inputs"]) for b in make_loader(ds, batch_size=2, num_workers=workers,
                                                                         seed=123, timeout=60 if workers else 0)]
        runs.append(batches)
    assert [s for s, _ in runs[0]] == [s for s, _ in runs[1]]
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(runs[0], runs[1]))
    assert sorted(sum((s for s, _ in runs[0]), [])) == [0, 1, 2]


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with HTTP Range support (as any real web or object server has):
    sharded arrays are read by byte ranges."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        spec = self.headers.get("Range")
        path = self.translate_path(self.path)
        if not spec or not os.path.isfile(path):
            return super().do_GET()
        data = open(path, "rb").read()
        start, _, end = spec.replace("bytes=", "").partition("-")
        if start == "":
            first, last = len(data) - int(end), len(data) - 1
        else:
            first, last = int(start), min(int(end) if end else len(data) - 1, len(data) - 1)
        body = data[first:last + 1]
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {first}-{last}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def http_url(prepped):
    handler = functools.partial(RangeHandler, directory=os.path.dirname(prepped))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/{os.path.basename(prepped)}"
    server.shutdown()


def test_dataset_and_open_over_http(prepped, http_url):
    remote = CubeDataset(http_url, "test", detectors=[143, 353], fields=["I", "Q"], view="faces",
                         transform="minmax")
    local = CubeDataset(prepped, "test", detectors=[143, 353], fields=["I", "Q"], view="faces", transform="minmax")
    assert torch.equal(remote[1]["inputs"], local[1]["inputs"])
    ds = cmbcube.open(http_url)
    m = ds.obs.sel(split="test", sim=0, detector=143, field="I")
    assert np.array_equal(m.values, zarr.open_group(prepped, mode="r")["obs"][2, 0, 4, 0])


def test_fast_shard_reader_matches_zarr_and_detects_corruption(prepped, tmp_path):
    from cmbcube.cube.shardread import ShardReader
    group = zarr.open_group(prepped, mode="r")
    reader = ShardReader(prepped, "obs", group["obs"])
    assert reader.ok
    maps = [(d, f) for d in range(9) for f in range(3)]
    got = reader.read((0, 2), maps)
    expected = group["obs"][0, 2].reshape(27, -1)
    assert np.array_equal(got, expected, equal_nan=True)          # 545/857 Q/U: NaN fill
    assert np.isnan(reader.read((2, 5), [(0, 0)])).all()           # sim never written: fill
    cmb = ShardReader(prepped, "cmb", group["cmb"])
    assert np.array_equal(cmb.read((1, 0), [(2,), (0,)]), group["cmb"][1, 0][[2, 0]])
    # corrupt one byte of one map: the checksum catches it
    copy = tmp_path / "c.zarr"
    shutil.copytree(prepped, copy)
    shard = copy / "obs" / "c" / "0" / "1" / "0" / "0" / "0"
    data = bytearray(shard.read_bytes())
    data[100] ^= 0xFF
    shard.write_bytes(bytes(data))
    bad = ShardReader(str(copy), "obs", zarr.open_group(str(copy), mode="r")["obs"])
    with pytest.raises(ValueError, match="checksum mismatch"):
        bad.read((0, 1), [(0, 0)])
