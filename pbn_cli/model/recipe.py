"""The recipe a network is trained with: one dataclass, stored in every checkpoint.

Everything that consumes a trained network (eval, compare, search, predict,
export) rebuilds it from this record, so it lives beside the model. The
presets that fill it in are training's (training/presets.py).

``FLAGS`` names the fields `pbn train` sets from an option of the same
name, ``NOT_FLAGS`` those it sets otherwise; a test keeps every field in
exactly one of them. ``RESUMABLE`` are those ``--resume`` may change.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from pbn_cli.core.errors import InputError
from pbn_cli.model.embedder import ModelConfig
from pbn_cli.model.mining import MINERS

MODES = ("pair", "triplet", "proxy")
SAMPLERS = ("random", "pk")
VIEWS = ("crop", "resize", "mixed")


@dataclass
class TrainConfig:
    mode: str = "triplet"  # pair: contrastive loss; triplet: triplet loss; proxy: artist classifier loss alone
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
    schedule: str = "cosine"  # cosine (by epoch) | cosine-steps (by step) | multistep
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.1
    triplet_margin: float = 0.2
    pair_margin: float = 0.5
    id_weight: float = 0.0  # weight of the artist-classification loss beside the pair/triplet loss
    class_scale: float = 16.0  # s of the cosine classifier's softmax
    class_margin: float = 0.1  # additive cosine margin of the true artist (proxy mode: --margin)
    backbone_lr_scale: float = 1.0  # the backbone learns at lr x this; the head and classifier at lr
    warmup: float = 0.0  # share of the planned steps over which the learning rate rises linearly
    bn_eval: bool | None = None  # BatchNorm statistics frozen; None: when pretrained and batches are small
    freeze_backbone: bool = False  # train the head only, on cached backbone features of fixed views
    view: str = "crop"  # crop: random crops at cache resolution; resize: whole painting shrunk; mixed: either
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

    def get(self, name: str):
        """A field of the recipe or of its model, by name."""
        return getattr(self.model, name) if hasattr(self.model, name) else getattr(self, name)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        d = dict(d)
        d["model"] = ModelConfig(**d["model"])
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


#: fields `pbn train` sets from the option of the same name (a None option keeps the preset's value)
FLAGS = (
    "backbone", "input_size", "embedding_dim", "normalize", "pretrained", "weights", "sampler", "miner", "batch_size",
    "paintings_per_artist", "epochs", "max_minutes", "lr", "view", "seed", "device", "compile",
    "id_weight", "backbone_lr_scale", "warmup", "bn_eval", "freeze_backbone", "levels",
    "keep_pretrained",
)
#: fields set otherwise: by --mode, --preset and --margin (the mode's margin), or by the preset alone
NOT_FLAGS = (
    "mode", "preset", "triplet_margin", "pair_margin", "class_margin", "class_scale", "optimizer", "weight_decay", "schedule", "milestones", "gamma",
    "hflip", "vflip", "rotation", "translate", "zoom", "val_triplets", "log_every",
    "mean", "std",  # the weights' own input normalisation (model/backbones.py input_config)
)
RESUMABLE = {"epochs", "max_minutes", "device", "compile"}  # what --resume may change


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
    if c.id_weight < 0 or c.backbone_lr_scale < 0 or not 0 <= c.warmup < 1:
        problems.append("--id-weight and --backbone-lr-scale must be >= 0, --warmup in [0, 1)")
    if c.mode == "proxy" and c.sampler != "pk":
        problems.append("--mode proxy trains on P x K batches: use --sampler pk")
    if c.mode == "proxy" and not 0 <= c.class_margin < 1:
        problems.append("--margin of proxy mode is a cosine margin in [0, 1)")
    if c.model.keep_pretrained < 0:
        problems.append("--keep-pretrained must be >= 0")
    elif c.model.keep_pretrained > 0 and not (c.model.pretrained or c.model.weights):
        problems.append("--keep-pretrained keeps a pretrained backbone's features: give --pretrained or --weights, "
                        "or --keep-pretrained 0")
    elif c.model.keep_pretrained > 0 and c.freeze_backbone:
        problems.append("--keep-pretrained keeps an untouched copy beside a fine-tuned backbone; with "
                        "--freeze-backbone the backbone is untouched already: give --keep-pretrained 0")
    if problems:
        raise InputError("; ".join(problems))
