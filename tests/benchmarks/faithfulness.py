"""Is the evidence faithful? Blurring the regions it ranks highest must lower p(same) more than blurring random ones.

    python tests/benchmarks/faithfulness.py -w WORKSPACE [--run RUN] [--pairs 80] [--seed 0] [--engine onnx]

For seeded same-artist pairs (a, b) of the test split (artists never trained
on), the evidence of a against b (inference/evidence.py) gives each region
of a its heat. Every heat is measured on the same pairs and random draws:
``smooth``, the picture's (the tiles' ranks within the pair, blended),
``whole``, each tile's similarity to b as a whole averaged over the pixels
it covers (the picture's before), ``closest-tile`` (the first design) and
``occlusion``, the costly reference (each tile blurred alone, ranked by how
far p(same) falls: one more pass of the network per tile). a, at the
evidence's scale, is cut into an 8 x 8 grid of cells; a cell's heat is the
mean heat of its pixels. For each share of the
area (0, 1/8, ..., 1/2) the hottest cells are blurred (deletion), or as many
cells drawn at random (three seeded draws, averaged); the blurred painting
is brought to the cache's size as the image door does (one antialiased
resize) and embedded, and p(same) with b is read from the run's calibration.
Prints both deletion curves: the mean p(same) at each share with a 95%
interval from a bootstrap over artists, and the difference at each share
(evidence minus random, paired over pairs) with its interval.

The details: the passage of a in the strongest matched pair is blurred,
against a random tile of a of the same size (three draws): the fall of
p(same) with b each gives, and their difference. (Blurring the pair's
passages in both paintings instead measures nothing: the same blur in both
makes them more alike, and p(same) rises.)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from _common import machine
from pbn_cli.core.manifest import read_manifest
from pbn_cli.core.workspace import Workspace
from pbn_cli.data import imaging
from pbn_cli.data.paths import image_root
from pbn_cli.evaluation import bootstrap
from pbn_cli.inference.evidence import evidence, tiles
from pbn_cli.model import trained
from pbn_cli.answers.metrics import artist_codes

HEATS = ("smooth", "whole", "closest-tile", "occlusion")
GRID = 8
SHARES = [0, 1, 2, 3, 4]  # eighths of the cells... of 64: 0, 8, 16, 24, 32 cells
DRAWS = 3


def pairs_of(split, seed: int, n: int) -> list[tuple[int, int]]:
    """Seeded distinct same-artist pairs of the test split (indices into ``split``), spread over its artists."""
    test = split[split["split"] == "test"]
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(20 * n):
        artist = rng.choice(test["artist"].unique())
        rows = test.index[test["artist"] == artist].to_numpy()
        if len(rows) < 2:
            continue
        i, j = rng.choice(rows, 2, replace=False)
        if (i, j) not in out:
            out.append((i, j))
        if len(out) == n:
            break
    return out


def blurred(pixels: np.ndarray, cells: np.ndarray, radius: float) -> np.ndarray:
    """``pixels`` with the given grid cells replaced by a heavy blur of the whole painting."""
    side = pixels.shape[0]
    edges = np.linspace(0, side, GRID + 1).round().astype(int)
    boxes = []
    for c in cells:
        r, k = divmod(int(c), GRID)
        boxes.append((edges[r], edges[k], edges[r + 1] - edges[r], edges[k + 1] - edges[k]))
    return blurred_boxes(pixels, boxes, radius)


def blurred_boxes(pixels: np.ndarray, boxes, radius: float) -> np.ndarray:
    """``pixels`` with the given (top, left, height[, width]) boxes replaced by a heavy blur of the whole painting."""
    soft = np.asarray(Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(radius)))
    out = pixels.copy()
    for top, left, h, *w in boxes:
        w = w[0] if w else h
        out[top : top + h, left : left + w] = soft[top : top + h, left : left + w]
    return out


def cell_heat(heat: np.ndarray) -> np.ndarray:
    edges = np.linspace(0, heat.shape[0], GRID + 1).round().astype(int)
    return np.array([heat[edges[r] : edges[r + 1], edges[k] : edges[k + 1]].mean()
                     for r in range(GRID) for k in range(GRID)])


def summary(codes, w, ev: np.ndarray, rnd: np.ndarray) -> list[tuple[float, float, float, list]]:
    """Per column: the evidence's mean, random's, their paired difference, and the three 95% intervals."""
    out = []
    for k in range(ev.shape[1]):
        cis = [bootstrap.interval(bootstrap.weighted_mean(x[:, k], codes, w)) for x in (ev, rnd, ev - rnd)]
        out.append((ev[:, k].mean(), rnd[:, k].mean(), (ev - rnd)[:, k].mean(), cis))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-w", "--workspace", required=True)
    ap.add_argument("--run", default=None)
    ap.add_argument("--pairs", type=int, default=80)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--engine", choices=["torch", "onnx"], default="onnx", help="what embeds (the same figures)")
    ap.add_argument("--out", default=None, help="also write the figures as JSON here")
    ap.add_argument("--heats", nargs="+", choices=HEATS, default=list(HEATS), help="the heats to measure")
    args = ap.parse_args()
    ws = Workspace(Path(args.workspace))
    model = trained.from_run(ws, args.run, engine_name=args.engine)
    device = None if model.runtime is not None else __import__("torch").device("cpu")
    split, record = read_manifest(ws.manifest("split"))
    root = Path(image_root(ws, record))
    chosen = pairs_of(split, args.seed, args.pairs)
    rng = np.random.default_rng([args.seed, 1])
    curves = {h: [] for h in (*HEATS, "random")}
    details, seconds = [], {h: 0.0 for h in HEATS}
    t0 = time.monotonic()
    for n, (i, j) in enumerate(chosen):
        path_a, path_b = root / split.loc[i, "path"], root / split.loc[j, "path"]
        started = time.monotonic()
        ta, tb = tiles(model, path_a, device), tiles(model, path_b, device)
        found = evidence(ta, tb, model)
        took = time.monotonic() - started
        target = tb.whole  # b as compare embeds it
        radius = ta.pixels.shape[0] / 24

        def p_same(pixels: np.ndarray, other: np.ndarray = target) -> float:
            emb = model.embed_one(imaging.resized(pixels, model.image_size), device)
            return model.probability(float(np.linalg.norm(emb - other)))

        started = time.monotonic()
        base = p_same(ta.pixels)
        fall = np.array([base - p_same(blurred_boxes(ta.pixels, [box], radius)) for box in ta.boxes]) \
            if "occlusion" in args.heats else None
        heats = {"smooth": lambda: cell_heat(ta.smooth(found.ranks()[0], grid=GRID * 12)),
                 "whole": lambda: cell_heat(ta.heat(found.heat_a)),
                 "closest-tile": lambda: cell_heat(ta.heat(found.similarity.max(1))),
                 "occlusion": lambda: cell_heat(ta.heat(fall))}
        heats = {h: heats[h]() for h in args.heats}
        seconds["occlusion"] += time.monotonic() - started + took
        for h in ("smooth", "whole", "closest-tile"):
            seconds[h] += took
        counts = [s * GRID * GRID // 8 for s in SHARES]
        for h, heat in heats.items():
            order = np.argsort(-heat, kind="stable")
            curves[h].append([p_same(blurred(ta.pixels, order[:c], radius)) for c in counts])
        curves["random"].append([np.mean([p_same(blurred(ta.pixels, rng.permutation(GRID * GRID)[:c], radius))
                                          for _ in range(DRAWS)]) for c in counts])
        # the details: a's passage of the strongest pair blurred, against a random tile of a of the same size
        (k, _, _), *_ = found.strongest(1)
        passage = p_same(blurred_boxes(ta.pixels, [ta.boxes[k]], radius))
        random_tiles = [p_same(blurred_boxes(ta.pixels, [ta.boxes[rng.integers(len(ta.boxes))]], radius))
                        for _ in range(DRAWS)]
        details.append([base - passage, base - float(np.mean(random_tiles))])
        if (n + 1) % 10 == 0:
            print(f"{n + 1}/{len(chosen)} pairs, {time.monotonic() - t0:.0f} s", flush=True)
    artists = split.loc[[i for i, _ in chosen], "artist"].to_numpy()
    codes, _ = artist_codes(artists)
    w = bootstrap.artist_weights(int(codes.max()) + 1, 1000, args.seed)
    rnd = np.array(curves["random"])
    print(f"\nfaithfulness on {len(chosen)} same-artist test pairs of {len(np.unique(artists))} unseen artists, run "
          f"{model.name} ({model.engine}); {machine()}\n")
    out = {"pairs": len(chosen), "run": model.name, "heats": {}}
    for h in args.heats:
        print(f"heat {h} (its evidence: {seconds[h] / len(chosen):.2f} s a pair)\n")
        print("| area blurred | p(same), hottest cells | p(same), random cells | difference (heat − random) |")
        print("| --- | --- | --- | --- |")
        rows = summary(codes, w, np.array(curves[h]), rnd)
        for share, (e, r, d, cis) in zip(SHARES, rows):
            cells = " | ".join(f"{m:.3f} [{lo:.3f}, {hi:.3f}]" for m, (lo, hi) in zip((e, r, d), cis))
            print(f"| {share}/8 | {cells} |")
        print()
        out["heats"][h] = {"seconds_a_pair": seconds[h] / len(chosen), "rows": [
            {"share": s / 8, "heat": e, "random": r, "difference": d, "cis": cis} for s, (e, r, d, cis) in zip(SHARES, rows)]}
    d = np.array(details)
    (e, r, diff, cis), = summary(codes, w, d[:, :1], d[:, 1:])
    print("| blurred in a | fall of p(same) | 95% interval |\n| --- | --- | --- |")
    print(f"| its passage of the strongest pair | {e:.3f} | [{cis[0][0]:.3f}, {cis[0][1]:.3f}] |")
    print(f"| a random passage of the same size | {r:.3f} | [{cis[1][0]:.3f}, {cis[1][1]:.3f}] |")
    print(f"| difference (pair − random, paired) | {diff:.3f} | [{cis[2][0]:.3f}, {cis[2][1]:.3f}] |")
    out["details"] = {"pair": e, "random": r, "difference": diff, "cis": cis}
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
