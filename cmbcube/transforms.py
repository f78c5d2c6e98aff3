"""Named, invertible per-channel transforms applied on the fly when streaming.

Every transform is affine per channel, y = (x - offset) / scale, computed in
float64, so the inverse x = y * scale + offset undoes it to float rounding.

Names (CLI / recipe strings):
- ``none``
- ``minmax``: to [0, 1] using the train-split min and max
- ``standardize``: zero mean, unit std (train split)
- ``robust``: (x - median) / (p75 - p25)
- ``scale:S``: divide by S (cmbNNCS divides the CMB target by 5: ``scale:5``)
"""
from __future__ import annotations

import dataclasses

import numpy as np

NAMES = ("none", "minmax", "standardize", "robust", "scale:<factor>")


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


def parse(spec: str) -> tuple[str, float | None]:
    spec = (spec or "none").strip()
    if spec.startswith("scale:"):
        try:
            factor = float(spec.split(":", 1)[1])
        except ValueError:
            raise ValueError(f"transform {spec!r}: scale needs a number, e.g. scale:5") from None
        if factor == 0:
            raise ValueError(f"transform {spec!r}: scale must be non-zero")
        return "scale", factor
    if spec not in ("none", "minmax", "standardize", "robust"):
        raise ValueError(f"unknown transform {spec!r}; allowed: {', '.join(NAMES)}")
    return spec, None


def build(spec: str, stats: dict[str, np.ndarray] | None, nchannels: int) -> Affine:
    """Make the transform for ``nchannels`` channels from statistics (per channel arrays).

    ``stats`` maps statistic names (min, max, mean, std, p25, p50, p75) to arrays
    of shape (nchannels,); it may be None for ``none`` and ``scale``.
    """
    name, factor = parse(spec)
    zeros, ones = np.zeros(nchannels), np.ones(nchannels)
    if name == "none":
        return Affine(spec, zeros, ones)
    if name == "scale":
        return Affine(spec, zeros, ones * factor)
    if stats is None:
        raise ValueError(f"transform {spec!r} needs normalisation statistics: run `cmbcube preprocess STORE` first")
    if name == "minmax":
        offset, scale = stats["min"], stats["max"] - stats["min"]
    elif name == "standardize":
        offset, scale = stats["mean"], stats["std"]
    else:
        offset, scale = stats["p50"], stats["p75"] - stats["p25"]
    scale = np.where(scale > 0, scale, 1.0)
    return Affine(spec, np.asarray(offset, dtype=np.float64), np.asarray(scale, dtype=np.float64))
