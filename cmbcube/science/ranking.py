"""Rankings with intervals: bootstrap confidence intervals of a per-sim mean, and paired comparisons of
two methods scored on the same test skies.

A ranking of component-separation methods is a statement about means over test skies, and the skies
are shared between methods: method A minus method B on the *same* sky removes the sky-to-sky scatter
both methods see (a dusty sky is hard for everyone), so a paired difference is much sharper than two
separate intervals.  Both intervals are percentile bootstrap intervals of a mean:

* for up to ``EXACT_MAX`` values the bootstrap distribution is enumerated exactly (every multiset of
  n draws with its multinomial probability n! / (k_1! ... k_n!) / n^n), so the interval is a
  deterministic function of the values, with no resampling noise;
* above that, ``n_resamples`` resamples drawn with a fixed seed (same values, same interval).

The interval's ends are quantiles of that distribution by the inverted CDF: the lower end is the
smallest resampled mean whose cumulative probability reaches (1 - level) / 2, the upper end the
smallest one reaching (1 + level) / 2.  A paired difference is called significant when its interval
excludes zero.  With few test sims (the bootstrap's own caveat) the percentile interval is somewhat
too narrow; the number of sims is reported with every interval.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations_with_replacement

import numpy as np

EXACT_MAX = 9           # C(2n-1, n) multisets: 24310 at n = 9, enumerated exactly


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    n: int
    level: float

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


@dataclass(frozen=True)
class Paired:
    """Method ``a`` minus method ``b`` per sim (lower is better for an error metric)."""

    a: str
    b: str
    difference: Interval
    a_better: int               # sims where a's value is below b's
    significant: bool


def _exact_distribution(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean of each multiset of n draws, its probability), over every multiset."""
    n = values.size
    means, probs = [], []
    log_norm = math.lgamma(n + 1) - n * math.log(n)
    for pick in combinations_with_replacement(range(n), n):
        counts = np.bincount(pick, minlength=n)
        means.append(float(values[list(pick)].mean()))
        probs.append(math.exp(log_norm - sum(math.lgamma(c + 1) for c in counts)))
    return np.asarray(means), np.asarray(probs)


def _inverted_cdf(means: np.ndarray, probs: np.ndarray, q: float) -> float:
    order = np.argsort(means, kind="stable")
    cdf = np.cumsum(probs[order])
    cdf /= cdf[-1]
    k = int(np.searchsorted(cdf, q - 1e-12, side="left"))
    return float(means[order][min(k, len(order) - 1)])


def bootstrap_mean(values, level: float = 0.95, n_resamples: int = 20000, seed: int = 0) -> Interval:
    """Percentile bootstrap interval of the mean of ``values`` (non-finite values are an error)."""
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError("bootstrap_mean: no values")
    if not np.all(np.isfinite(x)):
        raise ValueError("bootstrap_mean: values must be finite")
    if not 0 < level < 1:
        raise ValueError(f"bootstrap_mean: level {level} must lie in (0, 1)")
    lo_q, hi_q = (1 - level) / 2, (1 + level) / 2
    if x.size == 1:
        return Interval(float(x[0]), float(x[0]), float(x[0]), 1, level)
    if x.size <= EXACT_MAX:
        means, probs = _exact_distribution(x)
    else:
        rng = np.random.default_rng(seed)
        means = x[rng.integers(0, x.size, size=(n_resamples, x.size))].mean(axis=1)
        probs = np.ones_like(means)
    return Interval(float(x.mean()), _inverted_cdf(means, probs, lo_q), _inverted_cdf(means, probs, hi_q),
                    int(x.size), level)


def paired(a_name: str, a, b_name: str, b, level: float = 0.95, **kwargs) -> Paired:
    """Paired comparison on the same sims: the interval of mean(a - b)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired: {a_name} has {a.size} sims, {b_name} {b.size}; pair them on the same sims")
    diff = bootstrap_mean(a - b, level, **kwargs)
    return Paired(a_name, b_name, diff, int(np.sum(a < b)), diff.excludes_zero())


def rank(per_run: dict, level: float = 0.95, **kwargs) -> tuple[list, list]:
    """Runs ordered by their mean (lower is better), each with its interval; and every run paired with
    the best one on the sims both have (``per_run``: run -> {sim: value})."""
    if not per_run:
        return [], []
    intervals = {run: bootstrap_mean(list(v.values()), level, **kwargs) for run, v in per_run.items() if v}
    order = sorted(intervals, key=lambda run: intervals[run].mean)
    best = order[0]
    pairs = []
    for run in order[1:]:
        shared = sorted(set(per_run[run]) & set(per_run[best]))
        if len(shared) < 2:
            continue
        pairs.append(paired(run, [per_run[run][s] for s in shared], best, [per_run[best][s] for s in shared],
                            level, **kwargs))
    return [(run, intervals[run]) for run in order], pairs
