"""The `pbn` application: the Typer app, the options shared by commands, and error handling.

Each command (in the sibling modules, one per group) parses its options,
calls one library function, prints a summary, and turns a ``PbnError``
into one line and an exit code. Nothing heavy is imported here, so
`pbn --help` answers at once.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from pbn_cli.core.version import VERSION as __version__
from pbn_cli.core.errors import PbnError

app = typer.Typer(
    name="pbn",
    help=(
        "Learn painters' hands: were these two paintings made by the same artist?\n\n"
        "A staged pipeline on disk: each stage reads and writes Parquet manifests in a "
        "workspace folder (-w, default ./workspace or $PBN_WORKSPACE).\n\n"
        "\b\n"
        "  pbn ingest train_info.csv   CSV + image headers -> manifest\n"
        "  pbn clean                   drop what cannot be learned from\n"
        "  pbn split                   artist-disjoint train/val/test\n"
        "  pbn resize                  256x256 uint8 cache, decoded once\n"
        "  pbn train --gpu             Siamese network, pair or triplet mode\n"
        "  pbn eval                    metrics on unseen artists, report\n"
        "  pbn compare a.jpg b.jpg     same artist? distance, probability, verdict\n"
        "  pbn search a.jpg            the nearest paintings and their artists\n"
        "  pbn predict pairs.csv       probabilities for many pairs (a Kaggle submission)\n"
        "  pbn serve                   a local web page: compare, search, the runs' reports\n"
        "  pbn status                  what is done, what is stale\n\n"
        "Start with `pbn demo`: every stage on synthetic paintings in about 2 minutes on a CPU."
    ),
    no_args_is_help=True,
    add_completion=True,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

WorkspaceOpt = Annotated[
    Path,
    typer.Option(
        "--workspace", "-w", envvar="PBN_WORKSPACE", help="Workspace folder.", show_default=True
    ),
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Re-run even when up to date.")]
ImagesOpt = Annotated[
    Optional[Path],
    typer.Option("--images", help="Image folder, if it moved since ingest."),
]
WorkersOpt = Annotated[
    Optional[int], typer.Option("--workers", min=1, help="Processes to use (default: all cores).")
]
RunOpt = Annotated[Optional[str], typer.Option(help="Run to use (default: the latest trained run).")]
CheckpointOpt = Annotated[str, typer.Option(help="best, last, or start (a pretrained run before training).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")]
GpuOpt = Annotated[bool, typer.Option("--gpu", help="Short for --device cuda.")]
SheetOpt = Annotated[Optional[Path], typer.Option(help="Save a picture of the answer (PNG).")]
HalfOpt = Annotated[bool, typer.Option("--half", help="Embeddings stored in float16: half the disk and memory "
                                      "(docs/benchmarks.md says what it costs the figures).")]
EngineOpt = Annotated[str, typer.Option(
    "--engine", envvar="PBN_ENGINE",
    help="What embeds the paintings: onnx (onnxruntime on the CPU: 1.7-3.6x faster there and answers without "
         "loading PyTorch; a run's network is exported once, by its first eval; pip install 'pbn[onnx]'), torch "
         "(PyTorch, any device) or auto: onnx on the CPU when installed.")]
DEFAULT_WS = Path("workspace")


def _version(value: bool) -> None:
    if value:
        print(f"pbn {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """Learn painters' hands."""


def command(fn):
    """Register ``fn`` as a command that reports ``PbnError`` as one line."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except PbnError as e:
            from rich.markup import escape

            from pbn_cli.cli.console import err

            err.print(f"[red]Error:[/red] {escape(str(e))}", markup=True, highlight=False, soft_wrap=True)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            print("Interrupted.", file=sys.stderr)
            raise typer.Exit(130) from None

    return app.command()(wrapper)


def device_name(device: str, gpu: bool) -> str:
    """--gpu is short for --device cuda."""
    return "cuda" if gpu else device


def load_model(model: Path | None, ws, run: str | None, checkpoint: str, engine: str, device: str, progress=None):
    """The model that answers (pbn.load): an exported file (--model) or a workspace run, embedding with the engine
    that ``--engine`` and ``--device`` choose."""
    from pbn_cli.api import SILENT, load

    return load(model, workspace=ws, run=run, checkpoint=checkpoint, engine=engine, device=device,
                progress=progress or SILENT)


def workspace(path: Path):
    from pbn_cli.api import Workspace

    return Workspace(Path(path))


def print_stage(name: str, result) -> None:
    from rich.table import Table

    from pbn_cli.cli.console import out

    if result.skipped:
        out.print(f"{name}: up to date, nothing to do ({result.kept} rows; --force to redo)")
        return
    out.print(f"{name}: kept {result.kept} rows, rejected {result.rejected}")
    if result.reasons:
        table = Table("reason", "rows", title=f"{name}: rejected rows")
        for reason, n in sorted(result.reasons.items(), key=lambda kv: -kv[1]):
            table.add_row(reason, str(n))
        out.print(table)


def main() -> None:
    """The `pbn` entry point (pbn_cli.cli imports the command modules, which register themselves)."""
    app()
