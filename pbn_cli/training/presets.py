"""The presets `pbn train --preset` starts from; options override them.

``reference`` reproduces the reference project's recipe; ``quick`` is the
from-scratch recipe sized for a CPU (the demo and the tests); ``cpu``
fine-tunes a small pretrained backbone on a CPU in minutes; ``default`` is
the same recipe on a larger backbone, for a GPU and the full Kaggle data. docs/training.md explains each choice.
"""

from __future__ import annotations

from dataclasses import fields

from pbn_cli.core.errors import InputError
from pbn_cli.model.backbones import check_name, input_config
from pbn_cli.model.embedder import ModelConfig
from pbn_cli.model.recipe import TrainConfig, check

PRESETS: dict[str, dict] = {
    "reference": dict(
        model=dict(backbone="reference", input_size=256, embedding_dim=None, normalize=False, pretrained=False,
                   view="resize"),
        sampler="random", batch_size=4, epochs=60, optimizer="adam", lr=1e-3, weight_decay=0.0,
        schedule="multistep", milestones=[11, 25, 40], gamma=0.1, triplet_margin=1.0, pair_margin=2.0,
        hflip=0.5, vflip=0.5, rotation=180.0, translate=0.2, zoom=1.2,
    ),
    "quick": dict(
        model=dict(backbone="compact", input_size=96, embedding_dim=128, normalize=True, pretrained=False, view="crop"),
        sampler="pk", miner="all", batch_size=32, paintings_per_artist=4, epochs=40, max_minutes=None,
        optimizer="adamw", lr=3e-4, weight_decay=1e-4, schedule="cosine", triplet_margin=0.2, pair_margin=0.5,
        hflip=0.0, vflip=0.0, rotation=0.0, translate=0.0, zoom=1.0,
    ),
    "cpu": dict(
        model=dict(backbone="timm:tf_efficientnet_lite0", input_size=224, embedding_dim=None, normalize=True,
                   pretrained=True, levels=3, keep_pretrained=1.0, view="mixed"),
        sampler="pk", miner="all", batch_size=32, paintings_per_artist=4, epochs=8, max_minutes=15.0,
        optimizer="adamw", lr=1e-3, weight_decay=1e-4, schedule="cosine-steps", triplet_margin=0.2, pair_margin=0.5,
        id_weight=0.0, backbone_lr_scale=0.1, warmup=0.1, hflip=0.5, vflip=0.0, rotation=0.0,
        translate=0.0, zoom=1.0,
    ),
    "default": dict(
        model=dict(backbone="resnet50", input_size=224, embedding_dim=None, normalize=True, pretrained=True,
                   keep_pretrained=1.0, view="mixed"),
        sampler="pk", miner="all", batch_size=128, paintings_per_artist=4, epochs=30,
        optimizer="adamw", lr=1e-3, weight_decay=1e-4, schedule="cosine-steps", triplet_margin=0.2, pair_margin=0.5,
        id_weight=0.0, backbone_lr_scale=0.1, warmup=0.05, hflip=0.5, vflip=0.0, rotation=0.0,
        translate=0.0, zoom=1.0,
    ),
}


MODEL_FIELDS = {f.name for f in fields(ModelConfig)}


def resolve(preset: str, mode: str, overrides: dict) -> TrainConfig:
    """The preset's configuration with every non-None override applied, checked."""
    if preset not in PRESETS:
        raise InputError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    values = {k: v for k, v in PRESETS[preset].items() if k != "model"}
    model = dict(PRESETS[preset]["model"])
    for key, value in overrides.items():
        if value is None or key in ("preset", "mode"):  # the arguments themselves
            continue
        if key in MODEL_FIELDS:
            model[key] = value
        else:
            values[key] = value
    if overrides.get("keep_pretrained") is None and (values.get("freeze_backbone") or not
                                                      ModelConfig(**model).pretrained_weights):
        model["keep_pretrained"] = 0.0  # a preset's untouched copy needs weights and a backbone that changes
    check_name(model["backbone"])
    weights = input_config(model["backbone"], model.get("pretrained", False), model.get("weights"))
    if weights:  # pretrained weights see images as they were trained to
        model.update(mean=weights["mean"], std=weights["std"])
        if overrides.get("input_size") is None:
            model["input_size"] = weights["input_size"]
    config = TrainConfig(mode=mode, preset=preset, model=ModelConfig(**model), **values)
    check(config)
    return config
