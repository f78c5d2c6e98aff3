import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import zarr

import cmbcube
from cmbcube import cube, networks
from cmbcube.stages import checkpoints, predict, preprocess, simulate, train
from helpers import small_recipe


@pytest.fixture(scope="module")
def store32(tmp_path_factory):
    """nside 32 (the smallest the 5-level cmbNNCS UNet accepts), I only, few sims."""
    path = str(tmp_path_factory.mktemp("train") / "s.zarr")
    r = small_recipe(nside=32, fields=["I"], detectors=[100, 143, 217, 353], keep=["cmb"],
                     splits={"train": 4, "valid": 2, "test": 3}, foregrounds__components=["dust", "synchrotron"])
    assert simulate.run(r, path, scheduler="synchronous", progress=False).ok
    preprocess.run(path, scheduler="synchronous")
    return path


@pytest.mark.parametrize("name, nside, shape", [
    ("cmbnncs-unet5", 32, (2, 4, 128, 96)),
    ("cmbnncs-unet8", 256, (1, 4, 1024, 768)),
    ("patch-unet", 32, (3, 4, 8, 8)),
    ("patch-unet", 512, (1, 4, 128, 128)),
])
def test_model_shapes(name, nside, shape):
    net = networks.build(name, 4, 1, nside).eval()
    with torch.no_grad():
        out = net(torch.randn(*shape))
    assert out.shape == (shape[0], 1) + shape[2:]


def test_published_unet_structure():
    net = networks.build("cmbnncs-unet8", 4, 1, 256)
    convs = [m for m in net.encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [16, 32, 64, 128, 256, 512, 1024, 2048]
    assert [c.kernel_size[0] for c in convs] == [5, 5, 4, 4, 4, 4, 4, 4] and all(c.stride == (2, 2) for c in convs)
    assert isinstance(net.last[0], torch.nn.ConvTranspose2d) and net.last[0].in_channels == 32
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.last) and isinstance(net.last[-1], torch.nn.PReLU)
    unet5 = [m.out_channels for m in networks.build("cmbnncs-unet5", 4, 1, 128).encoder.modules()
             if isinstance(m, torch.nn.Conv2d)]
    assert unet5 == [32, 64, 128, 256, 512]


def test_input_size_checks():
    with pytest.raises(ValueError, match="multiple of 256"):
        networks.build("cmbnncs-unet8", 4, 1, 128)
    with pytest.raises(ValueError, match="multiple of 32"):
        networks.build("cmbnncs-unet5", 4, 1, 16)
    net = networks.build("cmbnncs-unet5", 4, 1, 32)
    with pytest.raises(ValueError, match="divisible by 32"):
        net(torch.randn(1, 4, 120, 90))
    assert networks.min_nside("cmbnncs-unet5") == 32 and networks.min_nside("cmbnncs-unet8") == 256


def test_few_steps_reduce_the_loss_on_a_fixed_batch(store32):
    ds = train.datasets_for(store32, train.TrainConfig(transform="standardize"), "train")
    batch = torch.utils.data.default_collate([ds[i] for i in range(2)])
    torch.manual_seed(0)
    for name in ("cmbnncs-unet5", "patch-unet"):
        if name == "patch-unet":
            pds = train.datasets_for(store32, train.TrainConfig(model=name, **train.defaults(name)), "train")
            batch = torch.utils.data.default_collate([pds[i] for i in range(16)])
        net = networks.build(name, 4, 1, 32)
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        losses = []
        for _ in range(15):
            opt.zero_grad()
            loss = torch.nn.functional.l1_loss(net(batch["inputs"]), batch["target"])
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert losses[-1] < 0.7 * losses[0], (name, losses[0], losses[-1])


def test_resume_is_bit_for_bit(store32, tmp_path):
    config = train.TrainConfig(epochs=2, batch_size=2, repeats=2, lr_start=1e-3, lr_end=1e-4)
    straight = str(tmp_path / "a.zarr")
    paused = str(tmp_path / "b.zarr")
    shutil.copytree(store32, straight)
    shutil.copytree(store32, paused)
    full = train.run(straight, config, progress=False)
    # interrupted run: stopped during epoch 2 (same schedule), then resumed
    train_one_epoch_then_stop(paused, config)
    resumed = train.run(paused, config, resume=True, progress=False)
    assert resumed.train_loss == full.train_loss and resumed.valid_loss == full.valid_loss
    a = torch.load(full.checkpoint, weights_only=True)["model"]
    b = torch.load(resumed.checkpoint, weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert cmbcube.open(paused).loss_train.sel(run="cmbnncs-unet5").values[:2].tolist() == full.train_loss
    assert (cube.run_dir(paused, "cmbnncs-unet5") / "loss.png").stat().st_size > 1000


def train_one_epoch_then_stop(store, config):
    """Simulate an interruption after epoch 1: run the full configuration but stop the process's
    loop by making epoch 2 fail, keeping the epoch-1 checkpoint."""
    original = train.evaluate
    calls = {"n": 0}

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    train.evaluate = failing
    try:
        with pytest.raises(KeyboardInterrupt):
            train.run(store, config, progress=False)
    finally:
        train.evaluate = original
    assert [p.name for p in sorted(cube.run_dir(store, "cmbnncs-unet5").glob("epoch_*.pt"))] == ["epoch_0001.pt"]


class Identity(torch.nn.Module):
    def forward(self, x):
        return x


def test_predict_round_trips_transform_and_face_layout(store32, tmp_path):
    """A model that outputs its input reproduces the input map exactly on the sphere."""
    path = str(tmp_path / "id.zarr")
    shutil.copytree(store32, path)
    for transform in ("scale:5", "standardize"):
        run = f"id-{transform.replace(':', '')}"
        config = train.TrainConfig(detectors=(143,), transform=transform, target_transform=transform, epochs=1)
        cmbcube.cube.ensure_run(path, run, "identity", {**config.as_dict(), "checkpoint_dir": str(tmp_path)}, 0.0)
        if transform == "standardize":
            # target stats differ from the 143 GHz input stats: same transform needs the same statistics
            continue
        report = predict.run(path, run, splits=("test",), model=Identity())
        assert len(report.written) == 3
        raw = zarr.open_group(path, mode="r")
        got = cmbcube.open(path).pred.sel(run=run, split="test", field="I").values[:3]
        assert np.allclose(got, raw["obs"][2, :3, 1, 0], rtol=1e-6, atol=1e-5)
    # patches view reassembles exactly too
    config = train.TrainConfig(model="patch-unet", detectors=(143,), transform="scale:5", target_transform="scale:5")
    cmbcube.cube.ensure_run(path, "id-patch", "identity", {**config.as_dict(), "checkpoint_dir": str(tmp_path)}, 0.0)
    predict.run(path, "id-patch", splits=("valid",), model=Identity())
    got = cmbcube.open(path).pred.sel(run="id-patch", split="valid", field="I").values[:2]
    assert np.allclose(got, zarr.open_group(path, mode="r")["obs"][1, :2, 1, 0], rtol=1e-6, atol=1e-5)


def test_trained_model_predicts_exactly_the_requested_sims(store32, tmp_path):
    path = str(tmp_path / "t.zarr")
    shutil.copytree(store32, path)
    cli = [sys.executable, "-m", "cmbcube.cli"]
    proc = subprocess.run(cli + ["train", path, "--model", "patch-unet", "--epochs", "1", "--no-progress",
                                 "--run", "p", "--patch-side", "16", "--train-sims", "2"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run(cli + ["predict", path, "--run", "p", "--split", "valid", "--no-progress"],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and "predicted 2 sim(s)" in proc.stdout, proc.stderr
    ds = cmbcube.open(path)
    done = ds.pred_done.sel(run="p").values
    assert done[1, :2].all() and done.sum() == 2
    assert np.isfinite(ds.pred.sel(run="p", split="valid", sim=1, field="I").values).all()
    assert np.isnan(ds.pred.sel(run="p", split="test", sim=0, field="I").values).all()
    assert int(ds.run_epoch.sel(run="p")) == 1
    proc = subprocess.run(cli + ["predict", path, "--run", "p", "--split", "valid"], capture_output=True, text=True)
    assert "nothing to do" in proc.stdout
    proc = subprocess.run(cli + ["train", path, "--model", "cmbnncs-unet8"], capture_output=True, text=True)
    assert proc.returncode == 2 and "multiple of 256" in proc.stderr


def test_early_stopping(store32, tmp_path, monkeypatch):
    path = str(tmp_path / "e.zarr")
    shutil.copytree(store32, path)
    # a validation loss that only gets worse: stop after `patience` stale epochs
    losses = iter([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    monkeypatch.setattr(train, "evaluate", lambda *args, **kwargs: next(losses))
    config = train.TrainConfig(epochs=6, batch_size=4, repeats=1, lr_start=1e-3, lr_end=1e-4, early_stopping=1)
    report = train.run(path, config, progress=False)
    assert report.stopped_early and report.epochs_done == 2
    assert (cube.run_dir(path, "cmbnncs-unet5") / "epoch_0002.pt").exists()


def test_train_refuses_checkpoints_larger_than_the_free_disk_before_creating_the_run(store32, tmp_path,
                                                                                     monkeypatch, capsys):
    """The run's checkpoints (weights + Adam's moments per saved epoch) are sized before anything is
    created; a disk without room for them is refused with exit 2 and the figures, --force-size trains."""
    import collections

    from cmbcube import cube
    from cmbcube.cli import main
    from cmbcube.compute import limits
    path = str(tmp_path / "t.zarr")
    shutil.copytree(store32, path)
    config = train.TrainConfig(model="patch-unet", **{**train.defaults("patch-unet"), "patch_side": 16,
                                                      "epochs": 2, "checkpoint_every": 1})
    ds = train.datasets_for(path, config, "train")
    net = networks.build(config.model, len(ds.channels), 1, ds.nside, config,
                         branches=networks.branch_sizes(ds.channels), n_train=len(ds))
    need = 2 * checkpoints.checkpoint_bytes(sum(p.numel() for p in net.parameters()), False)
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(limits.shutil, "disk_usage", lambda _: usage(10 * need, 9 * need, need // 2))
    args = ["train", path, "--model", "patch-unet", "--epochs", "2", "--checkpoint-every", "1", "--patch-side", "16",
            "--run", "p", "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "train p refused before creating anything" in err and f"needs {limits.human(need)} on disk" in err, err
    assert "run" not in cube.read_group(path).array_keys() and not os.path.exists(path + ".runs")
    assert main(args + ["--force-size", "--keep-checkpoints", "all"]) == 0
    assert len(list((tmp_path / "t.zarr.runs" / "p").glob("epoch_*.pt"))) == 2
