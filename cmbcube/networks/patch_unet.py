"""A standard 2-D UNet on square NESTED patches of the sphere (the CubeDataset ``patches`` view):
3x3 double convolutions with BatchNorm and ReLU, max-pooling down, transposed convolutions up."""
from __future__ import annotations

import torch
from torch import nn

from cmbcube.errors import InputError
from cmbcube.networks import default_patch_side


class _DoubleConv(nn.Sequential):
    def __init__(self, cin, cout):
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class PatchUNet(nn.Module):
    """A standard 2-D UNet (3x3 double convolutions, max-pooling, transposed-conv upsampling)."""

    def __init__(self, in_channels: int, out_channels: int = 1, base: int = 32, depth: int = 4):
        super().__init__()
        self.depth = depth
        chans = [base * 2 ** i for i in range(depth + 1)]
        self.down = nn.ModuleList([_DoubleConv(in_channels, chans[0])] +
                                  [_DoubleConv(chans[i], chans[i + 1]) for i in range(depth)])
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList([nn.ConvTranspose2d(chans[i + 1], chans[i], 2, stride=2)
                                 for i in reversed(range(depth))])
        self.merge = nn.ModuleList([_DoubleConv(2 * chans[i], chans[i]) for i in reversed(range(depth))])
        self.last = nn.Conv2d(chans[0], out_channels, 1)

    def check_input(self, height: int, width: int) -> None:
        step = 2 ** self.depth
        if height % step or width % step:
            raise InputError(f"a depth-{self.depth} patch UNet needs patch sides divisible by {step}, got {height}")

    def forward(self, x):
        self.check_input(*x.shape[-2:])
        skips = []
        for i, block in enumerate(self.down):
            x = block(x)
            if i < self.depth:
                skips.append(x)
                x = self.pool(x)
        for up, merge in zip(self.up, self.merge):
            x = merge(torch.cat([skips.pop(), up(x)], dim=1))
        return self.last(x)


def patch_depth(side: int) -> int:
    """Depth of the patch UNet for a patch side: 4 at 128, fewer for small patches (>= 2 px at the bottom)."""
    return max(1, min(4, side.bit_length() - 2))


def build(in_channels: int, out_channels: int, nside: int, config=None, *, branches=None,
          n_train=None) -> PatchUNet:
    """The registry's builder: depth from the patch side (``config.patch_side``, default one patch per
    nside-4 parent pixel), width ``config.base_channels`` (default 32)."""
    side = getattr(config, "patch_side", None) or default_patch_side(nside)
    return PatchUNet(in_channels, out_channels, base=getattr(config, "base_channels", None) or 32,
                     depth=patch_depth(side))
