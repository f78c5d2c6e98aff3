"""Training augmentation by the sphere's exact symmetries (TrainConfig.augment; cmbcube.science.symmetry).

Each training sample of a batch gets its own symmetry, inputs and target alike: a rotation by
k * 90 degrees about the polar axis (``rot90``), or also the reflection in longitude (``rot90-flip``,
which negates Stokes U).  The draws come from a generator seeded by the run's seed and the epoch, never
from torch's global one, so a run is reproducible and ``--resume`` stays bit for bit.
"""
from __future__ import annotations

import numpy as np

from cmbcube.errors import InputError, param
from cmbcube.science import symmetry


def check(augment: str, view: str) -> None:
    symmetry.n_symmetries(augment)          # an unknown name raises, listing the allowed ones
    if augment != "none" and view not in ("sky", "faces"):
        raise InputError(f"{param('augment')} {augment}: the {view} view cuts the sky into squares that a 90-degree "
                         "rotation only moves onto each other, unchanged; allowed there: none")


def generator(seed: int, epoch: int):
    import torch
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch + 500_009)


def apply(tensor, draws, u_rows=()):
    """(batch, channels, npix) NESTED or (batch, channels, 4 nside, 3 nside) face planes, each sample
    moved by its symmetry ``draws[b]`` (0-3: rotation by that many quarter turns; 4-7: reflected first)."""
    import torch
    plane = tensor.dim() == 4
    flat = tensor.flatten(-2) if plane else tensor
    nside = tensor.shape[-1] // 3 if plane else int(round((tensor.shape[-1] / 12) ** 0.5))
    out = torch.empty_like(flat)
    for b, draw in enumerate(int(d) for d in draws):
        k, flip = draw % 4, draw >= 4
        index = symmetry.face_plane_source(nside, k, flip) if plane else symmetry.source_index(nside, k, flip)
        out[b] = flat[b][..., torch.from_numpy(np.array(index)).to(flat.device)]
        if flip and len(u_rows):
            out[b, list(u_rows)] *= -1
    return out.view_as(tensor)


def batch(x, y, augment: str, gen, x_u=(), y_u=()):
    """The batch's inputs and targets moved by one random symmetry per sample (``augment`` none: as is)."""
    import torch
    n = symmetry.n_symmetries(augment)
    if n == 1:
        return x, y
    draws = torch.randint(0, n, (x.shape[0],), generator=gen).tolist()
    return apply(x, draws, x_u), apply(y, draws, y_u)
