"""pbn serve: the local web page (compare, search, runs); its code lives in pbn_cli/web, imported only here."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from pbn_cli.cli.app import DEFAULT_WS, CheckpointOpt, DeviceOpt, EngineOpt, RunOpt, WorkspaceOpt, command, load_model
from pbn_cli.cli.app import workspace as workspace_

LOOPBACK = ("127.0.0.1", "localhost", "::1")
WEB_MODULES = ("fastapi", "uvicorn", "multipart")


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
    from pbn_cli.core.extras import require

    require("web", WEB_MODULES, "pbn serve")

    from pbn_cli.cli import console
    from pbn_cli.web.app import address, bind
    from pbn_cli.web.app import serve as run_server
    from pbn_cli.web.service import Service

    ws = None if model else workspace_(workspace)
    with console.progress("serve") as bar:
        trained, dev = load_model(model, ws, run, checkpoint, engine, device, bar)
    sock = bind(host, port)
    service = Service(trained, dev, ws)
    try:
        service.warm()
        if host not in LOOPBACK:
            console.err.print(f"[yellow]Warning:[/] listening on {host}: anyone who can reach this machine's port "
                              f"{sock.getsockname()[1]} can use the model", highlight=False)
        console.out.print(f"pbn serve: run {trained.name} ({trained.which}) on {address(sock)}  (Ctrl-C stops)")
        try:
            run_server(service, sock)
        except KeyboardInterrupt:  # uvicorn has shut down and passes Ctrl-C on: the stop asked for
            pass
        console.out.print("pbn serve: stopped")
    finally:
        sock.close()
        service.close()
