"""`pbn train` (its options map one to one onto the recipe's fields, model/recipe.py FLAGS) and `pbn backbones`."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer

from pbn_cli.cli.app import (
    DEFAULT_WS,
    GpuOpt,
    JsonOpt,
    WorkspaceOpt,
    command,
)
from pbn_cli.cli.app import workspace as workspace_


@command
def train(
    mode: Annotated[str, typer.Option(help="pair: contrastive loss on pairs; triplet: triplet loss; proxy: an artist classifier's loss alone (normalised softmax, additive margin).")] = "triplet",
    preset: Annotated[str, typer.Option(help="default (pretrained, GPU, full data), cpu (pretrained, fine-tuned on a CPU in minutes), quick (from scratch, CPU-sized; the demo's) or reference.")] = "default",
    run: Annotated[
        Optional[str], typer.Option("--run", "--run-name", help="Run name (default: mode-backbone-time); under torchrun write --run-name.")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue --run (or the latest run) from its last checkpoint.")] = False,
    backbone: Annotated[Optional[str], typer.Option(help="reference, compact, any torchvision classifier (resnet50, convnext_tiny, vit_b_16...) or timm:NAME; `pbn backbones` lists them.")] = None,
    input_size: Annotated[Optional[int], typer.Option(help="Side of the square views the network sees, px.")] = None,
    embedding_dim: Annotated[Optional[int], typer.Option(help="Embedding size (a linear head when it differs).")] = None,
    levels: Annotated[Optional[int], typer.Option(help="compact and timm backbones: also pool the last LEVELS-1 stages before the head (texture the last layer forgets); 1: the backbone's features alone.")] = None,
    keep_pretrained: Annotated[Optional[float], typer.Option(help="Pretrained backbones: the embedding also holds the features of an untouched copy of the pretrained network (centred on training paintings), weighted this beside the fine-tuned ones, so what ImageNet knew of artists never seen is kept (cpu and default: 1; 0: off). Embedding costs two forward passes.")] = None,
    normalize: Annotated[Optional[bool], typer.Option("--normalize/--no-normalize", help="L2-normalise embeddings.")] = None,
    pretrained: Annotated[Optional[bool], typer.Option("--pretrained/--no-pretrained", help="The backbone's default ImageNet weights (torchvision's or timm's cache, else downloaded).")] = None,
    weights: Annotated[Optional[str], typer.Option(help="A torchvision weights name (e.g. IMAGENET1K_SWAG_LINEAR_V1) or a .safetensors / state-dict file; input normalisation and size follow the weights.")] = None,
    sampler: Annotated[Optional[str], typer.Option(help="random (the reference's draw) or pk (P artists x K paintings).")] = None,
    miner: Annotated[Optional[str], typer.Option(help="pk only: all, semihard or batch-hard.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Per process: triplets/pairs (random) or images (pk).")] = None,
    paintings_per_artist: Annotated[Optional[int], typer.Option("--k", help="K of a P x K batch.")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Epochs (each: as many samples as training paintings).")] = None,
    max_minutes: Annotated[Optional[float], typer.Option(help="Time budget: the epochs and the learning-rate schedule are planned to fit it, from the measured speed.")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Learning rate of the head and the artist classifier.")] = None,
    backbone_lr_scale: Annotated[Optional[float], typer.Option(help="The backbone learns at --lr times this (pretrained: 0.1).")] = None,
    warmup: Annotated[Optional[float], typer.Option(help="Share of the planned steps over which the learning rate rises from 0.")] = None,
    margin: Annotated[Optional[float], typer.Option(help="Margin of the mode's loss (proxy: the additive cosine margin).")] = None,
    id_weight: Annotated[Optional[float], typer.Option(help="Weight of an artist-classification loss (cosine classifier over the training artists) beside the pair/triplet loss; 0: none.")] = None,
    bn_eval: Annotated[Optional[bool], typer.Option("--bn-eval/--bn-train", help="Keep the backbone's BatchNorm statistics as pretrained (default: when pretrained and batches are under 64).")] = None,
    freeze_backbone: Annotated[Optional[bool], typer.Option("--freeze-backbone/--no-freeze-backbone", help="Train the head only, on backbone features of fixed views computed once (needs --embedding-dim).")] = None,
    view: Annotated[Optional[str], typer.Option(help="crop: random crops at cache resolution; resize: whole painting shrunk; mixed: either (eval: the crops and the whole).")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed.")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = None,
    gpu: GpuOpt = False,
    compile: Annotated[Optional[bool], typer.Option("--compile/--no-compile", help="torch.compile the network.")] = None,
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
    from pbn_cli.cli import console
    from pbn_cli.model.recipe import FLAGS
    from pbn_cli.training.loop import train as run_training
    from pbn_cli.training.presets import resolve

    given = locals()
    overrides = {name: given[name] for name in FLAGS}  # each recipe field's option has the field's name
    if gpu:
        overrides["device"] = "cuda"
    if margin is not None:
        overrides[{"triplet": "triplet_margin", "pair": "pair_margin"}.get(mode, "class_margin")] = margin
    config = resolve(preset, mode, overrides)
    ws = workspace_(workspace)
    with console.progress("train", unit="steps") as bar:
        summary = run_training(ws, config, run_name=run, resume=resume, progress=bar,
                               resume_epochs=epochs if resume else None, changes=overrides)
    console.out.print(
        f"train: run {summary.run}: {summary.epochs} epochs ({summary.stopped}); best val triplet accuracy "
        f"{summary.best:.3f}; checkpoints in {ws.runs / summary.run / 'checkpoints'}"
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
    from pbn_cli.cli import console
    from pbn_cli.model.backbones import available

    found = {source: [n for n in names if not contains or contains.lower() in n.lower()]
             for source, names in available().items()}
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
