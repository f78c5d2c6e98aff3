"""Training a user can trust by default (issue 22): early stopping on a validation plateau with the
best-validation checkpoint predicting, a learning-curve figure per run, and augmentation by the
sphere's exact symmetries (checked against healpy)."""
import shutil

import numpy as np
import pytest
import torch

import cmbcube
from cmbcube import cube
from cmbcube.cli import main
from cmbcube.networks import NETWORKS, Network
from cmbcube.stages import predict, report, report_figures, train

TOY = "toy-trust"
SCALE = 100.0


def build_toy(in_channels, out_channels, nside, config=None, *, branches=None, n_train=None):
    """One linear combination of the input channels at every pixel: exactly equivariant under any
    permutation of the pixels."""
    return torch.nn.Conv1d(in_channels, out_channels, 1)


@pytest.fixture
def toy():
    NETWORKS.register(TOY, Network(build=build_toy, view="sky", summary="per-pixel linear map",
                                   defaults=dict(detectors=(100, 143, 217), fields=("I",),
                                                 transform=f"scale:{SCALE:g}", target_transform=f"scale:{SCALE:g}",
                                                 loss="mse", batch_size=1, repeats=1, lr_start=0.03, lr_end=0.03)))
    yield NETWORKS.get(TOY)
    NETWORKS.unregister(TOY)


def test_a_plateau_stops_at_best_plus_patience_and_predict_uses_the_best_weights(toy, tiny_store, tmp_path,
                                                                                 monkeypatch):
    store = str(tmp_path / "s.zarr")
    shutil.copytree(tiny_store, store)
    # validation loss: improves for 3 epochs, then a plateau that never beats epoch 3 (a tie is no improvement)
    valid = iter([5.0, 4.0, 3.0, 3.5, 3.2, 3.0, 2.0, 1.0])
    monkeypatch.setattr(train, "evaluate", lambda *args, **kwargs: next(valid))
    config = train.TrainConfig(**{**train.defaults(TOY), "model": TOY, "epochs": 20, "early_stopping": 3})
    done = train.run(store, config, progress=False)
    assert done.stopped_early and done.epochs_done == 6 and done.best_epoch == 3
    folder = cube.run_dir(store, TOY)
    assert sorted(p.name for p in folder.glob("epoch_*.pt")) == ["epoch_0003.pt", "epoch_0006.pt"]
    assert cmbcube.open(store).loss_valid.sel(run=TOY).values[:6].tolist() == [5.0, 4.0, 3.0, 3.5, 3.2, 3.0]

    out = predict.run(store, TOY, splits=("test",))
    assert out.epoch == 3
    c = cmbcube.open(store)
    assert int(c.run_epoch.sel(run=TOY)) == 3
    pred = c.pred.sel(run=TOY, split="test", field="I").values[:2]
    # the best checkpoint's weights, applied by hand: w . obs + SCALE * b at every pixel
    best = torch.load(folder / "epoch_0003.pt", weights_only=True)["model"]
    last = torch.load(folder / "epoch_0006.pt", weights_only=True)["model"]
    assert not torch.equal(best["weight"], last["weight"])
    w, b = best["weight"].double().numpy()[0, :, 0], float(best["bias"][0])
    obs = c.obs.sel(split="test", detector=[100, 143, 217], field="I").values[:2]
    assert np.allclose(pred, np.einsum("d,sdp->sp", w, obs) + SCALE * b, rtol=1e-5, atol=1e-4)
    # --epoch last and a number pick the others; one not kept is refused naming the kept ones
    assert predict.chosen_checkpoint(TOY, folder, "last").name == "epoch_0006.pt"
    assert predict.chosen_checkpoint(TOY, folder, 6).name == "epoch_0006.pt"
    with pytest.raises(cmbcube.errors.MissingFileError, match="kept: epoch\\(s\\) 3, 6"):
        predict.chosen_checkpoint(TOY, folder, 4)

    # the report's learning curve: the stored losses, the best epoch and the early stop, on a log axis
    rows = {row["run"]: row for row in report.training_rows(cmbcube.open(store), "test")}
    assert rows[TOY]["best_epoch"] == 3 and rows[TOY]["stopped_epoch"] == 6
    names = report_figures.learning_curves(rows.values(), tmp_path)
    assert names == {TOY: f"learning_curve_{TOY}.png"} and (tmp_path / names[TOY]).stat().st_size > 1000
    row = rows[TOY]
    fig = report_figures.learning_curve_figure(row["train_losses"], row["valid_losses"], "t", None, 3, 6)
    lines = {line.get_gid(): line for line in fig.axes[0].get_lines()}
    stored = cmbcube.open(store)
    assert lines["train"].get_xdata().tolist() == [1, 2, 3, 4, 5, 6]
    assert np.array_equal(lines["train"].get_ydata(), stored.loss_train.sel(run=TOY).values[:6])
    assert np.array_equal(lines["valid"].get_ydata(), stored.loss_valid.sel(run=TOY).values[:6])
    assert list(lines["best"].get_xdata()) == [3, 3] and list(lines["stop"].get_xdata()) == [6, 6]
    assert fig.axes[0].get_yscale() == "log"
    text = "\n".join(report.training_section(list(rows.values()), "test", names))
    assert f"Best validation loss at epoch 3, stopped early at epoch 6: [learning curve]({names[TOY]})" in text


def test_early_stopping_is_on_by_default_and_the_published_settings_stay_available(toy, tiny_store, tmp_path,
                                                                                   capsys):
    assert train.defaults("cmbnncs-unet5")["early_stopping"] == train.PATIENCE == 10
    assert "early_stopping" not in train.defaults("cmbnncs-unet5", published=True)
    assert train.defaults("petroff", published=True) == dict(NETWORKS.get("petroff").defaults)
    store = str(tmp_path / "p.zarr")
    shutil.copytree(tiny_store, store)
    assert main(["train", store, "--model", TOY, "--epochs", "1", "--published", "--no-progress"]) == 0
    assert cube.run_config(store, cube.run_index(store, TOY))["early_stopping"] == 0
    # resumed without --early-stopping: as recorded (0), not the new default; a finished run only reports
    assert main(["train", store, "--model", TOY, "--epochs", "1", "--resume", "--no-progress"]) == 0
    with pytest.raises(SystemExit) as stop:
        main(["predict", store, "--run", TOY, "--epoch", "first", "--no-progress"])
    assert stop.value.code == 2
    assert "allowed: best, last, or an epoch number" in capsys.readouterr().err


# ------------------------------------------------------------------ augmentation by the sphere's symmetries
def _band_limited_iqu(nside, seed=3):
    """Random T, E, B alms (lmax 2 nside) and their IQU maps, NESTED, synthesised by healpy."""
    hp = pytest.importorskip("healpy")
    lmax = 2 * nside
    np.random.seed(seed)
    alms = [hp.synalm(np.ones(lmax + 1), lmax=lmax) for _ in range(3)]
    return alms, hp.reorder(np.array(hp.alm2map(alms, nside, lmax=lmax, pol=True)), r2n=True)


def test_the_symmetries_are_healpy_rotations_and_the_reflection_negates_u():
    import healpy as hp

    from cmbcube.science import symmetry
    nside = 8
    theta, phi = hp.pix2ang(nside, np.arange(12 * nside ** 2), nest=True)
    for k in range(4):      # pixel centres moved by phi + k pi/2, and reflected (-phi), found by healpy
        assert np.array_equal(symmetry.pixel_map(nside, k), hp.ang2pix(nside, theta, phi + k * np.pi / 2, nest=True))
        assert np.array_equal(symmetry.pixel_map(nside, k, True),
                              hp.ang2pix(nside, theta, -phi + k * np.pi / 2, nest=True))
    alms, iqu = _band_limited_iqu(nside)
    lmax = 2 * nside
    for k in (1, 2, 3):     # healpy rotates the alms of I, E, B exactly; Q and U come back unchanged in value
        rotator = hp.Rotator(rot=[-90 * k, 0, 0], deg=True)
        turned = hp.alm2map([rotator.rotate_alm(a.copy()) for a in alms], nside, lmax=lmax, pol=True)
        assert np.allclose(symmetry.move(iqu, k), hp.reorder(np.array(turned), r2n=True), rtol=0, atol=1e-9)
    # phi -> -phi: a_lm -> conj(a_lm) for I and E, -conj for the parity-odd B; healpy's Q, U of that sky
    mirrored = hp.alm2map([np.conj(alms[0]), np.conj(alms[1]), -np.conj(alms[2])], nside, lmax=lmax, pol=True)
    mirrored = hp.reorder(np.array(mirrored), r2n=True)
    assert np.allclose(symmetry.move(iqu, 0, True, u_rows=[2]), mirrored, rtol=0, atol=1e-9)
    assert not np.allclose(symmetry.move(iqu, 0, True)[2], mirrored[2], atol=1e-3)     # without the sign: wrong
    assert np.allclose(symmetry.move(iqu, 3, True, u_rows=[2]),
                       symmetry.move(symmetry.move(iqu, 0, True, u_rows=[2]), 3), rtol=0, atol=0)


def test_an_equivariant_network_commutes_with_the_augmentation_on_both_views():
    from cmbcube.science import geometry
    from cmbcube.stages import augment
    torch.manual_seed(0)
    nside = 4
    x = torch.randn(8, 6, 12 * nside ** 2, dtype=torch.float64)          # channels (I, Q, U) x 2 detectors
    net = torch.nn.Conv1d(6, 3, 1).double()
    with torch.no_grad():                   # a per-pixel map that never mixes U with I or Q: equivariant
        net.weight[:, [2, 5]] = 0.0
        net.weight[2] = 0.0
        net.weight[2, [2, 5], 0] = torch.tensor([0.7, -0.2], dtype=torch.float64)
        net.bias[2] = 0.0
    draws = list(range(8))                  # every rotation, with and without the reflection
    with torch.no_grad():
        assert torch.allclose(net(augment.apply(x, draws, [2, 5])), augment.apply(net(x), draws, [2]), atol=1e-12)
    planes = torch.from_numpy(geometry.to_faces(x.numpy()))              # the cmbNNCS face plane: the same moves
    moved = augment.apply(planes, draws, [2, 5]).numpy()
    assert np.array_equal(geometry.from_faces(moved), augment.apply(x, draws, [2, 5]).numpy())
    # the draws come from the run's seed and the epoch only: reproducible, and a resumed epoch draws the same
    first = augment.batch(x, x, "rot90-flip", augment.generator(5, 2))[0]
    again = augment.batch(x, x, "rot90-flip", augment.generator(5, 2))[0]
    assert torch.equal(first, again) and not torch.equal(first, x)


def test_augment_trains_and_is_refused_where_it_means_nothing(toy, tiny_store, tmp_path, capsys):
    store = str(tmp_path / "a.zarr")
    shutil.copytree(tiny_store, store)
    assert main(["train", store, "--model", TOY, "--epochs", "1", "--augment", "rot90", "--no-progress"]) == 0
    assert cube.run_config(store, cube.run_index(store, TOY))["augment"] == "rot90"
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert main(["train", store, "--model", "patch-unet", "--augment", "rot90", "--no-progress"]) == 2
    assert "--augment rot90: the patches view" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


# ------------------------------------------------------------------ GPU options, off by default
def test_bf16_and_channels_last_are_opt_in_and_leave_the_recorded_settings_of_older_runs_alone(toy, tiny_store,
                                                                                               tmp_path):
    plain = train.TrainConfig().as_dict()
    assert not {"augment", "precision", "channels_last"} & set(plain)     # runs recorded before them resume
    losses = {}
    for precision in ("fp32", "bf16"):
        store = str(tmp_path / f"{precision}.zarr")
        shutil.copytree(tiny_store, store)
        config = train.TrainConfig(**{**train.defaults(TOY), "model": TOY, "epochs": 1, "precision": precision})
        losses[precision] = train.run(store, config, progress=False).train_loss[0]
    assert np.isfinite(losses["bf16"]) and losses["bf16"] != losses["fp32"]
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=0.05)
    with pytest.raises(cmbcube.errors.InputError, match="^precision 'fp16': allowed: fp32, bf16"):
        train.run(store, train.TrainConfig(**{**config.__dict__, "precision": "fp16"}), "other", progress=False)
    # channels-last changes the memory layout, not the cmbNNCS UNet's output
    from cmbcube import networks
    torch.manual_seed(0)
    net = networks.build("cmbnncs-unet5", 4, 1, 32).eval()
    x = torch.randn(1, 4, 128, 96)
    with torch.no_grad():
        want = net(x)
        got = net.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(want, got, rtol=1e-5, atol=1e-5)
