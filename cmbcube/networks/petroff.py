"""Petroff et al. 2020: a Bayesian spherical CNN for CMB foreground cleaning, with per-pixel uncertainty.

Architecture (DeepSphere-style, on NESTED HEALPix maps, see cmbcube.networks.sphere), as
in the published model:

- one unshared encoder branch per input frequency; at every level from the
  input nside down to nside 1: (max-pool, except at the first level),
  Chebyshev conv (``width`` = 6 maps, K = 9), ELU, conv, ELU.  Each level's
  output, through a learnable per-map ``a x + b``, is that branch's skip;
- bottleneck: ELU of the sum over branches of their nside-1 skips, upsampled;
- decoder, from nside 2 up to the input nside: conv, + all branches' skips at
  that nside, ELU, conv, ELU, upsample (not after the last level);
- final conv to two maps per target field: the mean mu and s = -log sigma^2.

Training minimises the heteroscedastic Gaussian loss 0.5 mean[(y - mu)^2 e^s - s]
plus the concrete-dropout regularisation.  Spatial concrete dropout (Gal, Hron &
Kendall 2017; one learned drop rate per layer and branch, initialised at 0.1,
relaxation temperature 2/3 as in their spatial variant; a mask drops whole
maps, so before a branch's first convolution it drops the whole frequency map)
wraps every convolution and every skip scaling, and stays on at inference:
``mc_predict`` runs Monte Carlo passes and returns the mean map and its per-pixel
sigma, sqrt(mean(sigma_t^2) + var(mu_t)) (aleatoric + epistemic).  The
regularisers are l^2 / N and 2 / N with prior length scale l = 1e-4 and N the
number of training skies (published: 800).

Input channels are grouped per detector (frequency): with several fields a
branch takes that detector's fields (zero-padded where a detector lacks one,
e.g. 545/857 GHz carry I only).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from cmbcube.errors import InputError, param
from cmbcube.networks import sphere

WIDTH = 6
K = 9
P_INIT = 0.1
TEMPERATURE = 2.0 / 3.0      # Gal et al.'s spatial concrete dropout
LENGTH_SCALE = 1e-4          # prior length scale l of the weight regulariser l^2 / N
N_TRAIN = 800                # published number of training skies (regularisers when N is not given)


def levels(nside: int) -> int:
    """Encoder levels: the input nside down to nside 1 (depth follows nside)."""
    return int(math.log2(sphere.check_nside(nside))) + 1


def regularizers(n_train: int | None) -> tuple[float, float]:
    """(weight, dropout) regularisers l^2 / N and 2 / N of concrete dropout."""
    n = max(int(n_train or N_TRAIN), 1)
    return LENGTH_SCALE ** 2 / n, 2.0 / n


class ConcreteDropout(nn.Module):
    """Spatial concrete dropout on (B, groups * channels, N): whole maps dropped, a learned rate per group."""

    def __init__(self, groups: int, channels: int, p_init: float = P_INIT, temperature: float = TEMPERATURE):
        super().__init__()
        self.groups, self.channels, self.temperature = groups, channels, temperature
        self.logit_p = nn.Parameter(torch.full((groups,), math.log(p_init / (1 - p_init))))
        self.enabled = True
        self.noise = None            # (B, groups, channels, 1) uniforms drawn ahead (mc_predict), else drawn here

    @property
    def p(self):
        return torch.sigmoid(self.logit_p)

    def forward(self, x):
        if not self.enabled:
            return x
        b, c, n = x.shape
        p = self.p[None, :, None, None]
        eps = 1e-7
        u = self.noise if self.noise is not None else \
            torch.rand(b, self.groups, self.channels, 1, device=x.device, dtype=x.dtype)
        z = (torch.log(p + eps) - torch.log(1 - p + eps) + torch.log(u + eps) - torch.log(1 - u + eps))
        keep = 1 - torch.sigmoid(z / self.temperature)
        return (x.reshape(b, self.groups, self.channels, n) * keep / (1 - p)).reshape(b, c, n)

    def regularization(self, weight, weight_regularizer, dropout_regularizer):
        """Gal et al.'s KL term for the layer whose input this dropout masks (weight: (groups, ...))."""
        p = self.p
        w2 = weight.pow(2).reshape(self.groups, -1).sum(dim=1)
        entropy = p * torch.log(p) + (1 - p) * torch.log(1 - p)
        return (weight_regularizer * w2 / (1 - p)).sum() + (dropout_regularizer * self.channels * entropy).sum()


class DropConv(nn.Module):
    """Concrete dropout -> grouped Chebyshev convolution."""

    def __init__(self, cin, cout, K=K, groups=1, p_init=P_INIT):
        super().__init__()
        self.dropout = ConcreteDropout(groups, cin, p_init)
        self.conv = sphere.ChebConv(cin, cout, K, groups)

    def forward(self, x):
        return self.conv(self.dropout(x))

    def regularization(self, wr, dr):
        return self.dropout.regularization(self.conv.weight, wr, dr)


class DropScale(nn.Module):
    """Concrete dropout -> per-map a x + b (the skip scaling), grouped."""

    def __init__(self, groups, channels, p_init=P_INIT):
        super().__init__()
        self.groups, self.channels = groups, channels
        self.dropout = ConcreteDropout(groups, channels, p_init)
        self.scale = nn.Parameter(torch.ones(groups, channels))
        self.shift = nn.Parameter(torch.zeros(groups, channels))

    def forward(self, x):
        b, _, n = x.shape
        h = self.dropout(x).reshape(b, self.groups, self.channels, n)
        return h * self.scale[None, :, :, None] + self.shift[None, :, :, None]      # (B, G, C, N)

    def regularization(self, wr, dr):
        return self.dropout.regularization(self.scale, wr, dr)


class PetroffNet(nn.Module):
    """Petroff et al.'s Bayesian spherical UNet on (B, channels, 12 nside^2) NESTED maps.

    branch_channels: input channels per branch (detector), in input order
    (detector-major, as CubeDataset orders them); out_fields: target fields;
    n_train: training skies (sets the concrete-dropout regularisers).
    Output: (B, 2 out_fields, npix): mu for each field, then s = -log sigma^2.
    """

    def __init__(self, branch_channels, out_fields: int, nside: int, width: int = WIDTH, K: int = K,
                 p_init: float = P_INIT, n_train: int | None = None):
        super().__init__()
        branch_channels = [int(c) for c in branch_channels]
        if not branch_channels or min(branch_channels) < 1:
            raise InputError(f"branch_channels {branch_channels}: every branch needs >= 1 input channel")
        self.nside, self.out_fields = sphere.check_nside(nside), out_fields
        self.groups, self.cin, self.width = len(branch_channels), max(branch_channels), width
        self.levels = levels(nside)
        self.wr, self.dr = regularizers(n_train)
        slots = [g * self.cin + k for g, c in enumerate(branch_channels) for k in range(c)]
        self.register_buffer("slots", torch.tensor(slots, dtype=torch.long), persistent=False)
        G = self.groups
        self.encoder = nn.ModuleList([
            nn.ModuleList([DropConv(self.cin if level == 0 else width, width, K, G, p_init),
                           DropConv(width, width, K, G, p_init)]) for level in range(self.levels)])
        self.skips = nn.ModuleList([DropScale(G, width, p_init) for _ in range(self.levels)])
        # decoder[level] works at nside / 2^level, level = levels - 2 (nside 2) ... 0 (the input nside)
        self.decoder = nn.ModuleList([
            nn.ModuleList([DropConv(width, width, K, 1, p_init), DropConv(width, width, K, 1, p_init)])
            for _ in range(self.levels - 1)])
        self.final = DropConv(width, 2 * out_fields, K, 1, p_init)
        with torch.no_grad():          # start near mu = 0, s = 0 (sigma = 1): the e^s term cannot blow up early
            self.final.conv.weight.mul_(1e-2)
        self.act = nn.ELU()

    # -- dropout control -------------------------------------------------------------------
    def dropouts(self):
        return [m for m in self.modules() if isinstance(m, ConcreteDropout)]

    def dropouts_in_call_order(self):
        """The dropout layers in the order forward() runs them (the order they draw their masks)."""
        order = []
        for level, (conv_a, conv_b) in enumerate(self.encoder):
            order += [conv_a.dropout, conv_b.dropout, self.skips[level].dropout]
        for level in range(self.levels - 2, -1, -1):
            order += [self.decoder[level][0].dropout, self.decoder[level][1].dropout]
        return order + [self.final.dropout]

    def set_dropout(self, enabled: bool) -> None:
        """Concrete dropout on (the default, also at inference: Monte Carlo sampling) or off (deterministic)."""
        for m in self.dropouts():
            m.enabled = bool(enabled)

    def drop_rates(self) -> np.ndarray:
        return np.concatenate([m.p.detach().cpu().numpy() for m in self.dropouts()])

    def regularization(self):
        return sum(m.regularization(self.wr, self.dr) for m in self.modules()
                   if isinstance(m, (DropConv, DropScale)))

    # -- forward ----------------------------------------------------------------------------
    def check_input(self, x) -> None:
        if x.ndim != 3 or x.shape[-1] != 12 * self.nside ** 2:
            raise InputError(f"PetroffNet for nside {self.nside} expects (batch, channels, {12 * self.nside ** 2}) "
                             f"NESTED maps, got {tuple(x.shape)}")
        if x.shape[1] != self.slots.numel():
            raise InputError(f"PetroffNet expects {self.slots.numel()} input channels, got {x.shape[1]}")

    def forward(self, x):
        self.check_input(x)
        b, _, n = x.shape
        h = x.new_zeros(b, self.groups * self.cin, n)
        h[:, self.slots] = x
        skips = []
        for level, (conv_a, conv_b) in enumerate(self.encoder):
            if level:
                h = sphere.pool(h)
            h = self.act(conv_b(self.act(conv_a(h))))
            skips.append(self.skips[level](h).sum(dim=1))        # all branches' skips at this nside, summed
        z = self.act(skips[-1])                                   # bottleneck at nside 1
        for level in range(self.levels - 2, -1, -1):
            conv_a, conv_b = self.decoder[level]
            z = sphere.unpool(z)
            z = self.act(conv_b(self.act(conv_a(z) + skips[level])))
        return self.final(z)

    def split(self, out):
        """(mu, s) of a forward output."""
        return out[:, : self.out_fields], out[:, self.out_fields:]


def heteroscedastic_loss(out, target):
    """0.5 mean[(y - mu)^2 e^s - s] with out = (mu, s) stacked along channels."""
    f = target.shape[1]
    if out.shape[1] != 2 * f:
        raise InputError(f"heteroscedastic loss: the network gives {out.shape[1]} maps for {f} target field(s); "
                         "it needs two per field (mean and -log variance)")
    mu, s = out[:, :f], out[:, f:]
    return 0.5 * torch.mean((target - mu) ** 2 * torch.exp(s) - s)


DRAW_PIXELS = 2 ** 21      # dropout masks are drawn for as many passes at once as fit this many pixels
BATCH_PIXELS = 2 ** 17     # passes run through the network together: bounds the memory whatever --mc-samples


def mc_predict(net: PetroffNet, x, samples: int = 100, chunk: int | None = None, batch: int | None = None,
               generator=None):
    """Monte Carlo passes on one input (1, C, N) or (C, N).

    Returns (mean, sigma) as float64 numpy arrays (fields, N) in the network's
    (transformed) units: mean = average of mu_t; sigma^2 = mean(exp(-s_t)) + var(mu_t).

    The passes' dropout masks are drawn ``chunk`` passes at a time (default: as many as fit
    DRAW_PIXELS), layer after layer, as one forward pass of that many would draw them; the
    network then runs ``batch`` passes at a time (default: as many as fit BATCH_PIXELS), and
    the mean and variance are accumulated batch by batch (Chan et al.'s pairwise update of
    Welford's), so memory does not grow with ``samples`` and the draws do not depend on ``batch``.
    """
    if samples < 1:
        raise InputError(f"{param('mc_samples')} {samples}: must be >= 1")
    if x.ndim == 2:
        x = x[None]
    n = x.shape[-1]
    chunk = chunk or max(1, min(samples, DRAW_PIXELS // n))
    batch = max(1, min(batch or BATCH_PIXELS // n, chunk))
    layers = [m for m in net.dropouts_in_call_order() if m.enabled]
    f = net.out_fields
    mean = torch.zeros(f, n, dtype=torch.float64, device=x.device)
    m2 = torch.zeros_like(mean)
    alea = torch.zeros_like(mean)
    count = 0
    try:
        with torch.no_grad():
            while count < samples:
                m = min(chunk, samples - count)
                draws = [torch.rand(m, d.groups, d.channels, 1, device=x.device, dtype=x.dtype, generator=generator)
                         for d in layers]
                for start in range(0, m, batch):
                    k = min(batch, m - start)
                    for d, u in zip(layers, draws):
                        d.noise = u[start:start + k]
                    mu, s = net.split(net(x.expand(k, -1, -1)))
                    mu = mu.double()
                    alea += torch.exp(-s.double()).sum(0)
                    batch_mean = mu.mean(0)
                    delta = batch_mean - mean
                    total = count + k
                    mean += delta * (k / total)
                    m2 += ((mu - batch_mean) ** 2).sum(0) + delta ** 2 * (count * k / total)
                    count = total
    finally:
        for d in layers:
            d.noise = None
    sigma = torch.sqrt(alea / samples + m2 / samples)
    return mean.cpu().numpy(), sigma.cpu().numpy()


def build(in_channels: int, out_channels: int, nside: int, config=None, *, branches=None,
          n_train: int | None = None) -> PetroffNet:
    """The registry's builder. ``out_channels``: target fields (the network gives two maps per field:
    mean and -log variance); ``branches``: input channels per detector branch (default one branch per
    channel); ``n_train``: training skies (concrete-dropout regularisers; default the published 800)."""
    branches = list(branches) if branches is not None else [1] * in_channels
    if sum(branches) != in_channels:
        raise InputError(f"petroff: branches {branches} do not add up to {in_channels} input channels")
    return PetroffNet(branches, out_channels, nside, n_train=n_train)
