"""Issue 21: training never silently replaces a run (refused with --resume / --run / --overwrite named),
only the last and the best checkpoints are kept by default, and Monte Carlo prediction's memory does
not grow with the number of passes."""
import shutil

import numpy as np
import pytest
import torch

import cmbcube
from cmbcube import cube
from cmbcube.cli import main
from cmbcube.errors import InputError, MissingFileError
from cmbcube.networks import NETWORKS, Network, petroff
from cmbcube.stages import checkpoints, predict, train
from helpers import interrupt_training, zarr_files

TOY = "toy-refusal"
ARGS = ["--model", TOY, "--fields", "I", "--run", "r", "--device", "cpu", "--no-progress"]


def build_toy(in_channels, out_channels, nside, config=None, *, branches=None, n_train=None):
    return torch.nn.Conv1d(in_channels, out_channels, 1)     # one pixel-wise linear map: trains in milliseconds


@pytest.fixture(autouse=True)
def toy(monkeypatch):
    monkeypatch.setattr(train, "plot_losses", lambda *args: None)    # the loss plot is tested elsewhere; slow
    NETWORKS.register(TOY, Network(build=build_toy, view="sky", summary="pixel-wise linear map",
                                   defaults=dict(detectors=(100, 143), transform="scale:100",
                                                 target_transform="scale:100", loss="mse", batch_size=2,
                                                 repeats=1, lr_start=0.01, lr_end=0.001)))
    yield
    NETWORKS.unregister(TOY)


def toy_config(epochs):
    return train.TrainConfig(**{**NETWORKS.get(TOY).defaults, "model": TOY, "fields": ("I",), "epochs": epochs})


def everything(store):
    """The bytes of the store and of its runs folder (checkpoints, loss plots)."""
    runs = cube.runs_dir(store)
    return zarr_files(store), zarr_files(runs) if runs.exists() else {}


@pytest.fixture
def store(tiny_store, tmp_path):
    path = str(tmp_path / "s.zarr")
    shutil.copytree(tiny_store, path)
    return path


def test_training_a_finished_run_again_is_refused_until_resume_or_overwrite_says_how(store, capsys):
    """The README tour's trap: `train` again on a trained and predicted run (other --epochs too) is refused
    with exit 2 before any work, store and checkpoints byte for byte unchanged; --overwrite drops the run
    with its predictions and metrics, then trains it afresh, so predict has work to do again."""
    assert main(["train", store, *ARGS, "--epochs", "2"]) == 0
    assert main(["predict", store, "--run", "r", "--device", "cpu", "--no-progress"]) == 0
    capsys.readouterr()
    before = everything(store)
    for epochs in ("2", "3"):
        assert main(["train", store, *ARGS, "--epochs", epochs]) == 2
        err = capsys.readouterr().err
        assert f"run 'r' already exists in {store}: finished: all 2 of 2 epochs" in err, err
        assert "--resume        it is finished" in err and "cannot add epochs" in err
        assert "--run NEWNAME" in err and "--overwrite     drop run 'r' and everything made from it (its " \
                                          "predictions (2 sim(s))" in err and "Traceback" not in err
    assert everything(store) == before
    # --resume on a finished run only reports it
    assert main(["train", store, *ARGS, "--epochs", "2", "--resume"]) == 0
    assert everything(store) == before
    assert main(["train", store, *ARGS, "--epochs", "2", "--resume", "--overwrite"]) == 2
    assert "exclude each other" in capsys.readouterr().err
    # --overwrite: the run, its predictions and checkpoints go first, then it trains from scratch
    assert main(["train", store, *ARGS, "--epochs", "3", "--overwrite"]) == 0
    assert "--overwrite: dropped run 'r'" in capsys.readouterr().out
    ds = cmbcube.open(store)
    assert list(ds.run.values) == ["r"] and int(ds.pred_done.sum()) == 0
    assert np.isfinite(ds.loss_train.sel(run="r").values[:3]).all()
    assert cube.run_config(store, 0)["epochs"] == 3
    assert predict.run(store, "r", device="cpu", progress=False).epoch == 3


def test_a_killed_run_and_left_checkpoints_are_refused_and_resume_keeps_predictions_consistent(store, tmp_path,
                                                                                               monkeypatch):
    config = toy_config(3)
    original = interrupt_training(monkeypatch)    # dies in epoch 2
    with pytest.raises(KeyboardInterrupt):
        train.run(store, config, "r", device="cpu", progress=False)
    monkeypatch.setattr(train, "evaluate", original)
    before = everything(store)
    with pytest.raises(InputError, match=r"unfinished: 1 of 3 epochs done[\s\S]*resume=True     continue it from "
                                         r"epoch 1[\s\S]*run=NEWNAME[\s\S]*overwrite=True"):
        train.run(store, config, "r", device="cpu", progress=False)
    # checkpoints left by an earlier store of that name would be mixed with the new run's: refused too
    other = str(tmp_path / "other.zarr")
    shutil.copytree(store, other)
    cube.remove_run(other, "r")
    shutil.copytree(cube.run_dir(store, "r"), cube.run_dir(other, "r"))
    with pytest.raises(InputError, match="not on the store's run axis, but .* holds its checkpoints"):
        train.run(other, config, "r", device="cpu", progress=False)
    # predictions of the epoch-1 weights: resuming would change the weights under them
    predict.run(store, "r", device="cpu", progress=False)
    with pytest.raises(InputError, match=r"holds predictions of 2 sim\(s\)[\s\S]*drop\('.*', 'pred', run='r'\)"):
        train.run(store, config, "r", device="cpu", resume=True, progress=False)
    assert everything(store)[1] == before[1]
    # --overwrite clears the left checkpoints; killed before its first checkpoint, the run resumes from epoch 0
    interrupt_training(monkeypatch, at_call=1)
    with pytest.raises(KeyboardInterrupt):
        train.run(other, config, "r", device="cpu", overwrite=True, progress=False)
    monkeypatch.setattr(train, "evaluate", original)
    assert checkpoints.saved_epochs(cube.run_dir(other, "r")) == []
    with pytest.raises(InputError, match=r"unfinished: no checkpoint yet[\s\S]*resume=True     start it from epoch 0"):
        train.run(other, config, "r", device="cpu", progress=False)
    assert train.run(other, config, "r", device="cpu", resume=True, progress=False).epochs_done == 3
    with pytest.raises(MissingFileError, match="no run 'x'"):
        train.run(other, config, "x", device="cpu", resume=True, progress=False)
    assert "x" not in list(cmbcube.open(other).run.values)


def test_only_the_last_and_the_best_checkpoints_are_kept_and_resume_stays_bit_identical(tiny_store, tmp_path,
                                                                                         monkeypatch):
    """Validation losses 3, 1, 2, 4: epochs 2 (best) and 4 (last) stay; a run killed in epoch 4 (epoch 1
    already deleted) resumes to the same weights; --keep-checkpoints all keeps every epoch."""
    config = toy_config(4)
    paths = {}
    for name, keep, dies in (("straight", None, None), ("killed", None, 4), ("all", "all", None)):
        paths[name] = path = str(tmp_path / f"{name}.zarr")
        shutil.copytree(tiny_store, path)
        fake = {"losses": iter([3.0, 1.0, 2.0, 4.0]), "dies": dies}

        def evaluate(*args, fake=fake, **kwargs):        # this iteration's losses, bound now
            value = next(fake["losses"])
            if value == fake["dies"]:
                raise KeyboardInterrupt
            return value
        monkeypatch.setattr(train, "evaluate", evaluate)
        if dies:
            with pytest.raises(KeyboardInterrupt):
                train.run(path, config, "r", device="cpu", progress=False)
            assert checkpoints.saved_epochs(cube.run_dir(path, "r")) == [2, 3]
            fake.update(losses=iter([4.0]), dies=None)
            report = train.run(path, config, "r", device="cpu", resume=True, progress=False)
        else:
            report = train.run(path, config, "r", device="cpu", progress=False, keep_checkpoints=keep)
        assert report.checkpoint.endswith("epoch_0004.pt") and report.best.endswith("epoch_0002.pt")
    runs = {name: cube.run_dir(path, "r") for name, path in paths.items()}
    assert checkpoints.saved_epochs(runs["straight"]) == [2, 4]
    assert checkpoints.saved_epochs(runs["killed"]) == [2, 4]
    assert checkpoints.saved_epochs(runs["all"]) == [1, 2, 3, 4]
    for epoch in (2, 4):
        a, b = (torch.load(runs[n] / f"epoch_{epoch:04d}.pt", weights_only=True)["model"]
                for n in ("straight", "killed"))
        assert all(torch.equal(a[k], b[k]) for k in a)
    # predict reads the best (--epoch last: the last); an epoch no longer kept is named as such
    with pytest.raises(MissingFileError, match=r"^epoch 1: .* kept: epoch\(s\) 2, 4"):
        predict.run(paths["straight"], "r", epoch=1, device="cpu", progress=False)
    assert predict.run(paths["straight"], "r", device="cpu", progress=False).epoch == 2
    assert predict.run(paths["killed"], "r", epoch="last", device="cpu", progress=False).epoch == 4


def test_monte_carlo_prediction_runs_bounded_batches_with_the_draws_of_one_big_batch(monkeypatch):
    """The passes run `batch` at a time whatever --mc-samples (memory), the dropout masks are drawn as one
    forward pass of all of them would draw them, and the mean and sigma equal one big batch's to rounding."""
    torch.manual_seed(0)
    net = petroff.PetroffNet([1, 1], 1, 4)
    x = torch.randn(1, 2, 192)
    called = []
    hooks = [m.register_forward_pre_hook(lambda mod, args: called.append(mod)) for m in net.dropouts()]
    with torch.no_grad():
        net(x)
    assert called == net.dropouts_in_call_order()
    for h in hooks:
        h.remove()
    monkeypatch.setattr(petroff, "BATCH_PIXELS", 5 * 192)        # nside 4 as if it were a large map
    sizes = []
    net.register_forward_pre_hook(lambda mod, args: sizes[-1].append(args[0].shape[0]))
    results = []
    for batch in (None, 20, 3):
        sizes.append([])
        torch.manual_seed(1)
        results.append(petroff.mc_predict(net, x, samples=20, batch=batch))
    assert sizes == [[5] * 4, [20], [3] * 6 + [2]]
    for mean, sigma in results[1:]:
        assert np.allclose(mean, results[0][0], rtol=1e-6, atol=1e-7)
        assert np.allclose(sigma, results[0][1], rtol=1e-6)
    assert all(m.noise is None for m in net.dropouts())
