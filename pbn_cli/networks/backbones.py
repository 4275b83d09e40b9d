"""Backbones behind one factory: pbn's own CNNs, any torchvision classifier, any timm model.

- ``reference`` and ``compact``: pbn's CNNs (``BACKBONES``), trained from scratch.
- any name of ``torchvision.models``' classification models (``resnet50``,
  ``convnext_tiny``, ``vit_b_16``...): its last linear layer removed, so the
  backbone gives the pooled features.
- ``timm:NAME``: any timm model (the optional extra ``pbn[timm]``), created
  with ``num_classes=0``.

Pretrained weights: ``pretrained`` takes the model's default ImageNet
checkpoint the way torchvision and timm do (their cache, else a download);
``weights`` names a torchvision weights enum value (``IMAGENET1K_V2``) or a
local ``.safetensors`` / state-dict file, read without running code. The
input normalisation (and size) of the weights is ``input_config``'s answer,
recorded in the run so every command sees images as training did.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from pathlib import Path

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
        # the stages before the last, as timm describes its models' (so --levels works alike)
        ends = [i for i, m in enumerate(self.features) if isinstance(m, nn.MaxPool2d)]
        self._ends = ends[:-1]
        norms = [i for i, m in enumerate(self.features) if isinstance(m, nn.BatchNorm2d)]
        self.feature_info = [{"num_chs": self.features[max(n for n in norms if n < i)].num_features,
                              "reduction": 2 ** (k + 1), "module": f"features.{i}"} for k, i in enumerate(self._ends)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.features(x))

    def forward_intermediates(self, x: torch.Tensor, indices: list[int], intermediates_only: bool = False):
        """(the last stage's output, the outputs of the stages ``indices`` name), timm's convention."""
        wanted = {self._ends[i] for i in indices}
        middle = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in wanted:
                middle.append(x)
        return middle if intermediates_only else (x, middle)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = True) -> torch.Tensor:
        return self.pool(x)


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


TIMM = "timm:"


def _torchvision_models() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def _timm():
    try:
        import timm
    except ImportError:
        raise InputError("timm backbones need the timm extra: pip install 'pbn[timm]'") from None
    return timm


def available() -> dict[str, list[str]]:
    """What `pbn backbones` lists: pbn's own, torchvision's classifiers, timm's models (when installed)."""
    out = {"pbn": sorted(BACKBONES), "torchvision": _torchvision_models()}
    try:
        out["timm"] = [TIMM + n for n in _timm().list_models()]
    except InputError:
        out["timm"] = []
    return out


def check_name(name: str) -> None:
    """Refuse an unknown backbone with the closest names there are."""
    if name in BACKBONES:
        return
    if name.startswith(TIMM):
        timm = _timm()
        arch = name[len(TIMM):]
        if arch in timm.list_models() or timm.is_model(arch):
            return
        close = [TIMM + n for n in difflib.get_close_matches(arch, timm.list_models(), n=5, cutoff=0.6)]
    else:
        models = _torchvision_models()
        if name in models:
            return
        close = difflib.get_close_matches(name, [*BACKBONES, *models], n=5, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise InputError(f"unknown backbone {name!r}{hint} (`pbn backbones` lists them all)")


def _weights_enum(name: str, weights: str | None):
    """The torchvision weights enum value for --pretrained (DEFAULT) or --weights NAME; None for a file."""
    import torchvision

    enum = torchvision.models.get_model_weights(name)
    if weights is None:
        return enum.DEFAULT
    if _is_file(weights):
        return None
    try:
        return enum[weights]
    except KeyError:
        names = ", ".join(w.name for w in enum)
        raise InputError(f"{name} has no weights {weights!r}; choose one of {names}, or give a weights file") from None


def _is_file(weights: str) -> bool:
    return weights.endswith((".safetensors", ".pt", ".pth", ".bin")) or "/" in weights or Path(weights).exists()


def input_config(name: str, pretrained: bool, weights: str | None) -> dict | None:
    """mean, std and input size the weights were trained with; None when nothing pretrained is loaded."""
    if not (pretrained or weights) or name in BACKBONES:
        return None
    if name.startswith(TIMM):
        cfg = _timm().models.get_pretrained_cfg(name[len(TIMM):])
        if cfg is None:
            return None
        return {"mean": list(cfg.mean), "std": list(cfg.std), "input_size": int(cfg.input_size[-1])}
    w = _weights_enum(name, weights) or _weights_enum(name, None)
    t = w.transforms()
    return {"mean": list(t.mean), "std": list(t.std), "input_size": int(t.crop_size[0])}


def load_weights_file(path: str) -> dict:
    """A state dict from a .safetensors file or a torch file holding plain tensors only; one line otherwise."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        reason = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
        raise InputError(f"weights file {path} refused: it is not plain tensors ({reason}); "
                         "pbn never runs code from a weights file") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"weights file {path} holds no state dict of tensors")
    return state


def _load_into(net: nn.Module, state: dict, what: str) -> None:
    """Load ``state`` into a backbone without its classifier: every backbone tensor must be there."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    own = net.state_dict()  # the classifier's tensors in ``state`` are left over
    wrong = [k for k, v in own.items() if k not in state or state[k].shape != v.shape]
    if wrong:
        raise InputError(f"{what} does not fit this backbone: {len(wrong)} of its {len(own)} tensors are missing "
                         f"or of another shape (first: {wrong[0]}); pick the --backbone these weights were made for")
    net.load_state_dict({k: state[k] for k in own})


def load_pretrained(name: str, weights: str | None = None) -> dict:
    """torchvision's weights for ``name`` (default or named), from its cache or downloaded; one clear error otherwise."""
    w = _weights_enum(name, weights)
    try:
        return w.get_state_dict(progress=True, weights_only=True)
    except Exception as err:  # offline, proxy, damaged file...
        hub = torch.hub.get_dir()
        filename = w.url.rsplit("/", 1)[-1]
        raise PbnError(
            f"could not load ImageNet weights for {name} ({type(err).__name__}: {err}); connect to "
            f"the internet once, or put {filename} in {hub}/checkpoints, or give a file with --weights, "
            "or train without --pretrained"
        ) from None


def _strip_classifier(net: nn.Module, name: str) -> int:
    """Replace the classifier's last linear layer by the identity; the size of the features it read."""
    last = None
    for path, module in net.named_modules():
        if isinstance(module, nn.Linear):
            last = path
    if last is None:
        raise InputError(f"torchvision's {name} has no linear classifier to remove; choose another backbone")
    parent_path, _, attr = last.rpartition(".")
    parent = net.get_submodule(parent_path) if parent_path else net
    features = getattr(parent, attr).in_features
    setattr(parent, attr, nn.Identity())
    return features


def _torchvision(name: str, pretrained: bool, weights: str | None) -> tuple[nn.Module, int]:
    import torchvision

    net = torchvision.models.get_model(name, weights=None)
    features = _strip_classifier(net, name)
    if weights and _is_file(weights):
        _load_into(net, load_weights_file(weights), f"weights file {weights}")
    elif pretrained or weights:
        _load_into(net, load_pretrained(name, weights), f"{name}'s weights")
    return net, features


def _timm_model(name: str, pretrained: bool, weights: str | None) -> tuple[nn.Module, int]:
    timm = _timm()
    arch = name[len(TIMM):]
    if weights and not _is_file(weights):
        raise InputError("--weights NAME is for torchvision's weights; a timm model takes --pretrained or a weights file")
    try:
        net = timm.create_model(arch, pretrained=pretrained and not weights, num_classes=0)
    except Exception as err:  # offline, unknown tag...
        raise PbnError(f"could not create timm's {arch} ({type(err).__name__}: {str(err)[:160]}); connect to the "
                       "internet once (the hub cache keeps the weights), or give a file with --weights") from None
    if weights:
        _load_into(net, load_weights_file(weights), f"weights file {weights}")
    return net, int(net.num_features)


def create_backbone(name: str, input_size: int, pretrained: bool = False, weights: str | None = None) -> tuple[nn.Module, int]:
    """The backbone module and the size of its features."""
    check_name(name)
    if name in BACKBONES:
        if weights:
            raise InputError(f"the {name} backbone has no pretrained weights; drop --weights")
        return BACKBONES[name](input_size, pretrained)
    if name.startswith(TIMM):
        return _timm_model(name, pretrained, weights)
    return _torchvision(name, pretrained, weights)


BACKBONES: dict[str, Callable[[int, bool], tuple[nn.Module, int]]] = {
    "reference": _reference,
    "compact": _compact,
}
