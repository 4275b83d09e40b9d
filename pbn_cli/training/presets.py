"""The presets `pbn train --preset` starts from; options override them.

``default`` is the recipe's own defaults (networks/recipe.py: a pretrained
resnet50 for a GPU and the full Kaggle data); each other preset is what it
changes from them, so every value has one source. ``cpu`` is the same
recipe on a small pretrained backbone, fine-tuned on a CPU in minutes;
``quick`` is the from-scratch recipe sized for a CPU (the demo and the
tests); ``reference`` reproduces the reference project's recipe.
docs/training.md explains each choice.
"""

from __future__ import annotations

import copy

from pbn_cli.core.errors import InputError
from pbn_cli.networks.backbones import check_name, input_config
from pbn_cli.networks.recipe import TrainConfig, check

PRESETS: dict[str, dict] = {
    "reference": dict(
        backbone="reference", input_size=256, normalize=False, pretrained=False, view="resize",
        sampler="random", miner="semihard", batch_size=4, epochs=60, optimizer="adam", weight_decay=0.0,
        schedule="multistep", milestones=[11, 25, 40], triplet_margin=1.0, pair_margin=2.0, backbone_lr_scale=1.0,
        warmup=0.0, vflip=0.5, rotation=180.0, translate=0.2, zoom=1.2,
    ),
    "quick": dict(backbone="compact", input_size=96, embedding_dim=128, pretrained=False, view="crop",
                  batch_size=32, epochs=40, lr=3e-4, schedule="cosine", backbone_lr_scale=1.0, warmup=0.0, hflip=0.0),
    "cpu": dict(backbone="timm:tf_efficientnet_lite0", levels=3, batch_size=32, epochs=8, max_minutes=15.0,
                warmup=0.1),
    "default": {},  # the recipe's own defaults
}


def resolve(preset: str | None, mode: str | None, overrides: dict) -> TrainConfig:
    """The preset's recipe with every non-None override (by field name) applied, checked; ``preset`` or ``mode``
    None: the recipe's default."""
    preset, mode = preset or TrainConfig.preset, mode or TrainConfig.mode
    if preset not in PRESETS:
        raise InputError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    config = TrainConfig(mode=mode, preset=preset)
    given = {k: v for k, v in overrides.items() if v is not None and k not in ("preset", "mode")}  # the arguments
    for key, value in {**copy.deepcopy(PRESETS[preset]), **given}.items():
        config.set(key, value)
    model = config.model
    if "keep_pretrained" not in given and (config.freeze_backbone or not model.pretrained_weights):
        model.keep_pretrained = 0.0  # a preset's untouched copy needs weights and a backbone that changes
    check_name(model.backbone)
    weights = input_config(model.backbone, model.pretrained, model.weights)
    if weights:  # pretrained weights see images as they were trained to
        model.mean, model.std = weights["mean"], weights["std"]
        if "input_size" not in given:
            model.input_size = weights["input_size"]
    check(config)
    return config
