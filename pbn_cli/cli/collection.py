"""Commands for a whole collection: embed (fill a run's embedding store, also under torchrun) and index."""

from __future__ import annotations

import json
from typing import Annotated

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
    load_model,
)
from pbn_cli.cli.app import workspace as workspace_


@command
def embed(
    run: RunOpt = None,
    checkpoint: CheckpointOpt = "best",
    half: HalfOpt = False,
    chunk: Annotated[int, typer.Option(min=1, help="Paintings per chunk file of the store: the most a killed pass loses.")] = 512,
    device: DeviceOpt = "auto",
    gpu: GpuOpt = False,
    engine: EngineOpt = "auto",
    workspace: WorkspaceOpt = DEFAULT_WS,
) -> None:
    """Embed every painting of the workspace that the run's embedding store lacks.

    Each painting is embedded once per model and kept in
    workspace/embeddings/ (search, attribute, eval and serve read it);
    paintings added later are the only ones embedded next time, and a killed
    pass resumes where it stopped. Several GPUs or nodes share the work
    under torchrun (rank 0 writes).

    Example: pbn embed -w workspace (several GPUs: torchrun --nproc_per_node=4 -m pbn_cli embed --gpu)
    """
    from pbn_cli.cli import console

    with console.progress("embed", unit="paintings") as bar:
        done = workspace_(workspace).embed(run=run, checkpoint=checkpoint, half=half, chunk=chunk,
                                           device=device_name(device, gpu), engine=engine, progress=bar)
    console.out.print(f"embed: run {done.run}: {done.embedded:,} paintings embedded now, {done.paintings:,} in the "
                      f"store, in {done.seconds:.1f} s on {done.world} process(es); {done.store}")


@command
def index(
    action: Annotated[str, typer.Argument(metavar="ACTION", help="status: every store and its index; build: build (or "
                                          "extend) the FAISS index of the run's store.")] = "status",
    run: RunOpt = None,
    checkpoint: CheckpointOpt = "best",
    half: HalfOpt = False,
    as_json: JsonOpt = False,
    device: DeviceOpt = "auto",
    engine: EngineOpt = "auto",
    workspace: WorkspaceOpt = DEFAULT_WS,
) -> None:
    """The embedding stores of the workspace and their vector indexes (FAISS: pip install 'pbn[faiss]').

    status lists each store: the model it comes from, paintings stored, its
    size, and its index (cells, nprobe, recall@10 against exact search).
    build makes the run's index now (search builds it when it is first
    needed: above a size, or with --index faiss).

    Example: pbn index status
    """
    from rich.table import Table

    from pbn_cli.cli import console
    from pbn_cli.core.errors import InputError

    ws = workspace_(workspace)
    if action == "build":
        with console.progress("index", unit="paintings") as bar:
            built = load_model(None, ws, run, checkpoint, engine, device, bar).build_index(half=half, progress=bar)
        console.out.print(f"index: {built.about['paintings']:,} paintings, {built.about['cells']:,} cells, nprobe "
                          f"{built.nprobe}, recall@10 {built.about['recall_at_10']:.3f} against exact search")
        return
    if action != "status":
        raise InputError(f"index: ACTION must be status or build, got {action!r}")
    found = ws.stores()
    if as_json:
        print(json.dumps(found, indent=2))
        return
    table = Table("store", "model", "stored", "of the workspace", "MB", "engine (chunks)", "index",
                  title=f"embedding stores of {ws.path}")
    for s in found:
        ix = s["index"]
        described = (f"{ix['paintings']:,} paintings, {ix['cells']} cells, nprobe {ix['nprobe']}, recall@10 "
                     f"{ix['recall_at_10']:.3f}") if ix else "none (exact search)"
        table.add_row(s["store"], s.get("model", ""), f"{s['stored']:,}", f"{s['of_the_workspace']:,} / {s['workspace']:,}",
                      f"{s['megabytes']:.1f}", ", ".join(f"{e} {n}" for e, n in sorted(s["engines"].items())), described)
    console.out.print(table if found else f"no embedding store in {ws.path} yet: `pbn embed`, `pbn eval` or `pbn search` fill one")
