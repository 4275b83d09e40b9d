"""The recipe a network is trained with, and the network's own configuration: stored in every checkpoint.

Everything that consumes a trained network (eval, compare, search, predict,
export) rebuilds it from this record, so it lives beside the model. The
presets are training's (training/presets.py).

Each value has one source: a field's default here IS the ``default``
preset's value, and the other presets are what they change from it. Each
field that `pbn train` sets from an option declares it here (flag, help,
whether ``--resume`` may change it: core/options.py); the command and
``pbn_cli.api.training.train`` take their options by those declarations.
Fields without one are set by the presets. Which fields belong to the
network (``ModelConfig``) is ``MODEL_FIELDS``; ``TrainConfig.get`` and
``set`` reach either by name. Nothing here imports torch, so `pbn --help`
stays fast.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from pbn_cli.core.errors import InputError
from pbn_cli.core.options import declared, flag_of, option, parameters

MODES = ("pair", "triplet", "proxy")
SAMPLERS = ("random", "pk")
MINERS = ("all", "semihard", "batch-hard")  # networks/mining.py
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's and timm's usual input normalisation
IMAGENET_STD = (0.229, 0.224, 0.225)
MARGIN_HELP = "Margin of the mode's loss (triplet, pair; proxy: the additive cosine margin of the true artist)."


VIEWS = ("crop", "resize", "mixed")


@dataclass
class ModelConfig:
    """The network and how it sees a painting (the embedding's geometry): stored in every checkpoint and export.

    The defaults are the ``default`` preset's network: an ImageNet-pretrained resnet50 beside its untouched copy.
    """

    backbone: str = option("resnet50", help="reference, compact, any torchvision classifier (resnet50, "
                           "convnext_tiny, vit_b_16...) or timm:NAME; `pbn backbones` lists them.")
    input_size: int = option(224, help="Side of the square views the network sees, px.")
    embedding_dim: int | None = option(None, help="Embedding size (a linear head when it differs from the "
                                       "backbone's features; default: the backbone's own).")
    normalize: bool = option(True, help="L2-normalise embeddings.")
    pretrained: bool = option(True, help="The backbone's default ImageNet weights (torchvision's or timm's cache, "
                              "else downloaded).")
    weights: str | None = option(None, help="A torchvision weights name (e.g. IMAGENET1K_SWAG_LINEAR_V1) or a "
                                 ".safetensors / state-dict file; input normalisation and size follow the weights.")
    # the weights' own input normalisation, per channel (networks/backbones.py input_config): set with the weights
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))
    levels: int = option(1, help="compact and timm backbones: also pool the last LEVELS-1 stages before the head "
                         "(texture the last layer forgets); 1: the backbone's features alone.")
    keep_pretrained: float = option(1.0, help="Pretrained backbones: the embedding also holds the features of an "
                                    "untouched copy of the pretrained network (centred on training paintings), "
                                    "weighted this beside the fine-tuned ones, so what ImageNet knew of artists "
                                    "never seen is kept (cpu and default: 1; 0: off).")
    view: str = option("mixed", help="crop: random crops at cache resolution; resize: whole painting shrunk; mixed: "
                       "either (embedding: the grid of crops and the whole).")

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def pretrained_weights(self) -> bool:
        """Whether the backbone starts from pretrained weights (the default ones or a named set or file)."""
        return self.pretrained or bool(self.weights)


#: the fields of the network's own configuration; every other recipe field is TrainConfig's
MODEL_FIELDS = frozenset(f.name for f in fields(ModelConfig))


@dataclass
class TrainConfig:
    """The recipe. The defaults are the ``default`` preset (a GPU, the full data); presets change some of them."""

    mode: str = option("triplet", help="pair: contrastive loss on pairs; triplet: triplet loss; proxy: an artist "
                       "classifier's loss alone (normalised softmax, additive margin).")
    preset: str = option("default", help="default (pretrained, GPU, full data), cpu (pretrained, fine-tuned on a CPU "
                         "in minutes), quick (from scratch, CPU-sized; the demo's) or reference.")
    model: ModelConfig = field(default_factory=ModelConfig)
    sampler: str = option("pk", help="random (the reference's draw) or pk (P artists x K paintings).")
    miner: str = option("all", help="pk only: all, semihard or batch-hard.")
    batch_size: int = option(128, help="Per process: triplets/pairs (random) or images (pk).")
    paintings_per_artist: int = option(4, flag="--k", help="K of a P x K batch.")
    epochs: int = option(30, resumable=True, help="Epochs (each: as many samples as training paintings).")
    max_minutes: float | None = option(None, resumable=True, help="Time budget: the epochs and the learning-rate "
                                       "schedule are planned to fit it, from the measured speed.")
    optimizer: str = "adamw"  # adam | adamw
    lr: float = option(1e-3, help="Learning rate of the head and the artist classifier.")
    weight_decay: float = 1e-4
    schedule: str = "cosine-steps"  # cosine (by epoch) | cosine-steps (by step) | multistep
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.1
    triplet_margin: float = option(0.2, flag="--margin", shared=True, help=MARGIN_HELP)
    pair_margin: float = option(0.5, flag="--margin", shared=True, help=MARGIN_HELP)
    id_weight: float = option(0.0, help="Weight of an artist-classification loss (cosine classifier over the "
                              "training artists) beside the pair/triplet loss; 0: none.")
    class_scale: float = 16.0  # s of the cosine classifier's softmax
    class_margin: float = option(0.1, flag="--margin", shared=True, help=MARGIN_HELP)
    backbone_lr_scale: float = option(0.1, help="The backbone learns at --lr times this (pretrained: 0.1).")
    warmup: float = option(0.05, help="Share of the planned steps over which the learning rate rises from 0.")
    bn_eval: bool | None = option(None, flag="--bn-eval", off="--bn-train", help="Keep the backbone's BatchNorm "
                                  "statistics as pretrained (default: when pretrained and batches are under 64).")
    freeze_backbone: bool = option(False, help="Train the head only, on backbone features of fixed views computed "
                                   "once (needs --embedding-dim).")
    hflip: float = 0.5  # probability of a horizontal flip
    vflip: float = 0.0
    rotation: float = 0.0  # rotation drawn uniformly in [0, rotation] degrees
    translate: float = 0.0  # shift up to this fraction of the side
    zoom: float = 1.0  # fixed zoom of the affine transform (the reference: 1.2)
    seed: int = option(0, help="Random seed.")
    val_triplets: int = 5000
    device: str = option("auto", resumable=True, help="auto, cpu, cuda, cuda:N or mps.")
    compile: bool = option(False, resumable=True, help="torch.compile the network.")
    log_every: int = 20  # steps between host syncs for the progress bar

    def to_dict(self) -> dict:
        return asdict(self)

    def get(self, name: str):
        """A field of the recipe or of its network, by name."""
        return getattr(self._holder(name), name)

    def set(self, name: str, value) -> None:
        """Set a field of the recipe or of its network, by name."""
        setattr(self._holder(name), name, value)

    def _holder(self, name: str):
        if name in MODEL_FIELDS:
            return self.model
        if name == "model" or name not in {f.name for f in fields(self)}:
            raise InputError(f"unknown recipe field {name!r}")
        return self

    @property
    def images_per_step(self) -> int:
        """Images one step embeds: the batch's pairs or triplets (random sampler), or its P x K images."""
        per_sample = {"triplet": 3, "pair": 2}.get(self.mode, 1) if self.sampler == "random" else 1
        return max(1, self.batch_size * per_sample)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """The recipe a checkpoint or export stored; a field it predates takes its ``ABSENT`` meaning."""
        d = dict(d)
        model = dict(d["model"])
        if "view" in d:  # checkpoints before the geometry moved into the model's configuration
            model.setdefault("view", d.pop("view"))
        config = cls(model=ModelConfig(**model), **{f.name: d[f.name] for f in fields(cls) if f.name in d
                                                     and f.name != "model"})
        for name, value in ABSENT.items():
            if name not in (model if name in MODEL_FIELDS else d):
                config.set(name, value)
        return config


#: what a stored recipe written before these fields existed meant: off (a missing field else takes its default)
ABSENT = {"keep_pretrained": 0.0, "backbone_lr_scale": 1.0, "warmup": 0.0}

#: the options `pbn train` and ``api.training.train`` take, by parameter name (the mode's margins: one ``margin``)
OPTIONS = parameters(TrainConfig)


def margin_field(mode: str) -> str:
    """The field --margin sets in ``mode``."""
    return {"triplet": "triplet_margin", "pair": "pair_margin"}.get(mode, "class_margin")


def given_fields(mode: str | None, options: dict) -> dict:
    """Recipe fields from options given by parameter name (``OPTIONS``): ``margin`` is the mode's margin (``mode``
    None: the default mode's); an option given as None is left out."""
    out = {}
    for name, value in options.items():
        if value is not None:
            out[margin_field(mode or TrainConfig.mode) if name == "margin" else name] = value
    return out


def resumed(name: str, stored: TrainConfig, changes: dict) -> TrainConfig:
    """The stored recipe of run ``name`` with what ``--resume`` may change; any other option given must agree."""
    resumable = {d.name for d in declared(TrainConfig) if d.option.resumable}
    changes = dict(changes)
    if changes.get("mode") is None:  # --margin without --mode was read as the default mode's: it is the run's own
        own = margin_field(stored.mode)
        for key in [k for k in ("triplet_margin", "pair_margin", "class_margin") if k != own and k in changes]:
            changes[own] = changes.pop(key)
    config = TrainConfig.from_dict(stored.to_dict())
    for key, value in changes.items():
        if value is None:
            continue
        if key in resumable:
            config.set(key, value)
            continue
        before = stored.get(key)
        if before != value:
            flag = flag_of(TrainConfig, key)
            raise InputError(
                f"run {name} was trained with {flag} {before}; --resume continues it with its own recipe: "
                f"drop {flag} {value}, or train a new run"
            )
    return config


def check(c: TrainConfig) -> None:
    problems = []
    if c.mode not in MODES:
        problems.append(f"--mode must be one of {', '.join(MODES)}")
    if c.sampler not in SAMPLERS:
        problems.append(f"--sampler must be one of {', '.join(SAMPLERS)}")
    if c.miner not in MINERS:
        problems.append(f"--miner must be one of {', '.join(MINERS)}")
    if c.model.view not in VIEWS:
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
    elif c.model.keep_pretrained > 0 and not c.model.pretrained_weights:
        problems.append("--keep-pretrained keeps a pretrained backbone's features: give --pretrained or --weights, "
                        "or --keep-pretrained 0")
    elif c.model.keep_pretrained > 0 and c.freeze_backbone:
        problems.append("--keep-pretrained keeps an untouched copy beside a fine-tuned backbone; with "
                        "--freeze-backbone the backbone is untouched already: give --keep-pretrained 0")
    if problems:
        raise InputError("; ".join(problems))
