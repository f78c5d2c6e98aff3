"""Issue 21: training never silently replaces a run (refused with --resume / --run / --overwrite named),
only the last and the best checkpoints are kept by default, and Monte Carlo prediction's memory does
not grow with the number of passes."""
import numpy as np
import torch

from cmbcube.networks import petroff


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
