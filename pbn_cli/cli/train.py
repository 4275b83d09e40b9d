"""`pbn train` and `pbn backbones`, thin over pbn_cli.api.training.

Each recipe option is a parameter of `train`, its flag and help built by
name from its one declaration (networks/recipe.py: ``OPTIONS``); a test
checks that every declared option has exactly one parameter, of its field's
type. An option not given is None: the preset's value stands.
"""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer

from pbn_cli.api.training import KEYWORDS, OPTIONS
from pbn_cli.cli.app import (
    DEFAULT_WS,
    GpuOpt,
    JsonOpt,
    WorkspaceOpt,
    command,
)
from pbn_cli.cli.app import workspace as workspace_

RunNameOpt = Annotated[Optional[str], typer.Option("--run", "--run-name", help="Run name (default: mode-backbone-time); "
                                                   "under torchrun write --run-name.")]
ResumeOpt = Annotated[bool, typer.Option(help="Continue --run (or the latest run) from its last checkpoint; options "
                                         "other than --epochs, --max-minutes, --device and --compile must agree "
                                         "with the run's recipe.")]


def recipe(name: str):
    """The option of recipe parameter ``name``, as its field declares it (flag, help; a switch's two flags)."""
    d = OPTIONS[name]
    flags = f"{d.flag}/{d.option.off or '--no-' + d.flag[2:]}" if d.type is bool else d.flag
    return typer.Option(flags, help=d.option.help, show_default=False)


@command
def train(
    run: RunNameOpt = None,
    resume: ResumeOpt = False,
    mode: Annotated[Optional[str], recipe("mode")] = None,
    preset: Annotated[Optional[str], recipe("preset")] = None,
    backbone: Annotated[Optional[str], recipe("backbone")] = None,
    input_size: Annotated[Optional[int], recipe("input_size")] = None,
    embedding_dim: Annotated[Optional[int], recipe("embedding_dim")] = None,
    normalize: Annotated[Optional[bool], recipe("normalize")] = None,
    pretrained: Annotated[Optional[bool], recipe("pretrained")] = None,
    weights: Annotated[Optional[str], recipe("weights")] = None,
    levels: Annotated[Optional[int], recipe("levels")] = None,
    keep_pretrained: Annotated[Optional[float], recipe("keep_pretrained")] = None,
    view: Annotated[Optional[str], recipe("view")] = None,
    sampler: Annotated[Optional[str], recipe("sampler")] = None,
    miner: Annotated[Optional[str], recipe("miner")] = None,
    batch_size: Annotated[Optional[int], recipe("batch_size")] = None,
    paintings_per_artist: Annotated[Optional[int], recipe("paintings_per_artist")] = None,
    epochs: Annotated[Optional[int], recipe("epochs")] = None,
    max_minutes: Annotated[Optional[float], recipe("max_minutes")] = None,
    lr: Annotated[Optional[float], recipe("lr")] = None,
    margin: Annotated[Optional[float], recipe("margin")] = None,
    id_weight: Annotated[Optional[float], recipe("id_weight")] = None,
    backbone_lr_scale: Annotated[Optional[float], recipe("backbone_lr_scale")] = None,
    warmup: Annotated[Optional[float], recipe("warmup")] = None,
    bn_eval: Annotated[Optional[bool], recipe("bn_eval")] = None,
    freeze_backbone: Annotated[Optional[bool], recipe("freeze_backbone")] = None,
    seed: Annotated[Optional[int], recipe("seed")] = None,
    device: Annotated[Optional[str], recipe("device")] = None,
    compile: Annotated[Optional[bool], recipe("compile")] = None,
    gpu: GpuOpt = False,
    workspace: WorkspaceOpt = DEFAULT_WS,
) -> None:
    """Train a Siamese network on the train split; validate on val every epoch.

    One network embeds every branch's images in one batched forward, so the
    2 (pair) or 3 (triplet) branches share weights. Writes runs/<run>/:
    config.json, checkpoints/last.pt and best.pt, history.parquet, curves.png.
    Ctrl-C saves and stops; --resume continues. Several GPUs:
    torchrun --nproc_per_node=N -m pbn_cli train ...

    Example: pbn train --preset cpu --max-minutes 15 (a pretrained backbone
    fine-tuned on a CPU; add --weights FILE offline). From scratch, the
    demo's recipe: pbn train --preset quick
    """
    given = dict(locals())  # every parameter as typed; the recipe's options among them
    options = {name: given[name] for name in KEYWORDS}
    from pbn_cli.api.training import train as train_
    from pbn_cli.cli import console
    from pbn_cli.core.runs import Run

    ws = workspace_(workspace)
    with console.progress("train", unit="steps") as bar:
        summary = train_(ws, preset=preset, mode=mode, run=run, resume=resume, gpu=gpu, progress=bar, **options)
    console.out.print(
        f"train: run {summary.run}: {summary.epochs} epochs, {summary.steps} steps ({summary.stopped}); best val "
        f"triplet accuracy {summary.best:.3f}; checkpoints in {Run(summary.folder).checkpoints}"
    )


@command
def backbones(
    contains: Annotated[Optional[str], typer.Argument(metavar="TEXT", help="Only names containing TEXT.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List the backbones `pbn train --backbone` accepts: pbn's own, torchvision's classifiers, timm's models.

    timm's appear when the extra is installed (pip install 'pbn[timm]').
    Pretrained weights: --pretrained (the default ImageNet checkpoint) or
    --weights NAME|FILE.

    Example: pbn backbones convnext
    """
    from pbn_cli.api.training import backbones as listed
    from pbn_cli.cli import console

    found = listed(contains)
    if as_json:
        print(json.dumps(found, indent=2))
        return
    for source, names in found.items():
        if source == "timm" and not names and not contains:
            console.out.print("timm: not installed; pip install 'pbn[timm]' for its models (as timm:NAME)")
            continue
        if not names:
            continue
        console.out.print(f"{source} ({len(names)}): " + ", ".join(names))
