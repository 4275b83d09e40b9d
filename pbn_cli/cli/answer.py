"""Commands that answer: compare, search, attribute, predict, export."""

from __future__ import annotations

import json
from pathlib import Path
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
    SheetOpt,
    WorkersOpt,
    WorkspaceOpt,
    command,
    device_name,
    load_model,
)
from pbn_cli.cli.app import workspace as workspace_

READ_OUT = 5  # paintings whose answer `attribute` explains in words below its table

EvidenceOpt = Annotated[Optional[Path], typer.Option(help="Save a picture of the evidence (PNG): which regions of one "
                                                     "painting resemble the other (a heat map), and the most similar "
                                                     "pairs of passages side by side, cut from the files at their own "
                                                     "resolution; with --json the evidence's data too.")]
DetailsOpt = Annotated[int, typer.Option("--details", min=0, max=10, help="How many matched pairs of passages the "
                                         "evidence shows.")]


@command
def compare(
    a: Annotated[Path, typer.Argument(metavar="A", help="A painting (any format, size or orientation).", show_default=False)],
    b: Annotated[Path, typer.Argument(metavar="B", help="Another painting.", show_default=False)],
    run: RunOpt = None,
    model: Annotated[Optional[Path], typer.Option(help="An exported model file instead of a workspace run.")] = None,
    checkpoint: CheckpointOpt = "best",
    as_json: JsonOpt = False,
    sheet: SheetOpt = None,
    evidence: EvidenceOpt = None,
    details: DetailsOpt = 4,
    device: DeviceOpt = "auto",
    engine: EngineOpt = "auto",
    workspace: WorkspaceOpt = DEFAULT_WS,
) -> None:
    """Were these two paintings made by the same artist? Distance, probability, verdict.

    Uses the run's calibration (fitted by `pbn eval`): the distance threshold
    and the probability of the same artist at even odds. --evidence draws
    which regions of each resemble the other painting, ranked within the
    pair, and the most similar pairs of passages side by side as details
    from the files, each with the p(same) the two passages get alone.

    Example: pbn compare a.jpg b.png --evidence evidence.png --details 4
    """
    answerer = load_model(model, None if model else workspace_(workspace), run, checkpoint, engine, device)
    verdict = answerer.compare(a, b, sheet=sheet)
    if evidence:
        found = answerer.evidence(a, b, path=evidence, details=details, title=f"{a.name} and {b.name}: {verdict.words}, "
                                  f"p(same) = {verdict.same_artist_probability:.2f}")
    if as_json:
        print(json.dumps({**verdict.to_dict(), **({"evidence": found} if evidence else {})}))
        return
    from rich.panel import Panel

    from pbn_cli.cli import console

    word = f"[green]{verdict.words}[/]" if verdict.same_artist else f"[red]{verdict.words}[/]"
    console.out.print(Panel(
        f"{word}\nprobability of the same artist: {verdict.same_artist_probability:.2f}\n"
        f"distance {verdict.distance:.3f} (threshold {verdict.threshold:.3f})\nrun {verdict.run}",
        title=f"{a.name} vs {b.name}", expand=False,
    ))


@command
def search(
    image: Annotated[Path, typer.Argument(metavar="IMAGE", help="The painting to look up.", show_default=False)],
    k: Annotated[int, typer.Option("-k", help="How many neighbours.")] = 10,
    split: Annotated[str, typer.Option(help="Where to look: all, train, val, calib or test.")] = "all",
    where: Annotated[Optional[list[str]], typer.Option(help="Only paintings where COLUMN OP VALUE holds (OP: = != < <= "
                                                       "> >= ~), by any column of the workspace: artist, split, and the "
                                                       "CSV's own (style, genre, date...). Repeat to combine.")] = None,
    index: Annotated[str, typer.Option(help="exact: every embedding compared; faiss: the store's vector index (built "
                                       "once; pip install 'pbn[faiss]'); auto: faiss for large collections.")] = "auto",
    run: RunOpt = None,
    model: Annotated[Optional[Path], typer.Option(help="An exported model file instead of a workspace run (the "
                                                  "workspace still holds the paintings).")] = None,
    checkpoint: CheckpointOpt = "best",
    half: HalfOpt = False,
    as_json: JsonOpt = False,
    sheet: SheetOpt = None,
    device: DeviceOpt = "auto",
    engine: EngineOpt = "auto",
    workspace: WorkspaceOpt = DEFAULT_WS,
) -> None:
    """The workspace's paintings nearest to IMAGE, and the vote of their artists.

    The workspace's embeddings come from the run's embedding store: each
    painting is embedded once, and only paintings added since are embedded
    now. The query itself is left out when it is one of the paintings; the
    same picture in another file (a copy, shrunk or re-saved: the same
    perceptual hash) is shown, marked, and left out of the vote.

    Example: pbn search painting.jpg -k 10 --split train --where "date>=1600"
    """
    from rich.table import Table

    from pbn_cli.cli import console
    ws = workspace_(workspace)
    with console.progress("search", unit="paintings") as bar:
        answerer = load_model(model, ws, run, checkpoint, engine, device, bar)
        near = answerer.search(image, k, split=split, where=where, index=index, half=half, sheet=sheet, progress=bar)
    if as_json:
        print(json.dumps({"run": answerer.name, "neighbours": near.to_dict("records"), "vote": near.attrs["vote"]}))
        return
    table = Table("image_id", "artist", "split", "distance", "p(same artist)", title=f"nearest to {image.name} (run {answerer.name})")
    for r in near.itertuples():
        table.add_row(str(r.image_id) + (" (the same painting)" if r.same_painting else ""), r.artist, r.split,
                      f"{r.distance:.3f}", f"{r.same_artist_probability:.2f}")
    console.out.print(table)
    console.out.print("vote: " + ", ".join(f"{artist} {n}" for artist, n in near.attrs["vote"])
                      + (" (the same painting in another file left out)" if near["same_painting"].any() else ""))


@command
def attribute(
    images: Annotated[list[Path], typer.Argument(metavar="IMAGE", help="Paintings to attribute (any format).",
                                                 show_default=False)],
    among: Annotated[str, typer.Option(help="Known hands: the artists of all the workspace's paintings, or of one "
                                       "split (train, val, calib, test).")] = "all",
    k: Annotated[int, typer.Option("-k", help="How many hands to show for each painting.")] = 5,
    run: RunOpt = None,
    model: Annotated[Optional[Path], typer.Option(help="An exported model file instead of a workspace run (the "
                                                  "workspace still holds the known hands).")] = None,
    checkpoint: CheckpointOpt = "best",
    as_json: JsonOpt = False,
    sheet: SheetOpt = None,
    evidence: EvidenceOpt = None,
    details: DetailsOpt = 4,
    device: DeviceOpt = "auto",
    engine: EngineOpt = "auto",
    workspace: WorkspaceOpt = DEFAULT_WS,
) -> None:
    """Who painted it? The most likely known hands, each with a probability and its closest paintings, and an answer.

    Ranks every artist of the workspace by how close the painting sits to
    that artist's paintings, with p(hand) and p(unknown hand) from the
    attribution model `pbn eval` fitted on the workspace (docs/metrics.md).
    Three answers: "unknown hand" when p(unknown hand) is at least 0.5
    (likelier than all the known hands together); the top hand's name when
    p(top hand) reaches the level at which named answers were right 80% of
    the time in eval's fitting; "probably X, uncertain" in between
    ("perhaps X, uncertain" while p(X) is below one half), each
    with its reason in words. A painting the workspace holds (its file, or
    the same picture in another file) is set aside from its own hand, and
    the reason says which one it is. --evidence draws which regions of the
    (first) painting resemble the top hand's closest painting.

    Example: pbn attribute unknown.jpg --sheet hands.png --evidence where.png
    """
    from rich.markup import escape
    from rich.table import Table

    from pbn_cli.cli import console

    ws = workspace_(workspace)
    with console.progress("attribute", unit="paintings") as bar:
        answerer = load_model(model, ws, run, checkpoint, engine, device, bar)
        results = answerer.attribute(images, among=among, k=k, sheet=sheet, progress=bar)
    found = answerer.attribution_evidence(images[0], results[0], path=evidence, details=details) if evidence else None
    if as_json:
        print(json.dumps({"run": answerer.name, "among": among, "paintings": [r.to_dict() for r in results],
                          **({"evidence": found} if found else {})}))
        return
    table = Table("painting", "answer", "p(unknown hand)", *[f"hand {n + 1}" for n in range(min(k, 3))],
                  title=f"who painted it (run {answerer.name}; known hands: {among})")
    colour = {"named": "green", "probably": "yellow", "unknown hand": "red"}
    for r in results:
        table.add_row(r.query, f"[{colour[r.verdict]}]{escape(r.answer)}[/]", f"{r.unknown_probability:.2f}",
                      *[f"{escape(h.artist)} ({h.probability:.2f})" for h in r.hands[:3]])
    console.out.print(table)
    for r in results[:READ_OUT]:
        console.out.print(f"{escape(r.query)}: {escape(r.answer)}, because {escape(r.reason)}", highlight=False)
    new, known = answerer.name_at
    console.out.print(f"(p: probability that the painting is by that hand. A name from p ≥ {known:.2f} for a hand the "
                      f"network trained on, {new:.2f} for one it did not: there named answers were right 80% of the "
                      "time in eval's fitting; 'probably …, uncertain' below ('perhaps …' below 0.5); 'unknown hand' "
                      "when p(unknown hand) is at least 0.5)", highlight=False)


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
    gpu: GpuOpt = False,
    engine: EngineOpt = "auto",
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
    from pbn_cli.cli import console

    ws = None if model else workspace_(workspace)
    with console.progress("predict") as bar:
        answerer = load_model(model, ws, run, checkpoint, engine, device_name(device, gpu), bar)
        result = answerer.predict(pairs_csv, images, output, missing=missing, workers=workers, progress=bar)
    console.out.print(
        f"predict: {result.rows:,} pairs over {result.images:,} images ({result.computed:,} embedded now, "
        f"{result.cached:,} from the cache) with run {answerer.name}; wrote {result.output}"
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
    workspace. FILE.pt holds plain data only (loaded with weights_only).
    FILE.onnx is an ONNX graph for onnxruntime (pip install 'pbn[onnx]'):
    uint8 paintings at the cache's size in (batch, S, S, 3), embeddings out,
    the calibration and image geometry in its metadata; `compare --model`
    answers with it without PyTorch's network.

    Example: pbn export triplet-compact-20261129-120000 painter.pt
    """
    from pbn_cli.cli import console

    answerer = load_model(None, workspace_(workspace), run, checkpoint, "torch", "cpu")
    done = answerer.export(file)
    if done["onnx_opset"] is None:
        console.out.print(f"export: run {answerer.name} ({checkpoint}) written to {file}")
        return
    console.out.print(f"export: run {answerer.name} ({checkpoint}) written to {file} as ONNX (opset "
                      f"{done['onnx_opset']}); onnxruntime's embeddings match PyTorch's within "
                      f"{done['largest_difference']:.1e}")
