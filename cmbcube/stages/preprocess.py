"""The preprocess stage: normalisation statistics over the train split, as Dask
reductions straight from the cube (the split is never loaded into memory).

Stored in the cube as ``stats_obs`` (stat, detector, field) and ``stats_cmb``
(stat, field), with provenance (split, sims, recipe hash) in their attributes.
Percentiles come from a fine histogram between the exact min and max (second
pass), so they are exact to one bin width ((max - min) / bins).
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging

import numpy as np

from cmbcube import cube
from cmbcube.compute.fanout import StageReport
from cmbcube.cube import stats_io
from cmbcube.errors import InputError, param

log = logging.getLogger("cmbcube")

PERCENTILES = (0.1, 1, 5, 25, 50, 75, 95, 99, 99.9)
STATS = ("min", "max", "mean", "std") + tuple(f"p{p:g}" for p in PERCENTILES)
BINS = 8192


@dataclasses.dataclass
class PreprocessReport(StageReport):
    status: str            # "computed", or "up to date" (nothing was written)
    sims: int              # the finished sims of the split the statistics describe


def _hist_block(block, lo, hi, bins):
    """Histogram of one (..., pixel) block per leading channel, edges from lo/hi per channel."""
    lead = block.shape[:-1]
    out = np.zeros(lead + (bins,), dtype=np.int64)
    flat_lo, flat_hi = np.broadcast_to(lo, lead).ravel(), np.broadcast_to(hi, lead).ravel()
    for k, values in enumerate(block.reshape(-1, block.shape[-1])):
        values = values[np.isfinite(values)]
        if values.size == 0 or not np.isfinite(flat_lo[k]):
            continue
        span = flat_hi[k] - flat_lo[k]
        idx = np.zeros(values.size, dtype=np.int64) if span <= 0 else \
            np.clip(((values - flat_lo[k]) / span * bins).astype(np.int64), 0, bins - 1)
        out.reshape(-1, bins)[k] = np.bincount(idx, minlength=bins)
    return out


def reduce_stats(arr, sample_axes: tuple[int, ...], bins: int = BINS, valid=None,
                 on_pass=None) -> dict[str, np.ndarray]:
    """Statistics of a dask array over ``sample_axes`` (the sim axes and the pixel axis, last).

    Returns {stat: array over the remaining axes}.  NaN (absent detector/field
    pairs) are ignored; a channel with no data gets NaN statistics.  ``on_pass()`` is called after each
    of the two passes over the data (moments, then histograms), e.g. to move a progress bar.
    """
    import warnings

    import dask
    import dask.array as da
    if arr.ndim - 1 not in sample_axes:
        raise InputError("the pixel (last) axis must be reduced")
    x = arr.astype(np.float64)
    if valid is not None:
        # absent (detector, field) pairs are all-NaN: zero them (no warnings on the workers), NaN stats after
        x = da.nan_to_num(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lo, hi, mean, std = dask.compute(da.nanmin(x, axis=sample_axes), da.nanmax(x, axis=sample_axes),
                                         da.nanmean(x, axis=sample_axes), da.nanstd(x, axis=sample_axes))
    if on_pass is not None:
        on_pass()
    if valid is not None:
        lo, hi, mean, std = (np.where(valid, v, np.nan) for v in (lo, hi, mean, std))
    # second pass: per-channel histograms between the exact extremes, summed over blocks
    lo_b = np.expand_dims(lo, tuple(sample_axes))[..., 0]
    hi_b = np.expand_dims(hi, tuple(sample_axes))[..., 0]

    def block_hist(block, block_info=None):
        loc = block_info[0]["array-location"]
        sl = tuple(slice(None) if a in sample_axes else slice(*loc[a]) for a in range(block.ndim - 1))
        return _hist_block(block, lo_b[sl], hi_b[sl], bins)

    hist = x.map_blocks(block_hist, dtype=np.int64, chunks=x.chunks[:-1] + ((bins,),))
    hist = hist.sum(axis=tuple(a for a in sample_axes if a != x.ndim - 1)).compute()
    if on_pass is not None:
        on_pass()
    out = {"min": lo, "max": hi, "mean": mean, "std": std}
    counts = np.cumsum(hist, axis=-1)
    total = counts[..., -1]

    def order_statistic(k):
        """Approximate k-th smallest value (0-based) per channel: exact to one bin width."""
        b = np.minimum((counts <= k[..., None]).sum(axis=-1), bins - 1)
        before = np.where(b > 0, np.take_along_axis(counts, np.maximum(b - 1, 0)[..., None], -1)[..., 0], 0)
        in_bin = np.maximum(np.take_along_axis(hist, b[..., None], -1)[..., 0], 1)
        return lo + (b + (k - before + 0.5) / in_bin) / bins * (hi - lo)

    for p in PERCENTILES:
        # numpy's default ("linear") definition: rank p/100 (n - 1) between order statistics
        rank = p / 100.0 * np.maximum(total - 1, 0)
        lower = np.floor(rank).astype(np.int64)
        upper = np.minimum(lower + 1, np.maximum(total - 1, 0))
        q = order_statistic(lower) + (rank - lower) * (order_statistic(upper) - order_statistic(lower))
        out[f"p{p:g}"] = np.clip(np.where(total > 0, q, np.nan), lo, hi)
    return out


def run(store: str, split: str = "train", scheduler: str | None = None, scheduler_file: str | None = None,
        workers: int | None = None, force: bool = False, progress: bool | None = None) -> PreprocessReport:
    """Compute and store the statistics of ``split``'s finished sims (unless up to date, or ``force``)."""
    from cmbcube.compute.cluster import client_for
    from cmbcube.recipe import SPLITS
    if split not in SPLITS:
        raise InputError(f"{param('split')} {split!r}: allowed: {', '.join(SPLITS)}")
    cube.require_store(store)              # a store it can write into, before anything is computed
    ds = cube.open_dataset(store)
    sims = stats_io.finished_sims(ds, split)
    if sims.size == 0:
        raise cube.StoreError(f"{store}: split {split!r} has no finished sims; run cmbcube simulate first")
    if not force and stats_io.up_to_date(ds, split, sims):
        return PreprocessReport("up to date", sims.size)
    recipe = cube.store_recipe(store)
    with client_for(recipe["cluster"], scheduler, scheduler_file, workers) as client:
        import dask
        ctx = dask.config.set(scheduler="synchronous") if client is None and scheduler == "synchronous" \
            else contextlib.nullcontext()
        with ctx:
            # (sim, detector, field, pixel), (sim, field, pixel)
            obs, cmb, has_field = stats_io.split_maps(ds, split, sims)
            log.info("statistics over %d %s sims", sims.size, split)
            from cmbcube.progress import bar as progress_bar
            # four passes over the split (obs and cmb: moments, then histograms); a bar on a terminal
            with progress_bar(4, f"preprocess {split} ({sims.size} sims)", unit="pass", progress=progress,
                              where=f"{store} stats_obs, stats_cmb") as passes:
                stats_obs = reduce_stats(obs, (0, 3), valid=has_field, on_pass=passes.update)
                stats_cmb = reduce_stats(cmb, (0, 2), on_pass=passes.update)
    stats_io.write_stats(store, ds, split, sims, STATS, stats_obs, stats_cmb, BINS)
    return PreprocessReport("computed", int(sims.size))


load_stats = stats_io.load_stats        # the stored statistics, or None before preprocess
