"""Backbones: the reference CNN and torchvision ResNets, behind one factory.

Adding a backbone is one function registered in ``BACKBONES``: it takes the
input size and whether to load pretrained weights, and returns the module
and the size of its output features.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from pbn_cli.core.errors import InputError, PbnError


class ReferenceCNN(nn.Module):
    """The reference design: five blocks of 3x3 conv + BatchNorm + ReLU, then 2x2 max-pool.

    2, 3, 3, 3, 3 convs with 16, 32, 64, 128, 256 channels; flatten; linear
    to 2048; LayerNorm; ReLU. Any input size divisible by 32.
    """

    def __init__(self, input_size: int = 256, channels=(16, 32, 64, 128, 256), convs=(2, 3, 3, 3, 3), features: int = 2048):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for cout, n in zip(channels, convs):
            for _ in range(n):
                layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
                cin = cout
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        side = input_size // 32
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(cin * side * side, features), nn.LayerNorm(features), nn.ReLU(inplace=True))
        self.out_features = features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class CompactCNN(nn.Module):
    """The reference's five conv blocks, then global average pooling instead of flatten + linear.

    Translation-invariant (brushwork is a texture, wherever it sits), any
    input size, 1.2 M parameters: the CPU-sized backbone of the quick preset.
    """

    def __init__(self):
        super().__init__()
        self.features = ReferenceCNN(32).features
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.out_features = 256

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.features(x))


def _compact(input_size: int, pretrained: bool) -> tuple[nn.Module, int]:
    if pretrained:
        raise InputError("the compact backbone has no pretrained weights; drop --pretrained")
    net = CompactCNN()
    return net, net.out_features


def _reference(input_size: int, pretrained: bool) -> tuple[nn.Module, int]:
    if pretrained:
        raise InputError("the reference backbone has no pretrained weights; drop --pretrained")
    if input_size % 32:
        raise InputError(f"the reference backbone needs --input-size divisible by 32, got {input_size}")
    net = ReferenceCNN(input_size)
    return net, net.out_features


def load_pretrained(name: str) -> dict:
    """torchvision's ImageNet weights for ``name``, from its cache or downloaded; one clear error otherwise."""
    import torchvision

    weights = torchvision.models.get_model_weights(name).DEFAULT
    try:
        return weights.get_state_dict(progress=True, weights_only=True)
    except Exception as err:  # offline, proxy, damaged file...
        hub = torch.hub.get_dir()
        filename = weights.url.rsplit("/", 1)[-1]
        raise PbnError(
            f"could not load ImageNet weights for {name} ({type(err).__name__}: {err}); connect to "
            f"the internet once, or put {filename} in {hub}/checkpoints, or train without --pretrained"
        ) from None


def _resnet(name: str) -> Callable[[int, bool], tuple[nn.Module, int]]:
    def build(input_size: int, pretrained: bool) -> tuple[nn.Module, int]:
        import torchvision

        net = getattr(torchvision.models, name)(weights=None)
        if pretrained:
            net.load_state_dict(load_pretrained(name))
        features = net.fc.in_features
        net.fc = nn.Identity()
        return net, features

    return build


BACKBONES: dict[str, Callable[[int, bool], tuple[nn.Module, int]]] = {
    "reference": _reference,
    "compact": _compact,
    "resnet18": _resnet("resnet18"),
    "resnet34": _resnet("resnet34"),
    "resnet50": _resnet("resnet50"),
}


def create_backbone(name: str, input_size: int, pretrained: bool = False) -> tuple[nn.Module, int]:
    if name not in BACKBONES:
        raise InputError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    return BACKBONES[name](input_size, pretrained)
