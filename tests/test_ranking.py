"""Rankings with intervals (cmbcube.science.ranking): exact bootstrap intervals checked by hand, the
resampled path checked against scipy.stats.bootstrap, and paired comparisons."""
import numpy as np
import pytest
from scipy import stats

from cmbcube.science import ranking


def test_exact_intervals_by_hand():
    # [0, 0, 3]: a resample's mean is (number of 3s drawn), which is Binomial(3, 1/3):
    # P(0) = 8/27, P(1) = 12/27, P(2) = 6/27, P(3) = 1/27; CDF 0.296, 0.741, 0.963, 1
    iv = ranking.bootstrap_mean([0, 0, 3], level=0.95)
    assert (iv.mean, iv.low, iv.high, iv.n) == (1.0, 0.0, 3.0, 3)     # CDF >= 0.025 at 0, >= 0.975 at 3
    iv = ranking.bootstrap_mean([0, 0, 3], level=0.80)
    assert (iv.low, iv.high) == (0.0, 2.0)                              # CDF >= 0.1 at 0, >= 0.9 at 2
    # [0, 1]: means 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4
    iv = ranking.bootstrap_mean([0, 1], level=0.5)
    assert (iv.low, iv.high) == (0.0, 0.5)                              # CDF >= 0.25 at 0, >= 0.75 at 0.5
    assert ranking.bootstrap_mean([2.5]).low == ranking.bootstrap_mean([2.5]).high == 2.5


def test_exact_probabilities_sum_to_one_and_give_the_mean():
    x = np.array([1.0, 4.0, 2.0, 8.0, 3.0, 5.0, 7.0])
    means, probs = ranking._exact_distribution(x)       # noqa: SLF001 (the enumeration itself)
    assert probs.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.sum(means * probs) == pytest.approx(x.mean(), rel=1e-12)              # E[mean*] = mean
    assert np.sum((means - x.mean()) ** 2 * probs) == pytest.approx(x.var() / x.size, rel=1e-10)


@pytest.mark.parametrize("n", [8, 40])
def test_intervals_agree_with_scipy_bootstrap(n):
    x = np.random.default_rng(n).gamma(2.0, 3.0, size=n)                # skewed, like per-sim MAEs
    ours = ranking.bootstrap_mean(x, level=0.95, n_resamples=40000)
    ref = stats.bootstrap((x,), np.mean, confidence_level=0.95, method="percentile", n_resamples=40000,
                          random_state=np.random.default_rng(1)).confidence_interval
    width = ref.high - ref.low
    assert abs(ours.low - ref.low) < 0.03 * width and abs(ours.high - ref.high) < 0.03 * width, (ours, ref)


def test_paired_difference_is_sharper_than_separate_intervals():
    sky = np.array([3.0, 9.0, 5.0, 14.0, 7.0, 11.0])        # sky-to-sky scatter both methods see
    a, b = sky + 0.5, sky.copy()
    sep_a, sep_b = ranking.bootstrap_mean(a), ranking.bootstrap_mean(b)
    assert sep_a.low < sep_b.high                            # the separate intervals overlap...
    p = ranking.paired("a", a, "b", b)
    assert (p.difference.low, p.difference.high) == (0.5, 0.5) and p.significant and p.a_better == 0
    q = ranking.paired("a", sky + np.array([-1, 1, -1, 1, -1, 1.0]), "b", sky)
    assert q.difference.low < 0 < q.difference.high and not q.significant and q.a_better == 3
    with pytest.raises(ValueError, match="same sims"):
        ranking.paired("a", [1, 2], "b", [1, 2, 3])


def test_rank_orders_runs_and_pairs_each_with_the_best_on_shared_sims():
    per_run = {"nilc": {0: 5.0, 1: 6.0, 2: 5.5}, "hilc": {0: 4.0, 1: 4.5, 2: 4.2},
               "unet": {0: 9.0, 1: 8.0}}                    # unet analysed on two sims only
    order, pairs = ranking.rank(per_run)
    assert [run for run, _ in order] == ["hilc", "nilc", "unet"]
    by = {p.a: p for p in pairs}
    assert by["unet"].difference.n == 2 and by["unet"].b == "hilc"
    assert by["nilc"].difference.mean == pytest.approx(np.mean([1.0, 1.5, 1.3]))
    with pytest.raises(ValueError, match="finite"):
        ranking.bootstrap_mean([1.0, np.nan])
