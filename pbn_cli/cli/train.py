"""`pbn train` (its options are generated from the recipe's declarations, model/recipe.py) and `pbn backbones`."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
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
from pbn_cli.core.options import declared
from pbn_cli.model.recipe import TrainConfig, margin_field

RunNameOpt = Annotated[Optional[str], typer.Option("--run", "--run-name", help="Run name (default: mode-backbone-time); "
                                                   "under torchrun write --run-name.")]
ResumeOpt = Annotated[bool, typer.Option(help="Continue --run (or the latest run) from its last checkpoint; options "
                                         "other than --epochs, --max-minutes, --device and --compile must agree "
                                         "with the run's recipe.")]


def _recipe_options() -> list[inspect.Parameter]:
    """One keyword option per declared recipe field (the mode's margins share --margin); None keeps the preset's."""
    params, seen = [], set()
    for d in declared(TrainConfig):
        name = d.flag.removeprefix("--").replace("-", "_") if d.option.shared else d.name
        if name in seen:
            continue
        seen.add(name)
        flags = f"{d.flag}/{d.option.off or '--no-' + d.flag[2:]}" if d.type is bool else d.flag
        annotation = Annotated[Optional[d.type], typer.Option(flags, help=d.option.help, show_default=False)]
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation))
    return params


def train(run: str | None, resume: bool, gpu: bool, workspace: Path, **given) -> None:
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
    from pbn_cli.core.runs import Run
    from pbn_cli.training.loop import train as run_training
    from pbn_cli.training.presets import resolve

    margin = given.pop("margin")
    mode = given["mode"] or "triplet"
    if margin is not None:
        given[margin_field(mode)] = margin
    if gpu:
        given["device"] = "cuda"
    config = resolve(given["preset"] or "default", mode, given)
    ws = workspace_(workspace)
    with console.progress("train", unit="steps") as bar:
        summary = run_training(ws, config, run_name=run, resume=resume, progress=bar, changes=given)
    console.out.print(
        f"train: run {summary.run}: {summary.epochs} epochs, {summary.steps} steps ({summary.stopped}); best val "
        f"triplet accuracy {summary.best:.3f}; checkpoints in {Run(ws.runs / summary.run).checkpoints}"
    )


train.__signature__ = inspect.Signature([
    inspect.Parameter("run", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=RunNameOpt),
    inspect.Parameter("resume", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=ResumeOpt),
    *_recipe_options(),
    inspect.Parameter("gpu", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=GpuOpt),
    inspect.Parameter("workspace", inspect.Parameter.KEYWORD_ONLY, default=DEFAULT_WS, annotation=WorkspaceOpt),
])
train.__annotations__ = {p.name: p.annotation for p in train.__signature__.parameters.values()}
command(train)


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
