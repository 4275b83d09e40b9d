"""The `pbn` command line: one short command per stage.

Each command parses its options, calls one library function, prints a
summary, and turns a ``PbnError`` into one line and an exit code.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from pbn_cli import __version__
from pbn_cli.errors import PbnError

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
        "  pbn status                  what is done, what is stale\n\n"
        "Start with `pbn demo`: every stage on synthetic paintings in about 4 minutes on a CPU."
    ),
    no_args_is_help=True,
    add_completion=False,
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
CheckpointOpt = Annotated[str, typer.Option(help="best or last.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")]
SheetOpt = Annotated[Optional[Path], typer.Option(help="Save a picture of the answer (PNG).")]
DEFAULT_WS = Path("workspace")
METRIC_NAMES = (
    "triplet_accuracy", "reference_batch4_accuracy", "pair_auc", "precision_at_1", "map_at_r",
    "verification_accuracy", "eer",
)


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
            from pbn_cli.console import err

            err.print(f"[red]Error:[/red] {e}", markup=True, highlight=False, soft_wrap=True)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            print("Interrupted.", file=sys.stderr)
            raise typer.Exit(130) from None

    return app.command()(wrapper)


def _workspace(path: Path):
    from pbn_cli.workspace import Workspace

    return Workspace(Path(path))


def _print_stage(name: str, result) -> None:
    from rich.table import Table

    from pbn_cli.console import out

    if result.skipped:
        out.print(f"{name}: up to date, nothing to do ({result.kept} rows; --force to redo)")
        return
    out.print(f"{name}: kept {result.kept} rows, rejected {result.rejected}")
    if result.reasons:
        table = Table("reason", "rows", title=f"{name}: rejected rows")
        for reason, n in sorted(result.reasons.items(), key=lambda kv: -kv[1]):
            table.add_row(reason, str(n))
        out.print(table)


@command
def synth(
    out: Annotated[Path, typer.Argument(metavar="OUT", help="Folder to create the set in.", show_default=False)],
    artists: Annotated[int, typer.Option(help="Number of artists.")] = 40,
    paintings: Annotated[int, typer.Option(help="Paintings per artist.")] = 12,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    quirks: Annotated[bool, typer.Option(help="Add the odd files real dumps contain.")] = False,
    min_size: Annotated[int, typer.Option(help="Smallest longer side, px.")] = 300,
    max_size: Annotated[int, typer.Option(help="Largest longer side, px.")] = 1600,
    workers: WorkersOpt = None,
) -> None:
    """Make a synthetic painting set in Kaggle's layout (OUT/train/, OUT/train_info.csv).

    Each artist is a "hand" (stroke kind, size, orientation, density, texture,
    colour habits); composition and hue change per painting.

    Example: pbn synth data --artists 40 --paintings 12 --quirks
    """
    from pbn_cli import console
    from pbn_cli.synth import synth as run

    with console.progress("synth", unit="paintings") as bar:
        info = run(out, artists, paintings, seed, quirks, min_size, max_size, workers, *console.callbacks(bar))
    console.out.print(
        f"synth: {info['paintings']} paintings by {info['artists']} artists in {info['images']}; "
        f"{info['rows']} CSV rows in {out / 'train_info.csv'}"
    )


@command
def ingest(
    csv: Annotated[Path, typer.Argument(metavar="CSV", help="train_info.csv, all_data_info.csv or your own CSV.", show_default=False)],
    images: Annotated[
        Optional[Path], typer.Option(help="Image folder (default: train/ beside the CSV).")
    ] = None,
    filename_column: Annotated[Optional[str], typer.Option(help="Column with the file names.")] = None,
    artist_column: Annotated[Optional[str], typer.Option(help="Column with the artists.")] = None,
    workspace: WorkspaceOpt = DEFAULT_WS,
    force: ForceOpt = False,
    workers: WorkersOpt = None,
) -> None:
    """Read a paintings CSV and each image's header into manifests/ingest.parquet.

    Kaggle's train_info.csv (images in train/ beside it), all_data_info.csv
    (images in train/ or test/ by in_train), or any CSV with a filename and an
    artist column. Rows that cannot be paintings go to ingest.rejected.parquet
    with a reason.

    Example: pbn ingest ~/kaggle/train_info.csv --images ~/kaggle/train
    """
    from pbn_cli import console
    from pbn_cli.stages.ingest import ingest as run

    ws = _workspace(workspace)
    with ws.data_lock(), console.progress("ingest: reading headers", unit="images") as bar:
        result = run(ws, csv, images, filename_column, artist_column, force, workers, *console.callbacks(bar))
    _print_stage("ingest", result)


@command
def clean(
    min_paintings: Annotated[int, typer.Option(min=1, help="Drop artists with fewer paintings.")] = 2,
    images: ImagesOpt = None,
    workspace: WorkspaceOpt = DEFAULT_WS,
    force: ForceOpt = False,
) -> None:
    """Drop what cannot be learned from: exact duplicate files and artists with too few paintings.

    Duplicates (same bytes) are kept once when they share an artist and all
    dropped when their artists disagree. Writes manifests/clean.parquet.

    Example: pbn clean --min-paintings 2
    """
    from pbn_cli import console
    from pbn_cli.stages.clean import clean as run

    ws = _workspace(workspace)
    with ws.data_lock():
        result = run(ws, min_paintings, force, images)
    _print_stage("clean", result)


@command
def split(
    test_artists: Annotated[float, typer.Option(help="Fraction of artists held out for test.")] = 0.2,
    val_fraction: Annotated[float, typer.Option(help="Fraction of training paintings held out for val.")] = 0.1,
    val_artists: Annotated[
        Optional[float],
        typer.Option(help="Instead: hold out this fraction of training artists whole as val."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the artist and painting hashes.")] = 0,
    workspace: WorkspaceOpt = DEFAULT_WS,
    force: ForceOpt = False,
) -> None:
    """Split by artist: test artists never appear in train or val.

    An artist's split is fixed by a seeded hash of its name, so adding artists
    never moves existing ones. --val-artists gives an artist-disjoint val,
    better for choosing models meant for unseen artists.

    Example: pbn split --test-artists 0.2 --val-fraction 0.1
    """
    from rich.table import Table

    from pbn_cli import console
    from pbn_cli.stages.split import split as run

    ws = _workspace(workspace)
    with ws.data_lock():
        result = run(ws, test_artists, val_fraction, val_artists, seed, force)
    if result.skipped:
        console.out.print(f"split: up to date, nothing to do ({result.kept} rows; --force to redo)")
    table = Table("split", "artists", "paintings", title="split")
    for name, c in result.summary.items():
        table.add_row(name, str(c["artists"]), str(c["paintings"]))
    console.out.print(table)


@command
def resize(
    size: Annotated[int, typer.Option(help="Side of the cached square paintings, px.")] = 256,
    fit: Annotated[str, typer.Option(help="crop: centre crop (the reference's); pad: letterbox.")] = "crop",
    max_pixels: Annotated[
        int, typer.Option(help="Refuse non-JPEG images larger than this many pixels.")
    ] = 500_000_000,
    images: ImagesOpt = None,
    workspace: WorkspaceOpt = DEFAULT_WS,
    force: ForceOpt = False,
    workers: WorkersOpt = None,
) -> None:
    """Decode every clean painting once into cache/images_256.npy (N, 256, 256, 3) uint8.

    Shorter side to --size, then a centre crop (or --fit pad), antialiased.
    Resumable: kill it and run it again. Incremental: new paintings get new
    rows. Also writes cache/preview.png (a contact sheet to look at) and
    reports groups of near-identical paintings.

    Example: pbn resize --workers 8
    """
    from pbn_cli import console
    from pbn_cli.stages.resize import resize as run

    ws = _workspace(workspace)
    with ws.data_lock(), console.progress("resize", unit="paintings") as bar:
        result = run(ws, size, fit, workers, max_pixels, force, images, *console.callbacks(bar))
    _print_stage("resize", result)
    s = result.summary
    if s and not result.skipped:
        straddle = s.get("straddling_splits")
        where = "" if straddle is None else f", {straddle} straddling splits (they inflate test scores)"
        console.out.print(
            f"resize: {s['near_duplicate_groups']} groups of near-identical paintings "
            f"({s['near_duplicate_paintings']} paintings){where}; cache in {ws.cache}, "
            f"preview {ws.cache / 'preview.png'}"
        )


@command
def train(
    mode: Annotated[str, typer.Option(help="pair: contrastive loss on pairs; triplet: triplet loss.")] = "triplet",
    preset: Annotated[str, typer.Option(help="default (GPU, full data), quick (CPU-sized) or reference.")] = "default",
    run: Annotated[
        Optional[str], typer.Option("--run", "--run-name", help="Run name (default: mode-backbone-time); under torchrun write --run-name.")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue --run (or the latest run) from its last checkpoint.")] = False,
    backbone: Annotated[Optional[str], typer.Option(help="reference, compact, resnet18, resnet34 or resnet50.")] = None,
    input_size: Annotated[Optional[int], typer.Option(help="Side of the square views the network sees, px.")] = None,
    embedding_dim: Annotated[Optional[int], typer.Option(help="Embedding size (a linear head when it differs).")] = None,
    normalize: Annotated[Optional[bool], typer.Option("--normalize/--no-normalize", help="L2-normalise embeddings.")] = None,
    pretrained: Annotated[Optional[bool], typer.Option("--pretrained/--no-pretrained", help="torchvision ImageNet weights.")] = None,
    sampler: Annotated[Optional[str], typer.Option(help="random (the reference's draw) or pk (P artists x K paintings).")] = None,
    miner: Annotated[Optional[str], typer.Option(help="pk only: all, semihard or batch-hard.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Per process: triplets/pairs (random) or images (pk).")] = None,
    paintings_per_artist: Annotated[Optional[int], typer.Option("--k", help="K of a P x K batch.")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Epochs (each: as many samples as training paintings).")] = None,
    max_minutes: Annotated[Optional[float], typer.Option(help="Stop after the epoch that passes this budget.")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Learning rate.")] = None,
    margin: Annotated[Optional[float], typer.Option(help="Margin of the mode's loss.")] = None,
    view: Annotated[Optional[str], typer.Option(help="crop: random crops at cache resolution; resize: whole painting shrunk.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed.")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = None,
    gpu: Annotated[bool, typer.Option("--gpu", help="Short for --device cuda.")] = False,
    compile_model: Annotated[Optional[bool], typer.Option("--compile/--no-compile", help="torch.compile the network.")] = None,
    workspace: WorkspaceOpt = DEFAULT_WS,
) -> None:
    """Train a Siamese network on the train split; validate on val every epoch.

    One network embeds every branch's images in one batched forward, so the
    2 (pair) or 3 (triplet) branches share weights. Writes runs/<run>/:
    config.json, checkpoints/last.pt and best.pt, history.parquet, curves.png.
    Ctrl-C saves and stops; --resume continues. Several GPUs:
    torchrun --nproc_per_node=N -m pbn_cli train ...

    Example: pbn train --mode triplet --preset quick
    """
    from pbn_cli import console
    from pbn_cli.training.config import resolve
    from pbn_cli.training.loop import train as run_training

    overrides = dict(
        backbone=backbone, input_size=input_size, embedding_dim=embedding_dim, normalize=normalize,
        pretrained=pretrained, sampler=sampler, miner=miner, batch_size=batch_size,
        paintings_per_artist=paintings_per_artist, epochs=epochs, max_minutes=max_minutes, lr=lr,
        view=view, seed=seed, device="cuda" if gpu else device, compile=compile_model,
    )
    if margin is not None:
        overrides["triplet_margin" if mode == "triplet" else "pair_margin"] = margin
    config = resolve(preset, mode, overrides)
    ws = _workspace(workspace)
    with console.progress("train", unit="steps") as bar:
        summary = run_training(ws, config, run, resume, console.TrainReporter(bar), resume_epochs=epochs if resume else None,
                               changes=overrides)
    console.out.print(
        f"train: run {summary.run}: {summary.epochs} epochs ({summary.stopped}); best val triplet accuracy "
        f"{summary.best:.3f}; checkpoints in {ws.runs / summary.run / 'checkpoints'}"
    )


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
    device: DeviceOpt = "auto",
    gpu: Annotated[bool, typer.Option("--gpu", help="Short for --device cuda.")] = False,
    workspace: WorkspaceOpt = DEFAULT_WS,
) -> None:
    """Evaluate a run on artists it never saw: embeddings and metrics of docs/metrics.md.

    Writes runs/<run>/eval/<split>/embeddings.parquet and metrics.json
    (--baseline color-hist: baselines/color-hist/<split>/), and shows the
    colour-histogram baseline beside the run once it has been computed.

    Example: pbn eval --split test
    """
    from rich.table import Table

    from pbn_cli import console
    from pbn_cli.evaluation.evaluate import baseline_metrics, evaluate, evaluate_baseline

    ws = _workspace(workspace)
    with console.progress("eval: embedding", unit="paintings") as bar:
        if baseline:
            result = evaluate_baseline(ws, baseline, split, seed, triplets, group_size, *console.callbacks(bar))
        else:
            result = evaluate(ws, run, split, checkpoint, "cuda" if gpu else device, seed, triplets, group_size, *console.callbacks(bar))
    m = result.metrics
    base = None if baseline else baseline_metrics(ws, split)
    what = f"baseline {result.run}" if baseline else f"run {result.run}"
    table = Table("metric", what, title=f"{split}: {m['n_artists']} artists, {m['n_paintings']} paintings")
    if base:
        table.add_column("color-hist baseline")
    def cell(figures: dict, name: str) -> str:
        lo, hi = figures.get(f"{name}_ci", (float("nan"), float("nan")))
        return f"{figures[name]:.3f} [{lo:.3f}, {hi:.3f}]"

    for name in METRIC_NAMES:
        label = name + (" (inflated, for comparison)" if name.startswith("reference") else "")
        table.add_row(label, cell(m, name), *([cell(base, name)] if base else []))
    console.out.print(table)
    console.out.print(
        f"figures [95% interval, bootstrap over artists]; {m['n_triplets']} triplets, {m['n_pairs']} pairs in "
        f"{m['n_groups']} groups, threshold {m['threshold']:.3f} (fitted on {m['calibration_fitted_on']})"
    )
    console.out.print(f"eval: wrote {result.folder}")


@command
def compare(
    a: Annotated[Path, typer.Argument(metavar="A", help="A painting (any format, size or orientation).", show_default=False)],
    b: Annotated[Path, typer.Argument(metavar="B", help="Another painting.", show_default=False)],
    run: RunOpt = None,
    model: Annotated[Optional[Path], typer.Option(help="An exported model file instead of a workspace run.")] = None,
    checkpoint: CheckpointOpt = "best",
    as_json: JsonOpt = False,
    sheet: SheetOpt = None,
    device: DeviceOpt = "auto",
    workspace: WorkspaceOpt = DEFAULT_WS,
) -> None:
    """Were these two paintings made by the same artist? Distance, probability, verdict.

    Uses the run's calibration (fitted by `pbn eval`): the distance threshold
    and the probability of the same artist at even odds.

    Example: pbn compare a.jpg b.png --json
    """
    from pbn_cli.inference import model as models
    from pbn_cli.inference.compare import compare as run_compare
    from pbn_cli.inference.compare import verdict_sheet
    from pbn_cli.training.loop import select_device

    trained = models.from_file(model) if model else models.from_run(_workspace(workspace), run, checkpoint)
    for path in (a, b):
        if not path.is_file():
            from pbn_cli.errors import InputError

            raise InputError(f"{path} does not exist")
    verdict = run_compare(trained, a, b, select_device(device))
    if sheet:
        verdict_sheet(trained, a, b, verdict, sheet)
    if as_json:
        print(json.dumps(verdict.to_dict()))
        return
    from rich.panel import Panel

    from pbn_cli import console

    word = "[green]same artist[/]" if verdict.same_artist else "[red]different artists[/]"
    console.out.print(Panel(
        f"{word}\nprobability of the same artist: {verdict.same_artist_probability:.2f}\n"
        f"distance {verdict.distance:.3f} (threshold {verdict.threshold:.3f})\nrun {verdict.run}",
        title=f"{a.name} vs {b.name}", expand=False,
    ))


@command
def search(
    image: Annotated[Path, typer.Argument(metavar="IMAGE", help="The painting to look up.", show_default=False)],
    k: Annotated[int, typer.Option("-k", help="How many neighbours.")] = 10,
    split: Annotated[str, typer.Option(help="Where to look: all, train, val or test.")] = "all",
    run: RunOpt = None,
    checkpoint: CheckpointOpt = "best",
    as_json: JsonOpt = False,
    sheet: SheetOpt = None,
    device: DeviceOpt = "auto",
    workspace: WorkspaceOpt = DEFAULT_WS,
) -> None:
    """The workspace's paintings nearest to IMAGE, and the vote of their artists.

    The workspace's embeddings are computed once per run and checkpoint and
    reused. The query itself is left out when it is one of the paintings.

    Example: pbn search painting.jpg -k 10 --split train
    """
    from rich.table import Table

    from pbn_cli import console
    from pbn_cli.inference import model as models
    from pbn_cli.inference.search import search as run_search
    from pbn_cli.inference.search import search_sheet
    from pbn_cli.training.loop import select_device

    ws = _workspace(workspace)
    trained = models.from_run(ws, run, checkpoint)
    result = run_search(ws, trained, checkpoint, image, k, split, select_device(device))
    if sheet:
        search_sheet(ws, trained, image, result, sheet)
    near = result.neighbours.drop(columns=["cache_row"])
    if as_json:
        print(json.dumps({"run": trained.name, "neighbours": near.to_dict("records"), "vote": result.vote}))
        return
    table = Table("image_id", "artist", "split", "distance", "p(same artist)", title=f"nearest to {image.name} (run {trained.name})")
    for r in near.itertuples():
        table.add_row(str(r.image_id), r.artist, r.split, f"{r.distance:.3f}", f"{r.same_artist_probability:.2f}")
    console.out.print(table)
    console.out.print("vote: " + ", ".join(f"{artist} {n}" for artist, n in result.vote))


@command
def predict(
    pairs_csv: Annotated[Path, typer.Argument(metavar="PAIRS_CSV", help="index,image1,image2 per row (Kaggle's submission_info.csv).", show_default=False)],
    images: Annotated[Path, typer.Option(help="Folder the image names are relative to (Kaggle: test/).", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="The submission file to write.")] = Path("submission.csv"),
    missing: Annotated[str, typer.Option(help="error: stop on a missing or unreadable image; fill: give its pairs 0.5.")] = "error",
    run: RunOpt = None,
    model: Annotated[Optional[Path], typer.Option(help="An exported model file instead of a workspace run (no embedding cache).")] = None,
    checkpoint: CheckpointOpt = "best",
    device: DeviceOpt = "auto",
    gpu: Annotated[bool, typer.Option("--gpu", help="Short for --device cuda.")] = False,
    workers: WorkersOpt = None,
    workspace: WorkspaceOpt = DEFAULT_WS,
) -> None:
    """Same-artist probabilities for every pair of a CSV: a Kaggle submission.

    Reads PAIRS_CSV by position (index, image1, image2; a header is skipped),
    embeds each distinct image once (cached in the run, so a second predict
    only scores), and writes index,sameArtist with the run's calibrated
    probabilities, rows in the input order. The file appears only when
    complete.

    Example: pbn predict submission_info.csv --images kaggle/test -o submission.csv --gpu
    """
    from pbn_cli import console
    from pbn_cli.inference import model as models
    from pbn_cli.inference.predict import predict as run_predict
    from pbn_cli.inference.predict import run_cache
    from pbn_cli.training.loop import select_device

    if model:
        trained, cache = models.from_file(model), None
    else:
        ws = _workspace(workspace)
        trained = models.from_run(ws, run, checkpoint)
        cache = run_cache(ws, trained, checkpoint)
    result = run_predict(trained, pairs_csv, images, output, select_device("cuda" if gpu else device), missing,
                         cache, workers, console.progress)
    console.out.print(
        f"predict: {result.rows:,} pairs over {result.images:,} images ({result.computed:,} embedded now, "
        f"{result.cached:,} from the cache) with run {trained.name}; wrote {result.output}"
    )
    if result.filled_images:
        console.out.print(f"predict: {result.filled_images} images missing or unreadable; {result.filled_pairs:,} pairs set to 0.5")
    console.out.print(
        f"predict: embedding {result.embed_seconds:.1f} s; reading {result.read_seconds:.1f} s and scoring "
        f"{result.score_seconds:.1f} s = {result.pairs_per_second / 1e6:.2f} M pairs/s"
    )


@command
def export(
    run: Annotated[str, typer.Argument(metavar="RUN", help="The run to export.", show_default=False)],
    file: Annotated[Path, typer.Argument(metavar="FILE", help="The model file to write.", show_default=False)],
    checkpoint: CheckpointOpt = "best",
    workspace: WorkspaceOpt = DEFAULT_WS,
) -> None:
    """Write one file with a run's weights, configuration and calibration.

    `pbn compare --model FILE` then works on a machine without the
    workspace. The file holds plain data only (loaded with weights_only).

    Example: pbn export triplet-compact-20261129-120000 painter.pt
    """
    from pbn_cli import console
    from pbn_cli.inference import model as models

    trained = models.from_run(_workspace(workspace), run, checkpoint)
    models.export(trained, file)
    console.out.print(f"export: run {trained.name} ({checkpoint}) written to {file}")


@command
def runs(
    workspace: WorkspaceOpt = DEFAULT_WS,
    as_json: JsonOpt = False,
) -> None:
    """List the workspace's training runs: recipe, epochs, validation and test figures.

    Example: pbn runs
    """
    from rich.table import Table

    from pbn_cli import console
    from pbn_cli.runs import summarize, trained_runs

    rows = [summarize(r) for r in trained_runs(_workspace(workspace))]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        console.out.print(f"no trained run in {workspace}; train one with `pbn train`")
        return

    def num(x) -> str:
        return "" if x is None else f"{x:.3f}"

    table = Table("run", "mode", "backbone", "epochs", "best val triplet acc", "test triplet acc", "test pair AUC")
    for r in rows:
        table.add_row(r["run"], r["mode"] or "", r["backbone"] or "", str(r["epochs"]), num(r["best_val_triplet_accuracy"]),
                      num(r["test_triplet_accuracy"]), num(r["test_pair_auc"]))
    console.out.print(table)
    for r in rows:
        if r["damaged"]:
            console.out.print(f"run {r['run']}: damaged, shown without them: {', '.join(r['damaged'])} "
                              f"(re-run `pbn eval --run {r['run']}` for metrics.json; config.json and history.parquet "
                              "are rewritten by `pbn train --resume`)")


@command
def demo(
    folder: Annotated[Path, typer.Argument(metavar="DIR", help="Folder for the data, the workspace and the pictures.")] = Path("pbn-demo"),
    artists: Annotated[int, typer.Option(help="Synthetic artists.")] = 40,
    paintings: Annotated[int, typer.Option(help="Paintings per artist.")] = 12,
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 20,
    device: DeviceOpt = "auto",
    seed: Annotated[int, typer.Option(help="Seed of the paintings, the split and the training.")] = 0,
) -> None:
    """The whole pipeline on synthetic paintings, in about 4 minutes on a laptop CPU.

    synth -> ingest -> clean -> split -> resize -> train (quick preset) ->
    eval beside the colour baseline -> compare -> search, printing each
    command as it runs. Run it again to skip what is done.

    Example: pbn demo pbn-demo
    """
    from pbn_cli.demo import demo as run_demo

    run_demo(folder, artists, paintings, epochs, device, seed)


@command
def status(
    workspace: WorkspaceOpt = DEFAULT_WS,
    as_json: JsonOpt = False,
) -> None:
    """Show which stages are done, their row counts, and which are stale.

    A stage is stale when a stage it reads from was re-run after it.

    Example: pbn status -w workspace
    """
    from rich.table import Table

    from pbn_cli import console
    from pbn_cli.status import workspace_status

    rows = workspace_status(_workspace(workspace))
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("stage", "done", "rows", "rejected", "when", "state", title=f"workspace {workspace}")
    for r in rows:
        state = {"up to date": "[green]up to date[/]", "stale": f"[yellow]stale[/] ({r['why']})", "not run": "[dim]not run[/]",
                 "damaged": "[red]damaged[/] (below)"}[r["state"]]
        table.add_row(r["stage"], "yes" if r["done"] else "no", str(r["rows"] or ""), str(r["rejected"] or ""), (r["when"] or "")[:16], state)
    console.out.print(table)
    for r in rows:
        if r["notes"]:
            console.out.print(f"{r['stage']}: {r['notes']}")
        if r["state"] == "damaged":
            console.out.print(f"[red]{r['stage']} damaged:[/] {r['why']}", markup=True)


def main() -> None:
    app()
