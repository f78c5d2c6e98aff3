"""Petroff et al.'s Bayesian spherical network: graph, Chebyshev filters, pooling, loss, uncertainty, end to end."""
import shutil

import healpy as hp
import numpy as np
import pytest
import torch
import zarr

import cmbcube
from cmbcube import networks
from cmbcube.cli import main
from cmbcube.cube import analysis_io
from cmbcube.networks import petroff, sphere
from cmbcube.science import metrics, spectra, transforms
from cmbcube.stages import analyze, report, train
from helpers import interrupt_training


@pytest.mark.parametrize("nside", [2, 4, 8])
def test_laplacian_is_symmetric_with_spectrum_in_0_2(nside):
    W = sphere.adjacency(nside).toarray()
    npix = 12 * nside ** 2
    degree = (W > 0).sum(axis=1)
    # 8 neighbours everywhere except the 24 pixels next to the 8 corners where 3 base faces meet (7)
    assert np.array_equal(W, W.T) and set(degree) <= {7, 8} and (degree == 7).sum() == (24 if nside > 1 else 0)
    # neighbours are the closest pixels: the weight is a decreasing function of the chord distance
    vec = np.array(hp.pix2vec(nside, np.arange(npix), nest=True)).T
    i, j = np.nonzero(W)
    d2 = np.sum((vec[i] - vec[j]) ** 2, axis=1)
    k = sphere.kernel_width(nside) ** 2 / (4 * np.log(2))
    assert np.allclose(W[i, j], np.exp(-d2 / (4 * k)), rtol=1e-12)
    L = sphere.normalized_laplacian(nside).toarray()
    assert np.allclose(L, L.T, atol=1e-14)
    eig = np.linalg.eigvalsh(L)
    assert eig[0] == pytest.approx(0, abs=1e-10) and eig[-1] <= 2 + 1e-10 and eig[0] >= -1e-10
    assert sphere.largest_eigenvalue(nside) == pytest.approx(eig[-1], rel=1e-6)
    # rescaled for Chebyshev: L' = (1.5 / (1.02 lmax)) L - I, spectrum inside [-1, 1]
    rescaled = np.linalg.eigvalsh(sphere.rescaled_laplacian(nside).toarray())
    assert rescaled[0] == pytest.approx(-1, abs=1e-10) and rescaled[-1] == pytest.approx(1.5 / 1.02 - 1, abs=1e-9)
    dense = sphere.laplacian(nside).to_dense().numpy()
    assert np.allclose(dense, sphere.rescaled_laplacian(nside).toarray(), atol=1e-6)


def test_published_widths():
    assert [sphere.kernel_width(n) for n in (32, 64, 128, 256, 512)] == [0.025, 0.01228, 0.00614, 0.00307, 0.00154]
    assert sphere.kernel_width(16) == pytest.approx(0.05) and sphere.kernel_width(8) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="power of two"):
        sphere.kernel_width(12)


def test_chebyshev_filter_with_only_t0_is_identity_and_recursion_matches_dense():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 12 * 8 ** 2)
    conv = sphere.ChebConv(3, 3, K=1)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(3)[None, None])
    assert torch.equal(conv(x), x)
    # K = 3: x W0 + L'x W1 + (2 L'^2 - I) x W2, against dense algebra in float64
    conv3 = sphere.ChebConv(3, 2, K=3).double()
    L = torch.from_numpy(sphere.rescaled_laplacian(8).toarray())
    xd = x.double()
    terms = [xd, torch.einsum("pq,bcq->bcp", L, xd)]
    terms.append(2 * torch.einsum("pq,bcq->bcp", L, terms[1]) - xd)
    want = sum(torch.einsum("bcp,co->bop", t, conv3.weight[0, k]) for k, t in enumerate(terms))
    want = want + conv3.bias[0][None, :, None]
    assert torch.allclose(conv3(xd), want, atol=1e-10)


def test_pooling_groups_nested_children_and_unpooling_a_constant_is_exact():
    x = torch.full((2, 3, 12 * 16 ** 2), 7.25)
    assert torch.equal(sphere.unpool(sphere.pool(x)), x)
    y = torch.randn(1, 2, 12 * 4 ** 2)
    assert torch.equal(sphere.pool(sphere.unpool(y)), y)
    # pooled pixel p at nside n/2 is the parent of children 4p..4p+3: their centres fall inside it
    children = np.arange(12 * 8 ** 2)
    parents = hp.vec2pix(4, *hp.pix2vec(8, children, nest=True), nest=True)
    assert np.array_equal(parents, children // 4)
    z = torch.randn(1, 1, 12 * 8 ** 2)
    assert torch.equal(sphere.pool(z)[0, 0], torch.stack([z[0, 0, parents == p].max() for p in range(12 * 16)]))


@pytest.mark.parametrize("nside", [8, 16, 32])
def test_depth_follows_nside(nside):
    net = networks.build("petroff", 3, 1, nside, branches=[2, 1])
    assert net.levels == int(np.log2(nside)) + 1 and len(net.encoder) == net.levels
    out = net(torch.randn(2, 3, 12 * nside ** 2))
    assert out.shape == (2, 2, 12 * nside ** 2) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="expects"):
        net(torch.randn(1, 3, 12 * (2 * nside) ** 2))


@pytest.fixture(autouse=True)
def one_thread():
    """Many small sparse products: on a shared 2-core machine torch's 2 OpenMP threads were measured ~15x
    slower per step than 1 thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _fit(target, x, steps, dropout=True, seed=0, lr=1e-3):
    torch.manual_seed(seed)
    net = petroff.PetroffNet([1, 1], 1, 8)
    net.set_dropout(dropout)
    opt = torch.optim.Adam(net.parameters(), lr=lr, amsgrad=True)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        nll = petroff.heteroscedastic_loss(net(x), target)
        (nll + net.regularization()).backward()
        opt.step()
        losses.append(nll.item())
    return net, losses


@pytest.fixture(scope="module")
def toy():
    """Two input maps at nside 8, a target in [0, 1] made from them, and unit noise."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 2, 768, generator=g)
    y = 0.5 + 0.1 * x[:, :1] - 0.05 * x[:, 1:]
    return x, y, torch.randn(1, 1, 768, generator=g)


def test_loss_decreases_on_a_fixed_batch(toy):
    x, y, _ = toy
    _, losses = _fit(y, x, 100)                    # dropout on, as trained: noisy, so compare averages
    assert np.mean(losses[60:]) < np.mean(losses[:20]) - 0.4, (np.mean(losses[:20]), np.mean(losses[60:]))
    _, losses = _fit(y, x, 60, dropout=False)
    assert np.mean(losses[40:]) < np.mean(losses[:20]) - 0.8, (np.mean(losses[:20]), np.mean(losses[40:]))


def test_predicted_sigma_grows_with_a_noisy_target(toy):
    """Dropout off isolates the heteroscedastic head: sigma follows the injected noise (0.2)."""
    x, y, noise = toy
    sigmas = {}
    for name, target in (("clean", y), ("noisy", y + 0.2 * noise)):
        net, _ = _fit(target, x, 150, dropout=False)
        _, sigma = petroff.mc_predict(net, x, samples=1)
        sigmas[name] = float(np.median(sigma))
    assert sigmas["noisy"] > 2 * sigmas["clean"], sigmas
    assert 0.15 < sigmas["noisy"] < 0.3, sigmas


def test_mc_predictions_with_dropout_off_are_identical_and_on_they_spread(toy):
    x, _, _ = toy
    torch.manual_seed(3)
    net = petroff.PetroffNet([1, 1], 1, 8)
    net.set_dropout(False)
    with torch.no_grad():
        a, b = net(x), net(x)
    assert torch.equal(a, b)
    mean, sigma = petroff.mc_predict(net, x, samples=5, chunk=2)
    mu, s = net.split(a)
    assert np.allclose(mean, mu[0].double().numpy(), atol=1e-6)
    assert np.allclose(sigma, np.exp(-s[0].double().numpy() / 2), rtol=1e-5)      # aleatoric only
    net.set_dropout(True)
    assert all(abs(p - 0.1) < 1e-6 for p in net.drop_rates())
    mean_on, sigma_on = petroff.mc_predict(net, x, samples=8, chunk=3)
    assert not np.allclose(mean_on, mean) and np.all(sigma_on > 0)
    with torch.no_grad():
        assert not torch.equal(net(x), net(x))


def test_mc_predictions_from_a_seeded_generator_repeat_exactly_whatever_the_global_torch_state(toy):
    from cmbcube.science import seeds
    x, _, _ = toy
    torch.manual_seed(3)
    net = petroff.PetroffNet([1, 1], 1, 8)
    net.set_dropout(True)
    seed = seeds.derive_seed(0, "test", 2, "mc-dropout")

    def draw(s, global_seed):
        torch.manual_seed(global_seed)
        return petroff.mc_predict(net, x, samples=6, chunk=4, generator=torch.Generator().manual_seed(s))
    a, b = draw(seed, 1), draw(seed, 2)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    other = draw(seeds.derive_seed(0, "test", 3, "mc-dropout"), 1)
    assert not np.allclose(other[0], a[0])


def test_petroff_scaling_transforms():
    x = np.array([[-3.0, 1.0, 2.0], [10.0, -40.0, 5.0]])
    stats = {"min": x.min(1), "max": x.max(1)}
    t = transforms.build("maxabs", stats, 2)
    assert np.allclose(t.forward(x, dtype=np.float64), x / np.array([[3.0], [40.0]]))
    u = transforms.build("unit-maxabs", stats, 2)
    assert np.allclose(u.forward(x, dtype=np.float64), x / np.array([[3.0], [40.0]]) * 0.5 + 0.5)
    assert np.allclose(u.inverse(u.forward(x, dtype=np.float64)), x)
    assert np.allclose(transforms.build("unit:3,40", None, 2).scale, u.scale)
    assert np.allclose(transforms.build("scale:3,40", None, 2).forward(x, dtype=np.float64),
                       t.forward(x, dtype=np.float64))
    with pytest.raises(ValueError, match="2 factors for 3 channels"):
        transforms.build("scale:1,2", None, 3)
    with pytest.raises(ValueError, match="resolve"):
        transforms.build("noiseless-maxabs", stats, 2)


def test_train_predict_analyze_end_to_end(tiny_store, tmp_path, capsys):
    store = str(tmp_path / "p.zarr")
    shutil.copytree(tiny_store, store)
    # bad combinations are refused with exit code 2
    assert main(["train", store, "--model", "petroff", "--loss", "l1", "--no-progress"]) == 2
    assert "heteroscedastic" in capsys.readouterr().err
    assert main(["train", store, "--model", "petroff", "--epochs", "2", "--fields", "I", "--published",
                 "--no-progress"]) == 0
    stored = cmbcube.cube.run_config(store, cmbcube.cube.run_index(store, "petroff"))
    # --published: scalings pinned as published: inputs by max |obs - noise| over the train sims, target to [0, 1]
    raw = zarr.open_group(store, mode="r")
    dets = [int(d) for d in raw["detector"][...]]
    noiseless = raw["obs"][0, :3, :, 0] - raw["noise"][0, :3, :, 0]
    inputs = [dets.index(d) for d in networks.NETWORKS["petroff"].defaults["detectors"]]
    want = np.abs(noiseless[:, inputs]).max(axis=(0, 2))
    got = [float(v) for v in stored["transform"].split(":")[1].split(",")]
    assert np.allclose(got, want, rtol=1e-7)
    assert float(stored["target_transform"].split(":")[1]) == pytest.approx(np.abs(raw["cmb"][0, :3, 0]).max(),
                                                                                rel=1e-7)
    assert stored["grad_clip"] == 10.0 and "grad_clip" not in train.TrainConfig().as_dict()   # old runs compare equal
    twin = str(tmp_path / "twin.zarr")              # the trained store twice: same checkpoint, two predictions
    shutil.copytree(store, twin)
    for path in (store, twin):
        assert main(["predict", path, "--run", "petroff", "--mc-samples", "4", "--no-progress"]) == 0
        assert "4 Monte Carlo passes" in capsys.readouterr().out
    c = cmbcube.open(store)
    pred = c.pred.sel(run="petroff", split="test", field="I").values[:2]
    sigma = c.pred_sigma.sel(run="petroff", split="test", field="I").values[:2]
    # the dropout draws are seeded per (run seed, split, sim): predicting again gives the same bytes
    other = cmbcube.open(twin)
    assert np.array_equal(other.pred.sel(run="petroff", split="test", field="I").values[:2], pred)
    assert np.array_equal(other.pred_sigma.sel(run="petroff", split="test", field="I").values[:2], sigma)
    assert np.isfinite(pred).all() and np.isfinite(sigma).all() and (sigma > 0).all()
    assert np.isnan(c.pred_sigma.sel(run="petroff", split="test", field="Q").values[:2]).all()
    # another run type cannot be Monte Carlo sampled
    cmbcube.cube.ensure_run(store, "unet", "cmbnncs-unet5", {"model": "cmbnncs-unet5"}, 0.0)
    assert main(["predict", store, "--run", "unet", "--mc-samples", "4"]) == 2
    assert "needs --model petroff" in capsys.readouterr().err
    rep = analyze.run(store, runs=["petroff"], scheduler="synchronous", progress=False)
    assert not rep.failed and len(rep.written) == 2
    m = cmbcube.open(store).metrics.sel(run="petroff", split="test", field="I").isel(sim=[0, 1])
    cover = m.sel(metric=["cover_1sigma", "cover_2sigma", "cover_3sigma"]).values     # (sim, beam, 3)
    assert np.isfinite(cover).all() and (cover >= 0).all() and (cover <= 1).all()
    assert (np.diff(cover, axis=-1) >= 0).all() and (cover[..., 2] > 0).all()
    # the coverage is recomputed here from the maps the same way
    mask = cmbcube.open(store).mask.values > 0
    truth = raw["cmb"][2, 0, 0]
    expect = np.mean(np.abs(pred[0] - truth)[mask] <= sigma[0][mask])
    assert cover[0, 0, 0] == pytest.approx(expect)
    page = report.run(store, str(tmp_path / "rep")).page
    assert "within 1-sigma" in page.read_text() and (tmp_path / "rep" / "calibration_I.csv").exists()
    # a store analysed before the coverage metrics existed (8 metrics) is extended in place, values kept
    group = zarr.open_group(store, mode="r+")
    before = group["metrics"][...]
    del group["metrics"], group["metric"]
    old = before[..., :8]
    cmbcube.cube.create_array(store, "metrics", old.shape, ("run", "split", "sim", "beam", "field", "metric"),
                              dtype="f8", chunks=(1, 1, 1) + old.shape[3:])[...] = old
    cmbcube.cube.create_array(store, "metric", (8,), ("metric",), dtype=str, fill_value="")[...] = \
        np.array(metrics.METRICS[:8], dtype=object)
    cmbcube.cube.consolidate(store)
    analysis_io.ensure_analysis_arrays(store, len(spectra.ell_bins(16)) - 1)
    after = zarr.open_group(store, mode="r")["metrics"][...]
    assert after.shape == before.shape and np.array_equal(after[..., :8], before[..., :8], equal_nan=True)
    assert np.isnan(after[..., 8:]).all()
    assert list(cmbcube.open(store).metric.values) == list(metrics.METRICS)


def test_petroff_resume_is_bit_for_bit(tiny_store, tmp_path, monkeypatch):
    """Concrete dropout draws from torch's generator: its state is checkpointed, so resuming matches."""
    config = train.TrainConfig(**{**train.defaults("petroff", published=True), "model": "petroff", "epochs": 2,
                                  "fields": ("I",), "detectors": (143, 217), "train_sims": 2})
    a, b = str(tmp_path / "a.zarr"), str(tmp_path / "b.zarr")
    shutil.copytree(tiny_store, a)
    shutil.copytree(tiny_store, b)
    full = train.run(a, config, progress=False)
    original = interrupt_training(monkeypatch)    # the process dies in epoch 2, after the epoch-1 checkpoint
    with pytest.raises(KeyboardInterrupt):
        train.run(b, config, progress=False)
    monkeypatch.setattr(train, "evaluate", original)
    resumed = train.run(b, config, resume=True, progress=False)
    assert resumed.train_loss == full.train_loss and resumed.valid_loss == full.valid_loss
    wa = torch.load(full.checkpoint, weights_only=True)["model"]
    wb = torch.load(resumed.checkpoint, weights_only=True)["model"]
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
