"""``pixel-linear``: the simplest trained method, a baseline for the networks.

Every output pixel is one learned linear combination of the input channels at that pixel plus a constant
(a 1x1 convolution on whole NESTED maps, the CubeDataset ``sky`` view): an internal linear combination
whose weights are fitted to the training skies instead of constrained to unit CMB response, the same for
every pixel and scale.  A network that cannot beat it has not learned anything a linear fit cannot.
"""
from __future__ import annotations

from torch import nn

from cmbcube.errors import InputError


class PixelLinear(nn.Module):
    """(batch, channels, npix) -> (batch, out_channels, npix): one weight per input channel and a bias."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.mix = nn.Conv1d(in_channels, out_channels, 1, bias=True)

    def forward(self, x):
        if x.ndim != 3:
            raise InputError(f"pixel-linear reads whole maps (batch, channels, npix): got shape {tuple(x.shape)}")
        return self.mix(x)


def build(in_channels: int, out_channels: int, nside: int, config=None, *, branches=None, n_train=None):
    """The registry's builder."""
    return PixelLinear(in_channels, out_channels)
