"""Adding a network is one builder and one registry line: a toy registered from this file alone is
trained and predicted through the command line, and an unregistered name is refused."""
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import cmbcube
from cmbcube import cube
from cmbcube.cli import main
from cmbcube.errors import InputError
from cmbcube.networks import NETWORKS, Network
from cmbcube.recipe import RecipeError
from cmbcube.stages import train
from helpers import small_recipe

TOY = "toy-pixel"
SCALE = 100.0


def build_toy(in_channels, out_channels, nside, config=None, *, branches=None, n_train=None):
    """The same linear combination of the input channels at every pixel of the sphere (an ILC by gradient descent)."""
    return torch.nn.Conv1d(in_channels, out_channels, 1)


@pytest.fixture
def toy():
    NETWORKS.register(TOY, Network(build=build_toy, view="sky", summary="per-pixel linear map",
                                   defaults=dict(detectors=(100, 143, 217), transform=f"scale:{SCALE:g}",
                                                 target_transform=f"scale:{SCALE:g}", loss="mse", batch_size=1,
                                                 repeats=4, lr_start=0.03, lr_end=0.03)))
    yield NETWORKS.get(TOY)
    NETWORKS.unregister(TOY)


def test_a_registered_toy_network_trains_and_predicts_through_the_cli(toy, tiny_store, tmp_path, capsys):
    store = str(tmp_path / "toy.zarr")
    shutil.copytree(tiny_store, store)
    assert main(["train", store, "--model", TOY, "--epochs", "2", "--fields", "I", "--no-progress",
                 "--keep-checkpoints", "all"]) == 0
    losses = cmbcube.open(store).loss_train.sel(run=TOY).values[:2]
    assert np.isfinite(losses).all() and losses[1] < losses[0], losses
    assert [p.name for p in sorted(cube.run_dir(store, TOY).glob("epoch_*.pt"))] == ["epoch_0001.pt", "epoch_0002.pt"]

    # --epoch last: the default is the best-validation epoch, which on this one-sky valid split may be either
    assert main(["predict", store, "--run", TOY, "--epoch", "last", "--no-progress"]) == 0
    c = cmbcube.open(store)
    assert int(c.run_epoch.sel(run=TOY)) == 2
    assert c.pred_done.sel(run=TOY, split="test").values[:2].all()
    pred = c.pred.sel(run=TOY, split="test", field="I").values[:2]
    assert pred.shape == (2, 12 * 16 ** 2) and np.isfinite(pred).all()
    assert np.isnan(c.pred.sel(run=TOY, split="test", field="Q").values[:2]).all()     # not trained on Q
    # what was stored is the trained network's output in physical units: w . obs + SCALE * b at every pixel
    state = torch.load(cube.run_dir(store, TOY) / "epoch_0002.pt", weights_only=True)["model"]
    w, b = state["weight"].double().numpy()[0, :, 0], float(state["bias"][0])
    obs = c.obs.sel(split="test", detector=[100, 143, 217], field="I").values[:2]        # (sim, detector, pixel)
    assert np.allclose(pred, np.einsum("d,sdp->sp", w, obs) + SCALE * b, rtol=1e-4, atol=1e-3)
    assert not toy.uncertainty and "pred_sigma" not in c        # no Monte Carlo, no sigma maps


def test_the_registered_toy_is_offered_by_recipes_and_help(toy, capsys):
    assert small_recipe(pipeline__models=[TOY])["pipeline"]["models"] == [TOY]
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert f"{TOY} (per-pixel linear map)" in " ".join(capsys.readouterr().out.split())


def test_an_unregistered_network_is_refused_with_the_allowed_names(tiny_store, capsys):
    assert TOY not in NETWORKS
    assert main(["train", tiny_store, "--model", TOY, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"--model: unknown network '{TOY}'" in err and all(name in err for name in NETWORKS.names()), err
    with pytest.raises(RecipeError, match=f"pipeline.models\\[0\\]: '{TOY}' is not allowed; allowed values: "
                                          + ", ".join(NETWORKS.names())):
        small_recipe(pipeline__models=[TOY])
    with pytest.raises(InputError, match="allowed: cmbnncs-unet5"):
        train.defaults(TOY)


def test_the_network_names_are_known_without_importing_torch():
    code = ("import sys, cmbcube.recipe, cmbcube.networks as n; "
            "assert 'torch' not in sys.modules, 'torch imported'; print(','.join(n.NETWORKS.names()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [",".join(("cmbnncs-unet5", "cmbnncs-unet8", "patch-unet", "pixel-linear", "petroff"))]
