"""Commands that measure: eval (a run or a baseline on unseen artists) and runs."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer

from pbn_cli.cli.app import (
    DEFAULT_WS,
    CheckpointOpt,
    DeviceOpt,
    EngineOpt,
    GpuOpt,
    HalfOpt,
    JsonOpt,
    RunOpt,
    WorkspaceOpt,
    command,
    device_name,
)
from pbn_cli.cli.app import workspace as workspace_


@command
def eval(
    run: RunOpt = None,
    split: Annotated[str, typer.Option(help="test (unseen artists), val or train.")] = "test",
    checkpoint: CheckpointOpt = "best",
    baseline: Annotated[
        Optional[str], typer.Option(help="Instead of a run: a descriptor that learns nothing (color-hist).")
    ] = None,
    triplets: Annotated[int, typer.Option(help="Seeded triplets for triplet accuracy.")] = 20_000,
    group_size: Annotated[int, typer.Option(help="Paintings per group for pair AUC (Kaggle: 1800).")] = 1800,
    seed: Annotated[int, typer.Option(help="Seed of triplets and groups.")] = 0,
    half: HalfOpt = False,
    device: DeviceOpt = "auto",
    gpu: GpuOpt = False,
    engine: EngineOpt = "auto",
    workspace: WorkspaceOpt = DEFAULT_WS,
) -> None:
    """Evaluate a run on artists it never saw: embeddings and metrics of docs/metrics.md.

    Writes runs/<run>/eval/<split>/embeddings.parquet and metrics.json
    (--baseline color-hist: baselines/color-hist/<split>/), and shows the
    colour-histogram baseline beside the run once it has been computed.
    It also fits what `pbn attribute` answers with and measures it three
    ways: among the workspace's trained hands, with new hands beside them
    (as attribute asks by default), and among unseen artists (report.md).

    Example: pbn eval --split test
    """
    from rich.table import Table

    from pbn_cli.cli import console
    from pbn_cli.api import FIGURES, evaluate

    with console.progress("eval: embedding", unit="paintings") as bar:
        result = evaluate(workspace_(workspace), run=run, split=split, checkpoint=checkpoint, baseline=baseline,
                          triplets=triplets, group_size=group_size, seed=seed, half=half,
                          device=device_name(device, gpu), engine=engine, progress=bar)
    m, base = result.metrics, result.baseline
    what = f"baseline {result.run}" if baseline else f"run {result.run}"
    table = Table("metric", what, title=f"{split}: {m['n_artists']} artists, {m['n_paintings']} paintings")
    if base:
        table.add_column("color-hist baseline")
    def cell(figures: dict, name: str) -> str:
        lo, hi = figures.get(f"{name}_ci", (float("nan"), float("nan")))
        return f"{figures[name]:.3f} [{lo:.3f}, {hi:.3f}]"

    for name, label, _ in FIGURES:
        table.add_row(label, cell(m, name), *([cell(base, name)] if base else []))
    console.out.print(table)
    console.out.print(
        f"figures [95% interval, bootstrap over artists]; {m['n_triplets']} triplets, {m['n_pairs']} pairs in "
        f"{m['n_groups']} groups, threshold {m['threshold']:.3f} (fitted on {m['calibration_fitted_on']})"
    )
    for line in _attribution_summary(m):
        console.out.print(line, highlight=False)
    if m.get("seconds"):
        console.out.print(f"time: {sum(m['seconds'].values()):.0f} s, " + ", ".join(
            f"{phase} {s:.0f} s" for phase, s in m["seconds"].items()) + "; report.md says what was embedded now",
            highlight=False)
    console.out.print(f"eval: wrote {result.folder}")


def _attribution_summary(m: dict) -> list[str]:
    """Who painted it, a line each: among the workspace's trained hands, with new hands beside them, and among
    unseen artists."""
    out = []
    if m.get("workspace_hands"):
        out.append(f"attribution among the workspace's {m['workspace_hands']} trained hands: top-1 "
                   f"{m['workspace_top1']:.3f}, named answers right {m['workspace_named_precision']:.3f} at "
                   f"{m['workspace_named_coverage']:.0%} named, p(top hand) off by {m['workspace_ece']:.3f}")
    if m.get("mixed_trained_hands"):
        out.append(f"with {m['mixed_new_hands']} new hands beside them: top-1 {m['mixed_top1_trained']:.3f} for "
                   f"trained hands' paintings, {m['mixed_top1_new']:.3f} for new hands'")
    if m.get("attribution_divisions"):
        out.append(f"attribution among unseen artists: top-1 {m['attribution_top1']:.3f} (raw "
                   f"{m['attribution_top1_raw']:.3f}), open-set AUROC "
                   f"{m['open_set_auroc']:.3f} (raw {m['open_set_auroc_raw']:.3f}), p(top hand) off by "
                   f"{m['attribution_ece']:.3f}; report.md has all three with intervals")
    return out


@command
def runs(
    workspace: WorkspaceOpt = DEFAULT_WS,
    as_json: JsonOpt = False,
) -> None:
    """List the workspace's training runs: recipe, epochs, validation and test figures.

    Example: pbn runs
    """
    from rich.table import Table

    from pbn_cli.cli import console

    rows = workspace_(workspace).runs().to_dict("records")
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        console.out.print(f"no trained run in {workspace}; train one with `pbn train`")
        return

    def num(x) -> str:
        return "" if x is None else f"{x:.3f}"

    table = Table("run", "mode", "backbone", "epochs", "best val triplet acc", "test triplet acc", "test pair AUC",
                  "test top-1 hand", "test open-set AUROC")
    for r in rows:
        table.add_row(r["run"], r["mode"] or "", r["backbone"] or "", str(r["epochs"]), num(r["best_val_triplet_accuracy"]),
                      num(r["test_triplet_accuracy"]), num(r["test_pair_auc"]), num(r["test_attribution_top1"]),
                      num(r["test_open_set_auroc"]))
    console.out.print(table)
    if any(r["tensorboard"] for r in rows):
        console.out.print(f"TensorBoard (training curves, the projector): tensorboard --logdir {workspace_(workspace).folder.runs}")
    for r in rows:
        if r["damaged"]:
            console.out.print(f"run {r['run']}: damaged, shown without them: {', '.join(r['damaged'])} "
                              f"(re-run `pbn eval --run {r['run']}` for metrics.json; config.json and history.parquet "
                              "are rewritten by `pbn train --resume`)")
