"""pbn serve: the local web page (compare, search, attribute, runs), through pbn.serve (pbn_cli/api/serving.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from pbn_cli.cli.app import DEFAULT_WS, CheckpointOpt, DeviceOpt, EngineOpt, RunOpt, WorkspaceOpt, command, load_model
from pbn_cli.cli.app import workspace as workspace_


@command
def serve(
    run: RunOpt = None,
    model: Annotated[Optional[Path], typer.Option(help="An exported model file instead of a workspace run (compare only).")] = None,
    checkpoint: CheckpointOpt = "best",
    host: Annotated[str, typer.Option(help="Address to listen on; only this machine can reach 127.0.0.1.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: any free one).")] = 8765,
    device: DeviceOpt = "auto",
    engine: EngineOpt = "auto",
    workspace: WorkspaceOpt = DEFAULT_WS,
) -> None:
    """A local web page over a trained run: compare two paintings, search the workspace, read the runs' reports.

    Loads the model once, prints the address, and serves until Ctrl-C.
    Drop two images to get the verdict, the probability, the distance on the
    run's val histogram and each image's nearest paintings; drop one to
    search. Uploads stay in memory (nothing is written to the workspace).
    Needs the web extra: pip install 'pbn[web]'.

    Example: pbn serve -w workspace, then open http://127.0.0.1:8765/
    """
    from pbn_cli.api import serve as bind
    from pbn_cli.api.serving import check
    from pbn_cli.cli import console

    check()  # the web extra, before the model is loaded
    ws = None if model else workspace_(workspace)
    with console.progress("serve") as bar:
        answerer = load_model(model, ws, run, checkpoint, engine, device, bar)
    with bind(answerer, host=host, port=port) as server:
        if server.public:
            console.err.print(f"[yellow]Warning:[/] listening on {host}: anyone who can reach this machine's port "
                              f"{server.port} can use the model", highlight=False)
        which = f" ({answerer.checkpoint})" if answerer.checkpoint else ""
        console.out.print(f"pbn serve: run {answerer.name}{which} on {server.address}  (Ctrl-C stops)")
        server.run()
        console.out.print("pbn serve: stopped")
