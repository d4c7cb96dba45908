"""Small layers the model zoo shares (imports torch: import it from inside the builders)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn


class CappedMaxPool2d(nn.Module):
    """``nn.MaxPool2d(kernel)`` (stride = kernel, floor), except that a map smaller than the kernel is pooled whole
    instead of failing: at a network's design size it is exactly the plain pool."""

    def __init__(self, kernel: int):
        super().__init__()
        self.kernel = int(kernel)

    def forward(self, x):
        k = min(self.kernel, x.shape[-2], x.shape[-1])
        return F.max_pool2d(x, k)

    def extra_repr(self) -> str:
        return f"kernel={self.kernel}"


class ResampledInput(nn.Module):
    """``net`` behind a bilinear, antialiased resampling of its input to ``size`` x ``size`` (an identity when the
    input already has that size). ``net`` keeps its module names one level down (``net.layer4``)."""

    def __init__(self, net: nn.Module, size: int):
        super().__init__()
        self.net = net
        self.size = int(size)

    def forward(self, x):
        if tuple(x.shape[-2:]) != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False,
                              antialias=bool(x.shape[-1] > self.size))
        return self.net(x)

    def extra_repr(self) -> str:
        return f"size={self.size}"

