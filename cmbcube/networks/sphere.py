"""Graph operations on the HEALPix sphere (NESTED order) for spherical CNNs (DeepSphere, Petroff et al. 2020).

- Graph: every pixel linked to its (up to) 8 HEALPix neighbours, weight
  exp(-d^2 / (4 k)) with d the chord distance between pixel centres and
  k = w^2 / (4 ln 2); w is the published width per nside (0.025 at 32 down to
  0.00154 at 512), and 0.8 / nside elsewhere (the published widths halve with
  each doubling of nside: 0.8 / nside gives 0.025 at 32).
- Normalised Laplacian L = I - D^-1/2 W D^-1/2 (spectrum in [0, 2]), rescaled
  for Chebyshev filtering as L' = (1.5 / lmax) L - I with lmax = 1.02 x its
  largest eigenvalue.  Built once per nside (numpy/scipy, cached), handed to
  torch as a sparse CSR matrix, cached per (nside, device, dtype).
- Chebyshev convolution of order K (K terms T_0 ... T_{K-1}), optionally
  grouped: ``groups`` independent filters banks share the Chebyshev basis (the
  expensive sparse products) but not their weights.
- Pooling: max over the 4 NESTED children of each parent pixel (consecutive
  indices); unpooling: each parent value repeated over its 4 children.

Tensors are (batch, channels, pixels), pixels in NESTED order.
"""
from __future__ import annotations

import functools
import math
import warnings

import numpy as np
import torch
from torch import nn

from cmbcube.errors import InputError

PUBLISHED_WIDTHS = {32: 0.025, 64: 0.01228, 128: 0.00614, 256: 0.00307, 512: 0.00154}
CHEBYSHEV_SCALE = 0.75        # L' = (2 * 0.75 / lmax) L - I
LMAX_MARGIN = 1.02


def check_nside(nside: int) -> int:
    nside = int(nside)
    if nside < 1 or nside & (nside - 1):
        raise InputError(f"nside {nside}: NESTED HEALPix graphs need a power of two >= 1")
    return nside


def kernel_width(nside: int) -> float:
    """Gaussian width w(nside) in radians: published values at 32-512, 0.8 / nside elsewhere."""
    nside = check_nside(nside)
    return PUBLISHED_WIDTHS.get(nside, 0.8 / nside)


def adjacency(nside: int):
    """Symmetric scipy CSR weight matrix W of the 8-neighbour NESTED graph."""
    import healpy as hp
    import scipy.sparse as sp
    nside = check_nside(nside)
    npix = 12 * nside * nside
    pix = np.arange(npix)
    neigh = hp.get_all_neighbours(nside, pix, nest=True)          # (8, npix), -1 where absent
    rows = np.broadcast_to(pix, neigh.shape).ravel()
    cols = neigh.ravel()
    keep = (cols >= 0) & (cols != rows)
    rows, cols = rows[keep], cols[keep]
    vec = np.array(hp.pix2vec(nside, pix, nest=True)).T             # unit vectors (npix, 3)
    d2 = np.sum((vec[rows] - vec[cols]) ** 2, axis=1)              # squared chord distance
    k = kernel_width(nside) ** 2 / (4 * math.log(2))
    w = np.exp(-d2 / (4 * k))
    W = sp.coo_matrix((w, (rows, cols)), shape=(npix, npix)).tocsr()
    W.sum_duplicates()
    # the neighbour relation is symmetric on HEALPix; take the union of both directions to be safe
    return W.maximum(W.T).tocsr()


@functools.lru_cache(maxsize=16)
def normalized_laplacian(nside: int):
    """L = I - D^-1/2 W D^-1/2 as a scipy CSR matrix (float64)."""
    import scipy.sparse as sp
    W = adjacency(nside)
    deg = np.asarray(W.sum(axis=1)).ravel()
    inv = np.where(deg > 0, 1.0 / np.sqrt(np.where(deg > 0, deg, 1.0)), 0.0)
    Dm = sp.diags(inv)
    return (sp.identity(W.shape[0], format="csr") - Dm @ W @ Dm).tocsr()


@functools.lru_cache(maxsize=16)
def largest_eigenvalue(nside: int) -> float:
    L = normalized_laplacian(nside)
    if L.shape[0] <= 1024:
        return float(np.linalg.eigvalsh(L.toarray())[-1])
    from scipy.sparse.linalg import eigsh
    return float(eigsh(L, k=1, which="LA", tol=1e-4, return_eigenvectors=False)[0])


@functools.lru_cache(maxsize=16)
def rescaled_laplacian(nside: int):
    """L' = (1.5 / lmax) L - I, lmax = 1.02 x the largest eigenvalue of L (scipy CSR, float64)."""
    import scipy.sparse as sp
    L = normalized_laplacian(nside)
    lmax = LMAX_MARGIN * largest_eigenvalue(nside)
    return (2 * CHEBYSHEV_SCALE / lmax * L - sp.identity(L.shape[0], format="csr")).tocsr()


_TORCH_CACHE: dict = {}


def laplacian(nside: int, device=None, dtype=None):
    """The rescaled Laplacian as a torch sparse CSR tensor, cached per (nside, device, dtype)."""
    device = torch.device(device or "cpu")
    dtype = dtype or torch.float32
    key = (check_nside(nside), str(device), dtype)
    if key not in _TORCH_CACHE:
        Lr = rescaled_laplacian(nside)
        coo = Lr.tocoo()
        idx = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
        t = torch.sparse_coo_tensor(idx, torch.from_numpy(coo.data).to(dtype), Lr.shape,
                                    check_invariants=True).coalesce()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*[Ss]parse CSR tensor support is in beta.*")
            _TORCH_CACHE[key] = t.to_sparse_csr().to(device)
    return _TORCH_CACHE[key]


class _SymmetricSpMM(torch.autograd.Function):
    """y = L x for a symmetric sparse L; the gradient is L g (no transpose needed: measured ~10x faster
    backward than autograd's generic sparse CSR product on CPU)."""

    @staticmethod
    def forward(ctx, L, x):
        ctx.L = L
        return torch.sparse.mm(L, x)

    @staticmethod
    def backward(ctx, grad):
        return None, torch.sparse.mm(ctx.L, grad.contiguous())


def spmm(L, x):
    """L x for the symmetric rescaled Laplacian L (sparse) and a dense (npix, m) x."""
    return _SymmetricSpMM.apply(L, x)


def nside_of(npix: int) -> int:
    nside = int(round(math.sqrt(npix / 12)))
    if 12 * nside * nside != npix:
        raise InputError(f"{npix} pixels is not a HEALPix map (12 nside^2)")
    return check_nside(nside)


def chebyshev_basis(x, K: int):
    """[T_0 x, ..., T_{K-1} x] for x (batch, channels, npix): tensor (K, npix, batch * channels)."""
    b, c, n = x.shape
    x0 = x.reshape(b * c, n).transpose(0, 1).contiguous()                # (npix, batch * channels)
    terms = [x0]
    if K > 1:
        L = laplacian(nside_of(n), x.device, x.dtype)
        x1 = spmm(L, x0)
        terms.append(x1)
        for _ in range(2, K):
            x2 = 2 * spmm(L, x1) - x0
            terms.append(x2)
            x0, x1 = x1, x2
    return torch.stack(terms)


def pool(x):
    """Max over the 4 NESTED children: (B, C, 12 n^2) -> (B, C, 12 (n/2)^2)."""
    b, c, n = x.shape
    if n % 4 or n < 48:
        raise InputError(f"cannot pool a map of {n} pixels below nside 1")
    return x.reshape(b, c, n // 4, 4).amax(dim=-1)


def unpool(x):
    """Each parent's value on its 4 NESTED children: (B, C, 12 n^2) -> (B, C, 12 (2n)^2)."""
    return x.repeat_interleave(4, dim=-1)


class ChebConv(nn.Module):
    """Chebyshev graph convolution: out = sum_k T_k(L') x W_k + b, K terms.

    With ``groups`` > 1 the channels are split into that many independent banks
    (in_channels and out_channels per group), which share the Chebyshev basis
    computation (one set of sparse products) but have their own weights.
    Weight shape: (groups, K, in_channels, out_channels); bias (groups, out_channels).
    """

    def __init__(self, in_channels: int, out_channels: int, K: int = 9, groups: int = 1, bias: bool = True):
        super().__init__()
        if K < 1:
            raise InputError(f"Chebyshev order K={K}: must be >= 1")
        self.in_channels, self.out_channels, self.K, self.groups = in_channels, out_channels, K, groups
        std = math.sqrt(2.0 / (in_channels * K))              # He-style init over the K x in fan-in
        self.weight = torch.nn.Parameter(torch.randn(groups, K, in_channels, out_channels) * std)
        self.bias = torch.nn.Parameter(torch.zeros(groups, out_channels)) if bias else None

    def forward(self, x):
        b, c, n = x.shape
        if c != self.groups * self.in_channels:
            raise InputError(f"ChebConv expects {self.groups} x {self.in_channels} channels, got {c}")
        t = chebyshev_basis(x, self.K).reshape(self.K, n, b, self.groups, self.in_channels)
        out = torch.einsum("knbgi,gkio->bgon", t, self.weight)
        if self.bias is not None:
            out = out + self.bias[None, :, :, None]
        return out.reshape(b, self.groups * self.out_channels, n)
