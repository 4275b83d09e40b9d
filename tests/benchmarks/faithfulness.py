"""Is the evidence faithful? Blurring the regions it ranks highest must lower p(same) more than blurring random ones.

    python tests/benchmarks/faithfulness.py -w WORKSPACE [--run RUN] [--pairs 80] [--seed 0]

For seeded same-artist pairs (a, b) of the test split (artists never trained
on), the evidence of a against b (inference/evidence.py) gives each region
of a its heat (``--heat closest-tile`` ranks by the similarity to b's
closest tile instead, the first design, for comparison). a, at the evidence's scale, is cut into an 8 x 8 grid of
cells; a cell's heat is the mean heat of its pixels. For each share of the
area (0, 1/8, ..., 1/2) the hottest cells are blurred (deletion), or as many
cells drawn at random (three seeded draws, averaged); the blurred painting
is brought to the cache's size as the image door does (one antialiased
resize) and embedded, and p(same) with b is read from the run's calibration.
Prints both deletion curves: the mean p(same) at each share with a 95%
interval from a bootstrap over artists, and the difference at each share
(evidence minus random, paired over pairs) with its interval.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from _common import machine
from pbn_cli.core.device import select_device
from pbn_cli.core.manifest import read_manifest
from pbn_cli.core.workspace import Workspace
from pbn_cli.data import imaging
from pbn_cli.data.paths import image_root
from pbn_cli.evaluation import bootstrap
from pbn_cli.inference.evidence import evidence, tiles
from pbn_cli.model import trained
from pbn_cli.model.metrics import artist_codes

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
    soft = np.asarray(Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(radius)))
    out = pixels.copy()
    edges = np.linspace(0, side, GRID + 1).round().astype(int)
    for c in cells:
        r, k = divmod(int(c), GRID)
        out[edges[r] : edges[r + 1], edges[k] : edges[k + 1]] = soft[edges[r] : edges[r + 1], edges[k] : edges[k + 1]]
    return out


def cell_heat(heat: np.ndarray) -> np.ndarray:
    edges = np.linspace(0, heat.shape[0], GRID + 1).round().astype(int)
    return np.array([heat[edges[r] : edges[r + 1], edges[k] : edges[k + 1]].mean()
                     for r in range(GRID) for k in range(GRID)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-w", "--workspace", required=True)
    ap.add_argument("--run", default=None)
    ap.add_argument("--pairs", type=int, default=80)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="also write the figures as JSON here")
    ap.add_argument("--heat", choices=["whole", "closest-tile"], default="whole",
                    help="a region's heat: its similarity to b as a whole (pbn's), or to b's closest tile")
    args = ap.parse_args()
    ws = Workspace(Path(args.workspace))
    model = trained.from_run(ws, args.run)
    device = select_device("cpu")
    split, record = read_manifest(ws.manifest("split"))
    root = Path(image_root(record))
    chosen = pairs_of(split, args.seed, args.pairs)
    rng = np.random.default_rng([args.seed, 1])
    curves = {"evidence": [], "random": []}
    t0 = time.monotonic()
    for n, (i, j) in enumerate(chosen):
        path_a, path_b = root / split.loc[i, "path"], root / split.loc[j, "path"]
        ta, tb = tiles(model, path_a, device), tiles(model, path_b, device)
        found = evidence(ta, tb)
        heat = cell_heat(ta.heat(found.heat_a if args.heat == "whole" else found.similarity.max(1)))
        target = tb.whole  # b as compare embeds it

        def p_same(cells: np.ndarray) -> float:
            pixels = imaging.resized(blurred(ta.pixels, cells, ta.pixels.shape[0] / 24), model.image_size)
            return model.probability(float(np.linalg.norm(model.embed_one(pixels, device) - target)))

        order = np.argsort(-heat, kind="stable")
        counts = [s * GRID * GRID // 8 for s in SHARES]
        curves["evidence"].append([p_same(order[:c]) for c in counts])
        curves["random"].append([np.mean([p_same(rng.permutation(GRID * GRID)[:c]) for _ in range(DRAWS)])
                                 for c in counts])
        if (n + 1) % 10 == 0:
            print(f"{n + 1}/{len(chosen)} pairs, {time.monotonic() - t0:.0f} s", flush=True)
    artists = split.loc[[i for i, _ in chosen], "artist"].to_numpy()
    codes, _ = artist_codes(artists)
    w = bootstrap.artist_weights(int(codes.max()) + 1, 1000, args.seed)
    ev, rnd = np.array(curves["evidence"]), np.array(curves["random"])
    rows = []
    print(f"\nfaithfulness on {len(chosen)} same-artist test pairs of {len(np.unique(artists))} unseen artists, run "
          f"{model.name}, heat {args.heat}; {machine()}\n")
    print("| area blurred | p(same), evidence's hottest cells | p(same), random cells | difference (evidence − random) |")
    print("| --- | --- | --- | --- |")
    for k, share in enumerate(SHARES):
        cis = [bootstrap.interval(bootstrap.weighted_mean(x[:, k], codes, w)) for x in (ev, rnd, ev - rnd)]
        means = [ev[:, k].mean(), rnd[:, k].mean(), (ev - rnd)[:, k].mean()]
        cells = " | ".join(f"{m:.3f} [{lo:.3f}, {hi:.3f}]" for m, (lo, hi) in zip(means, cis))
        print(f"| {share}/8 | {cells} |")
        rows.append({"share": share / 8, "evidence": means[0], "random": means[1], "difference": means[2],
                     "evidence_ci": cis[0], "random_ci": cis[1], "difference_ci": cis[2]})
    if args.out:
        Path(args.out).write_text(json.dumps({"pairs": len(chosen), "run": model.name, "heat": args.heat, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
