"""Commands that prepare data: synth, ingest, clean, split, resize, status."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from pbn_cli.cli.app import (
    DEFAULT_WS,
    ForceOpt,
    ImagesOpt,
    JsonOpt,
    WorkersOpt,
    WorkspaceOpt,
    command,
    print_stage,
)
from pbn_cli.cli.app import workspace as workspace_


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
    from pbn_cli.cli import console
    from pbn_cli.api import synth as run

    with console.progress("synth", unit="paintings") as bar:
        info = run(out, artists=artists, paintings=paintings, seed=seed, quirks=quirks, min_size=min_size,
                   max_size=max_size, workers=workers, progress=bar)
    console.out.print(
        f"synth: {info['paintings']} paintings by {info['artists']} artists in {info['images']}; "
        f"{info['rows']} CSV rows in {out / 'train_info.csv'}"
    )


@command
def ingest(
    source: Annotated[Path, typer.Argument(metavar="SOURCE", help="A paintings CSV, a folder of artist folders, or a "
                                           "Parquet table (a file or a folder of shards).", show_default=False)],
    images: Annotated[
        Optional[Path], typer.Option(help="A CSV's image folder (default: train/ beside the CSV); for a table, "
                                          "the folder its rows' paths are relative to, where a row has a path and "
                                          "no image bytes (default: the table's folder).")
    ] = None,
    filename_column: Annotated[Optional[str], typer.Option(help="A CSV's column with the file names.")] = None,
    artist_column: Annotated[Optional[str], typer.Option(help="A CSV's or a table's column with the artists "
                                                         "(default: artist, painter, author...).")] = None,
    image_column: Annotated[Optional[str], typer.Option(help="A table's column with the images (default: its "
                                                        "Image column).")] = None,
    workspace: WorkspaceOpt = DEFAULT_WS,
    force: ForceOpt = False,
    workers: WorkersOpt = None,
) -> None:
    """Read paintings and their artists into manifests/ingest.parquet, from one of three kinds of SOURCE.

    \b
    A CSV with a filename and an artist column, and its image folder (only
    each image's header is read): Kaggle's train_info.csv (images in train/
    beside it), all_data_info.csv (train/ or test/ by in_train), or your own.
      pbn ingest ~/kaggle/train_info.csv --images ~/kaggle/train

    \b
    A folder of artist folders, FOLDER/<artist>/<painting> (deeper levels
    allowed; the artist is the first-level folder; hidden files skipped).
      pbn ingest ~/paintings

    \b
    A Parquet table with the images inside, one file or a folder of shards,
    as Hugging Face datasets writes it (an Image column; the artist as text
    or a ClassLabel). Its images are written once into the workspace's
    images/ folder (resumable, identical images kept once); its other
    columns are carried along.
      pbn ingest wikiart/data --artist-column artist

    Rows that cannot be paintings go to ingest.rejected.parquet with a reason.

    Example: pbn ingest ~/kaggle/train_info.csv --images ~/kaggle/train
    """
    from pbn_cli.cli import console

    ws = workspace_(workspace)
    with console.progress("ingest: reading headers", unit="images") as bar:
        result = ws.ingest(source, images=images, filename_column=filename_column, artist_column=artist_column,
                     image_column=image_column, force=force, workers=workers, progress=bar)
    print_stage("ingest", result)
    s = {} if result.skipped else result.summary
    if s.get("empty_artist_folders"):
        empty = s["empty_artist_folders"]
        console.out.print(f"ingest: {len(empty)} artist folder{'s' * (len(empty) != 1)} with no paintings: "
                          f"{', '.join(empty[:10])}"
                          + (", ..." if len(empty) > 10 else ""), markup=False)
    if s.get("hidden_skipped"):
        n = s["hidden_skipped"]
        console.out.print(f"ingest: skipped {n} hidden file{'s' * (n != 1)} or folder{'s' * (n != 1)} "
                          "(names starting with '.')", markup=False)
    if "image_folder" in s:
        console.out.print(f"ingest: {s['images']} images in {s['image_folder']} "
                          f"({s['rows_sharing_bytes']} rows share their bytes with another)", markup=False)
    if s.get("columns_not_carried"):
        console.out.print(f"ingest: image columns not carried along: {', '.join(s['columns_not_carried'])}",
                          markup=False)


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
    result = workspace_(workspace).clean(min_paintings=min_paintings, force=force, images=images)
    print_stage("clean", result)


@command
def split(
    test_artists: Annotated[float, typer.Option(help="Fraction of artists held out for test.")] = 0.2,
    val_fraction: Annotated[float, typer.Option(help="Fraction of training paintings held out for val.")] = 0.1,
    val_artists: Annotated[
        Optional[float],
        typer.Option(help="Instead: hold out this fraction of training artists whole as val."),
    ] = None,
    calib_artists: Annotated[float, typer.Option(help="Fraction of the other artists held out whole as calib (at "
                                                 "least 8, or an eighth of them when fewer, or 3): never trained on, they fit "
                                                 "the verdict's probabilities and attribution's unknown hands; 0: none "
                                                 "(then p(unknown hand) has no painter to learn from).")] = 0.1,
    seed: Annotated[int, typer.Option(help="Seed of the artist and painting hashes.")] = 0,
    workspace: WorkspaceOpt = DEFAULT_WS,
    force: ForceOpt = False,
) -> None:
    """Split by artist: test and calib artists never appear in train or val.

    An artist's split is fixed by a seeded hash of its name, so adding artists
    never moves existing ones. --val-artists gives an artist-disjoint val,
    better for choosing models meant for unseen artists.

    Example: pbn split --test-artists 0.2 --val-fraction 0.1
    """
    from rich.table import Table

    from pbn_cli.cli import console

    result = workspace_(workspace).split(test_artists=test_artists, val_fraction=val_fraction, val_artists=val_artists,
                     calib_artists=calib_artists, seed=seed, force=force)
    if result.skipped:
        console.out.print(f"split: up to date, nothing to do ({result.kept} rows; --force to redo)")
    table = Table("split", "artists", "paintings", title="split")
    for name, c in result.summary.items():
        table.add_row(name, str(c["artists"]), str(c["paintings"]))
    console.out.print(table)


@command
def resize(
    size: Annotated[Optional[int], typer.Option(help="Side of the cached square paintings, px (default: the "
                                                "workspace's cache, 256 for a new one).", show_default=False)] = None,
    fit: Annotated[Optional[str], typer.Option(help="crop: centre crop (the reference's); pad: letterbox (default: the "
                                               "workspace's cache, crop for a new one).", show_default=False)] = None,
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
    from pbn_cli.cli import console

    ws = workspace_(workspace)
    with console.progress("resize", unit="paintings") as bar:
        result = ws.resize(size=size, fit=fit, workers=workers, max_pixels=max_pixels, force=force, images=images,
                     progress=bar)
    print_stage("resize", result)
    s = result.summary
    if s and not result.skipped:
        straddle = s.get("straddling_splits")
        where = "" if straddle is None else f", {straddle} straddling splits (they inflate test scores)"
        console.out.print(
            f"resize: {s['near_duplicate_groups']} groups of near-identical paintings "
            f"({s['near_duplicate_paintings']} paintings){where}; cache in {ws.folder.cache}, "
            f"preview {ws.folder.cache / 'preview.png'}"
        )


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

    from pbn_cli.cli import console

    rows = workspace_(workspace).status().to_dict("records")
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
