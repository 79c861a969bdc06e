"""Networks used to distil and to evaluate: the reference ConvNet and cross-architecture nets.

``ConvNet`` follows the reference implementation (VICO-UoE/DatasetCondensation, ``networks.py``):
depth 3, width 128, conv3x3 -> instance norm (``GroupNorm(C, C)``) -> ReLU -> avgpool 2, then one
linear classifier. As in the reference, the first convolution pads by 3 for 1-channel input (so a
28 px MNIST image becomes 32 px inside the net). The feature size is measured with a dummy pass,
so any input size (28, 32, 64, 128 ...) works.

Use :func:`build_net` with a registry name (``convnet``, ``mlp``, ``resnet18``) everywhere, so the
architecture is a string in configs and provenance.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from medcondense.errors import ConfigError


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "instancenorm":
        return nn.GroupNorm(channels, channels, affine=True)
    if kind == "batchnorm":
        return nn.BatchNorm2d(channels)
    if kind == "none":
        return nn.Identity()
    raise ConfigError(f"unknown norm {kind!r}; expected instancenorm, batchnorm or none")


class Float32Conv2d(nn.Conv2d):
    """A ``Conv2d`` that runs in float32 inside a bfloat16 autocast region when it is trained.

    Used for a ConvNet's first layer when the input has few channels: there oneDNN's bfloat16
    *weight* gradient is far slower than float32 on a CPU (187 ms against 24 ms for 256 images
    of 32 px, 1 to 128 channels, on the AVX512-BF16 build box), the layer is cheap in float32,
    and its gradient is the one bfloat16 rounds most (DC matches it). Its bfloat16 forward and
    input gradient are fast, so with frozen weights (DM) it stays under autocast.
    Parameters and state dict are those of ``nn.Conv2d``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight.requires_grad and torch.is_autocast_enabled(x.device.type):
            with torch.autocast(device_type=x.device.type, enabled=False):
                return super().forward(x.float())
        return super().forward(x)


#: first layers with at most this many input channels run in float32 (see Float32Conv2d)
FLOAT32_FIRST_CONV_MAX_CHANNELS = 4


class ConvNet(nn.Module):
    """The reference ConvNet (``ConvNetD3`` with instance norm and average pooling).

    Parameters
    ----------
    channels, num_classes : input channels and number of classes
    image_size : input height = width in pixels
    width, depth : channels per layer and number of conv blocks (reference: 128, 3)
    norm : ``instancenorm`` (reference), ``batchnorm`` or ``none``
    """

    def __init__(
        self,
        channels: int,
        num_classes: int,
        image_size: int,
        width: int = 128,
        depth: int = 3,
        norm: str = "instancenorm",
    ):
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = channels
        for d in range(depth):
            padding = 3 if channels == 1 and d == 0 else 1
            conv = Float32Conv2d if d == 0 and in_channels <= FLOAT32_FIRST_CONV_MAX_CHANNELS else nn.Conv2d
            layers += [
                conv(in_channels, width, kernel_size=3, padding=padding),
                _norm(norm, width),
                nn.ReLU(inplace=True),
                nn.AvgPool2d(kernel_size=2, stride=2),
            ]
            in_channels = width
        self.features = nn.Sequential(*layers)
        with torch.no_grad():
            num_feat = self.features(torch.zeros(1, channels, image_size, image_size)).numel()
        if num_feat == 0:
            raise ConfigError(f"images of {image_size} px are too small for a depth-{depth} ConvNet")
        self.classifier = nn.Linear(num_feat, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Flattened features before the classifier (what DM matches)."""
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


class MLP(nn.Module):
    """A 3-layer MLP (reference ``MLP``: 128 hidden units, ReLU)."""

    def __init__(self, channels: int, num_classes: int, image_size: int, width: int = 128):
        super().__init__()
        self.body = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * image_size * image_size, width),
            nn.ReLU(inplace=True),
            nn.Linear(width, width),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(width, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


class _BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int, norm: str):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = _norm(norm, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = _norm(norm, planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), _norm(norm, planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 for small images (reference ``ResNet18``: 3x3 stem, no max-pool), instance norm."""

    def __init__(self, channels: int, num_classes: int, image_size: int, norm: str = "instancenorm"):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(channels, 64, 3, 1, 1, bias=False), _norm(norm, 64), nn.ReLU(inplace=True))
        blocks: list[nn.Module] = []
        in_planes = 64
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks += [_BasicBlock(in_planes, planes, stride, norm), _BasicBlock(planes, planes, 1, norm)]
            in_planes = planes
        self.layers = nn.Sequential(*blocks)
        self.classifier = nn.Linear(512, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.adaptive_avg_pool2d(self.layers(self.stem(x)), 1).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


NETS: dict[str, Callable[..., nn.Module]] = {
    "convnet": ConvNet,
    "mlp": MLP,
    "resnet18": ResNet18,
}


def build_net(name: str, channels: int, num_classes: int, image_size: int, **kwargs) -> nn.Module:
    """Build a fresh network by registry name (``convnet``, ``mlp``, ``resnet18``)."""
    try:
        factory = NETS[name]
    except KeyError:
        raise ConfigError(f"unknown architecture {name!r}; expected one of {', '.join(NETS)}") from None
    return factory(channels, num_classes, image_size, **kwargs)
