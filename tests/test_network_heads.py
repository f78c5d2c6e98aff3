"""The UNets' last layers (TrainConfig.head) and the pixel-linear baseline (issue 22): the published
PReLU head can lose the sign of the output, the linear heads cannot, the linear path adds exactly one
linear combination of the inputs per pixel, and a head a network does not have is refused."""
import numpy as np
import pytest
import torch

from cmbcube.cli import main
from cmbcube.networks import NETWORKS, build
from cmbcube.stages.train import TrainConfig, defaults
from helpers import zarr_files

SHAPE = (2, 4, 128, 96)          # nside 32 face planes, 4 detectors


def _unet(head):
    torch.manual_seed(1)
    return build("cmbnncs-unet5", 4, 1, 32, TrainConfig(head=head)).eval()


def test_a_prelu_head_whose_slope_turned_negative_cannot_output_a_negative_value_and_a_linear_head_can():
    x = torch.randn(*SHAPE) * 3
    published = _unet("published")
    with torch.no_grad():
        published.last[-1].weight.fill_(-0.68)          # the slope measured after training on 256 skies
        out = published(x)
    assert float(out.min()) >= 0.0
    with torch.no_grad():
        out = _unet("linear")(x)
    assert float(out.min()) < 0.0 < float(out.max())


def test_the_linear_path_adds_one_linear_combination_of_the_input_channels_at_every_pixel():
    net = _unet("linear-path")
    x = torch.randn(*SHAPE)
    with torch.no_grad():
        net.path.weight.copy_(torch.tensor([0.5, -1.0, 2.0, 0.25]).reshape(1, 4, 1, 1))
        net.path.bias.fill_(3.0)
        net.last[0].weight.zero_()
        net.last[0].bias.zero_()                       # the UNet's output is now 0: only the path is left
        out = net(x).numpy()
        net.last[0].bias.fill_(0.1)
        moved = net(x).numpy()
    expected = np.einsum("c,bchw->bhw", [0.5, -1.0, 2.0, 0.25], x.numpy())[:, None] + 3.0
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(moved, expected + 0.1, rtol=1e-5, atol=1e-5)   # the UNet's output adds to it
    net.train()
    loss = torch.nn.functional.l1_loss(net(x), torch.zeros(SHAPE[0], 1, *SHAPE[2:]))
    loss.backward()
    assert float(net.last[0].weight.grad.abs().max()) > 0


def test_pixel_linear_is_one_weight_per_channel_and_a_bias():
    net = build("pixel-linear", 3, 1, 4)
    x = torch.randn(2, 3, 12 * 16)
    with torch.no_grad():
        net.mix.weight.copy_(torch.tensor([1.0, -2.0, 0.5]).reshape(1, 3, 1))
        net.mix.bias.fill_(-1.0)
        out = net(x).numpy()
    np.testing.assert_allclose(out[:, 0], x[:, 0] - 2 * x[:, 1] + 0.5 * x[:, 2] - 1.0, rtol=1e-5, atol=1e-6)
    assert NETWORKS.get("pixel-linear").view == "sky"
    assert sum(p.numel() for p in net.parameters()) == 4


def test_a_head_the_network_does_not_have_is_refused_naming_the_allowed_ones(tiny_store, capsys):
    before = zarr_files(tiny_store)
    with pytest.raises(SystemExit) as stop:
        main(["train", tiny_store, "--model", "cmbnncs-unet5", "--head", "residual"])
    assert stop.value.code == 2
    assert main(["train", tiny_store, "--model", "patch-unet", "--head", "linear-path", "--epochs", "1",
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--head 'linear-path' with --model patch-unet: allowed: published" in err
    assert zarr_files(tiny_store) == before


def test_the_tuned_unet_settings_are_the_default_and_published_keeps_cmbnncs_exactly():
    tuned = defaults("cmbnncs-unet5")
    published = defaults("cmbnncs-unet5", published=True)
    assert published == {}                          # TrainConfig's own defaults are cmbNNCS's settings
    config = TrainConfig(model="cmbnncs-unet5", **published)
    assert (config.transform, config.target_transform, config.lr_start, config.head) == ("none", "scale:5", 0.1,
                                                                                          "published")
    assert tuned["transform"] == "robust" and tuned["head"] == "linear-path" and tuned["lr_start"] == 0.01
    assert tuned["early_stopping"] == 10


def test_a_run_trained_on_fewer_skies_than_the_study_says_its_network_needs_is_flagged_data_limited():
    from cmbcube.networks import Network
    from cmbcube.stages.report_ranking import data_limited
    NETWORKS.register("toy-limited", Network(build=lambda *a, **k: None, view="sky", data_limited_below=64,
                                             data_limited_source="ranking_TEST.txt"))
    try:
        words = data_limited("toy-limited", 16)
        assert "trained on 16 skies" in words and "up to 64 skies" in words and "ranking_TEST.txt" in words
        assert data_limited("toy-limited", 64) == ""
        assert data_limited("not-a-network", 1) == ""   # a run of an unregistered network: no claim made
    finally:
        NETWORKS.unregister("toy-limited")


def test_cmbcube_run_refuses_to_resume_a_run_killed_under_other_default_settings_and_reuses_a_finished_one():
    import json
    from types import SimpleNamespace

    from cmbcube.stages import pipeline, train_guard
    today = TrainConfig(model="cmbnncs-unet5", epochs=30, **defaults("cmbnncs-unet5"))
    before = TrainConfig(model="cmbnncs-unet5", epochs=30, early_stopping=10)       # the published settings
    killed = SimpleNamespace(in_store=True, name="cmbnncs-unet5", folder="x.runs/cmbnncs-unet5",
                             state={"config": json.dumps(before.as_dict()), "epoch": 12, "stale": 0})
    with pytest.raises(train_guard.RunExists) as refused:
        pipeline.check_existing_run("x.zarr", killed, today)
    words = str(refused.value)
    assert "transform: 'none' -> 'robust'" in words and "head: 'published' -> 'linear-path'" in words
    assert "drop('x.zarr', 'run', run='cmbnncs-unet5')" in words        # the CLI prints its command line
    pipeline.check_existing_run("x.zarr", SimpleNamespace(**{**vars(killed), "state": {**killed.state, "epoch": 30}}),
                                today)                                  # finished: reused as it is, no refusal
    same = SimpleNamespace(**{**vars(killed), "state": {**killed.state, "config": json.dumps(today.as_dict())}})
    pipeline.check_existing_run("x.zarr", same, today)                 # killed under today's settings: resumed


def test_cmbcube_run_resumes_a_killed_petroff_run_whose_scales_train_pinned_from_the_data():
    import json
    from types import SimpleNamespace

    from cmbcube.stages import pipeline, train_guard
    today = TrainConfig(model="petroff", epochs=30, **defaults("petroff", published=True))
    pinned = TrainConfig(model="petroff", epochs=30, **{**defaults("petroff", published=True),
                                                         "transform": "scale:1,2,3,4,5,6,7",
                                                         "target_transform": "unit:300"})
    killed = SimpleNamespace(in_store=True, name="petroff", folder="x.runs/petroff",
                             state={"config": json.dumps(pinned.as_dict()), "epoch": 3, "stale": 0})
    pipeline.check_existing_run("x.zarr", killed, today)               # the same settings: resumed, no refusal
    other = TrainConfig(model="petroff", epochs=30, **{**defaults("petroff", published=True), "transform": "none"})
    killed.state["config"] = json.dumps(other.as_dict())
    with pytest.raises(train_guard.RunExists):
        pipeline.check_existing_run("x.zarr", killed, today)


def test_the_registry_lists_the_heads_the_unet_module_builds():
    from cmbcube.networks import UNET_HEADS, cmbnncs
    assert UNET_HEADS == cmbnncs.HEADS == NETWORKS.get("cmbnncs-unet8").heads


def test_pixel_linear_trains_and_predicts_through_the_stages(tiny_store, tmp_path):
    import shutil

    import cmbcube
    from cmbcube.stages import predict, preprocess, train
    store = str(tmp_path / "p.zarr")
    shutil.copytree(tiny_store, store)
    preprocess.run(store, scheduler="synchronous")          # the robust input scaling reads its statistics
    config = TrainConfig(**{**defaults("pixel-linear"), "model": "pixel-linear", "epochs": 4})
    rep = train.run(store, config, run_name="pl", device="cpu", progress=False)
    assert len(rep.train_loss) == 4 and all(np.isfinite(rep.train_loss))
    assert min(rep.valid_loss[1:]) < rep.valid_loss[0]
    predict.run(store, "pl", splits=("test",), device="cpu", progress=False)
    pred = cmbcube.open(store, split="test").pred.sel(run="pl", field="I").values
    truth = cmbcube.open(store, split="test").cmb.sel(field="I").values
    done = np.isfinite(pred).all(axis=-1)
    assert done.any()
    for p, t in zip(pred[done], truth[done]):          # written in physical units, the CMB's sign kept
        assert np.corrcoef(p, t)[0, 1] > 0


def test_petroff_trains_on_robust_inputs_by_default_and_published_keeps_its_scalings():
    tuned, published = defaults("petroff"), defaults("petroff", published=True)
    assert (tuned["transform"], tuned["target_transform"]) == ("robust", "standardize")
    assert (published["transform"], published["target_transform"]) == ("noiseless-maxabs", "unit-maxabs")
    # everything else (detectors, loss, optimiser, clipping) is Petroff et al.'s either way; early stopping
    # is cmbcube's addition to every network's defaults
    assert {k: v for k, v in tuned.items() if "transform" not in k and k != "early_stopping"} == \
        {k: v for k, v in published.items() if "transform" not in k}
