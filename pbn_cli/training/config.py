"""The training configuration: one dataclass, three presets, flags override presets.

``reference`` reproduces the reference project's recipe; ``quick`` is sized
for a CPU (the demo and the tests); ``default`` is meant for a GPU and the
full Kaggle data. docs/training.md explains each choice.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from pbn_cli.errors import InputError
from pbn_cli.model.embedder import ModelConfig
from pbn_cli.model.mining import MINERS

MODES = ("pair", "triplet")
SAMPLERS = ("random", "pk")
VIEWS = ("crop", "resize")


@dataclass
class TrainConfig:
    mode: str = "triplet"  # pair: contrastive loss on pairs; triplet: triplet loss
    preset: str = "default"
    model: ModelConfig = field(default_factory=ModelConfig)
    sampler: str = "pk"  # random: the reference's draw; pk: P artists x K paintings
    miner: str = "semihard"  # pk only: all | semihard | batch-hard
    batch_size: int = 64  # per process: triplets or pairs (random), or images P*K (pk)
    paintings_per_artist: int = 4  # K of a P x K batch
    epochs: int = 30
    max_minutes: float | None = None  # stop after the epoch that passes this budget
    optimizer: str = "adamw"  # adam | adamw
    lr: float = 3e-4
    weight_decay: float = 1e-4
    schedule: str = "cosine"  # cosine | multistep
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.1
    triplet_margin: float = 0.2
    pair_margin: float = 0.5
    view: str = "crop"  # crop: random input_size crops at cache resolution; resize: whole painting shrunk
    hflip: float = 0.0  # probability of a horizontal flip
    vflip: float = 0.0
    rotation: float = 0.0  # rotation drawn uniformly in [0, rotation] degrees
    translate: float = 0.0  # shift up to this fraction of the side
    zoom: float = 1.0  # fixed zoom of the affine transform (the reference: 1.2)
    seed: int = 0
    val_triplets: int = 5000
    device: str = "auto"
    compile: bool = False
    log_every: int = 20  # steps between host syncs for the progress bar

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        d = dict(d)
        d["model"] = ModelConfig(**d["model"])
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


PRESETS: dict[str, dict] = {
    "reference": dict(
        model=dict(backbone="reference", input_size=256, embedding_dim=None, normalize=False, pretrained=False),
        sampler="random", batch_size=4, epochs=60, optimizer="adam", lr=1e-3, weight_decay=0.0,
        schedule="multistep", milestones=[11, 25, 40], gamma=0.1, triplet_margin=1.0, pair_margin=2.0,
        view="resize", hflip=0.5, vflip=0.5, rotation=180.0, translate=0.2, zoom=1.2,
    ),
    "quick": dict(
        model=dict(backbone="compact", input_size=96, embedding_dim=128, normalize=True, pretrained=False),
        sampler="pk", miner="all", batch_size=32, paintings_per_artist=4, epochs=40, max_minutes=None,
        optimizer="adamw", lr=3e-4, weight_decay=1e-4, schedule="cosine", triplet_margin=0.2, pair_margin=0.5,
        view="crop", hflip=0.0, vflip=0.0, rotation=0.0, translate=0.0, zoom=1.0,
    ),
    "default": dict(
        model=dict(backbone="resnet50", input_size=224, embedding_dim=512, normalize=True, pretrained=True),
        sampler="pk", miner="semihard", batch_size=128, paintings_per_artist=4, epochs=30,
        optimizer="adamw", lr=3e-4, weight_decay=1e-4, schedule="cosine", triplet_margin=0.2, pair_margin=0.5,
        view="crop", hflip=0.0, vflip=0.0, rotation=0.0, translate=0.0, zoom=1.0,
    ),
}


def resolve(preset: str, mode: str, overrides: dict) -> TrainConfig:
    """The preset's configuration with every non-None override applied, checked."""
    if preset not in PRESETS:
        raise InputError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    values = {k: v for k, v in PRESETS[preset].items() if k != "model"}
    model = dict(PRESETS[preset]["model"])
    for key, value in overrides.items():
        if value is None:
            continue
        if key in model:
            model[key] = value
        else:
            values[key] = value
    config = TrainConfig(mode=mode, preset=preset, model=ModelConfig(**model), **values)
    check(config)
    return config


def check(c: TrainConfig) -> None:
    problems = []
    if c.mode not in MODES:
        problems.append(f"--mode must be one of {', '.join(MODES)}")
    if c.sampler not in SAMPLERS:
        problems.append(f"--sampler must be one of {', '.join(SAMPLERS)}")
    if c.miner not in MINERS:
        problems.append(f"--miner must be one of {', '.join(MINERS)}")
    if c.view not in VIEWS:
        problems.append(f"--view must be one of {', '.join(VIEWS)}")
    if c.sampler == "pk" and (c.paintings_per_artist < 2 or c.batch_size < 2 * c.paintings_per_artist):
        problems.append("a P x K batch needs K >= 2 and --batch-size >= 2K")
    if c.epochs < 1 or c.batch_size < 1 or c.lr <= 0:
        problems.append("--epochs, --batch-size and --lr must be positive")
    if c.model.input_size < 32:
        problems.append("--input-size must be at least 32")
    if c.model.embedding_dim is not None and c.model.embedding_dim < 1:
        problems.append("--embedding-dim must be at least 1")
    if c.triplet_margin <= 0 or c.pair_margin <= 0:
        problems.append("--margin must be positive")
    if c.max_minutes is not None and c.max_minutes <= 0:
        problems.append("--max-minutes must be positive")
    if problems:
        raise InputError("; ".join(problems))
