"""Named, invertible per-channel transforms applied on the fly when streaming.

Every transform is affine per channel, y = (x - offset) / scale, computed in
float64, so the inverse x = y * scale + offset undoes it to float rounding.

Names (CLI / recipe strings):
- ``none``
- ``minmax``: to [0, 1] using the train-split min and max
- ``standardize``: zero mean, unit std (train split)
- ``robust``: (x - median) / (p75 - p25)
- ``scale:S``: divide by S (cmbNNCS divides the CMB target by 5: ``scale:5``);
  ``scale:S1,S2,...`` gives one factor per channel
- ``maxabs``: divide by max|x| (train-split min and max)
- ``unit-maxabs``: map [-max|x|, max|x|] to [0, 1], i.e. x / max|x| * 0.5 + 0.5
  (Petroff et al. 2020's target scaling)
- ``unit:M`` (or ``unit:M1,M2,...`` per channel): the same with explicit M
- ``noiseless-maxabs``: divide by max|x| over the *noiseless* train sims
  (obs - noise; Petroff et al.'s input scaling).  It needs the maps, not the
  stored statistics: the train stage resolves it into explicit
  ``scale:S1,S2,...`` factors recorded in the run (``resolve_noiseless`` in
  cmbcube.stages.train); ``build`` refuses it unresolved.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from cmbcube.errors import InputError

NAMES = ("none", "minmax", "standardize", "robust", "maxabs", "unit-maxabs", "noiseless-maxabs",
         "scale:<factor>[,<factor>...]", "unit:<max>[,<max>...]")
STAT_NAMES = ("minmax", "standardize", "robust", "maxabs", "unit-maxabs")


@dataclasses.dataclass(frozen=True)
class Affine:
    name: str
    offset: np.ndarray      # (channel,)
    scale: np.ndarray       # (channel,)

    def _shape(self, x, axis):
        shape = [1] * x.ndim
        shape[axis] = -1
        return self.offset.reshape(shape), self.scale.reshape(shape)

    @property
    def identity(self) -> bool:
        return bool(np.all(self.offset == 0) and np.all(self.scale == 1))

    def forward(self, x: np.ndarray, axis: int = 0, dtype=np.float32) -> np.ndarray:
        """Channels along ``axis`` (0 for one sample (C, ...), 1 for a batch).

        float32 output is computed in float32 (streaming speed; within 1 ulp of the
        float64 result); ask ``dtype=np.float64`` for the exact affine map.
        """
        offset, scale = self._shape(x, axis)
        if dtype == np.float32:
            x = np.asarray(x, dtype=np.float32)
            if self.identity:
                return x
            return (x - offset.astype(np.float32)) * (1.0 / scale).astype(np.float32)
        return ((np.asarray(x, dtype=np.float64) - offset) / scale).astype(dtype)

    def inverse(self, y, axis: int = 0):
        """Back to physical units; accepts numpy arrays or torch tensors."""
        offset, scale = self._shape(y, axis)
        if hasattr(y, "detach"):                 # torch tensor: stay in torch
            import torch
            return y.double() * torch.as_tensor(scale) + torch.as_tensor(offset)
        return np.asarray(y, dtype=np.float64) * scale + offset


def _numbers(spec: str, example: str) -> tuple[float, ...]:
    text = spec.split(":", 1)[1]
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"transform {spec!r}: needs a number or comma-separated numbers, e.g. {example}") from None
    if not values or any(v == 0 or not np.isfinite(v) for v in values):
        raise InputError(f"transform {spec!r}: factors must be finite and non-zero")
    return values


def parse(spec: str) -> tuple[str, tuple[float, ...] | None]:
    """(name, explicit per-channel numbers or None) of a transform spec."""
    spec = (spec or "none").strip()
    if spec.startswith("scale:"):
        return "scale", _numbers(spec, "scale:5")
    if spec.startswith("unit:"):
        values = _numbers(spec, "unit:500")
        if any(v < 0 for v in values):
            raise InputError(f"transform {spec!r}: unit:M needs M > 0 (the map's max |value|)")
        return "unit", values
    if spec not in ("none", "noiseless-maxabs") + STAT_NAMES:
        raise InputError(f"unknown transform {spec!r}; allowed: {', '.join(NAMES)}")
    return spec, None


def build(spec: str, stats: dict[str, np.ndarray] | None, nchannels: int) -> Affine:
    """Make the transform for ``nchannels`` channels from statistics (per channel arrays).

    ``stats`` maps statistic names (min, max, mean, std, p25, p50, p75) to arrays
    of shape (nchannels,); it may be None for ``none`` and ``scale``.
    """
    name, values = parse(spec)
    zeros, ones = np.zeros(nchannels), np.ones(nchannels)
    if name == "none":
        return Affine(spec, zeros, ones)
    if name in ("scale", "unit"):
        if len(values) not in (1, nchannels):
            raise InputError(f"transform {spec!r}: {len(values)} factors for {nchannels} channels "
                             "(give one, or one per channel)")
        v = ones * np.asarray(values, dtype=np.float64)
        return Affine(spec, zeros, v) if name == "scale" else Affine(spec, -v, 2 * v)
    if name == "noiseless-maxabs":
        raise InputError("transform 'noiseless-maxabs' needs the noiseless train maps: the train stage resolves it "
                         "(cmbcube.stages.train.resolve_noiseless) into scale:S1,S2,...; "
                         "use maxabs or explicit factors here")
    if stats is None:
        raise InputError(f"transform {spec!r} needs normalisation statistics: run `cmbcube preprocess STORE` first")
    if name == "minmax":
        offset, scale = stats["min"], stats["max"] - stats["min"]
    elif name == "standardize":
        offset, scale = stats["mean"], stats["std"]
    elif name in ("maxabs", "unit-maxabs"):
        peak = np.maximum(np.abs(stats["min"]), np.abs(stats["max"]))
        offset, scale = (zeros, peak) if name == "maxabs" else (-peak, 2 * peak)
    else:
        offset, scale = stats["p50"], stats["p75"] - stats["p25"]
    scale = np.where(scale > 0, scale, 1.0)
    return Affine(spec, np.asarray(offset, dtype=np.float64), np.asarray(scale, dtype=np.float64))
