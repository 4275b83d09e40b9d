"""Eval's embedding budget: how many training paintings the attribution needs, figures against the background's size.

    .venv/bin/python tests/benchmarks/eval_budget.py -w WORKSPACE --run RUN [--sizes 256 512 1024 0]

Reads the run's embedding store after a `pbn eval` (nothing is embedded
here) and fits the attribution model again as eval does
(``evaluation.evaluate.attribution_figures``), with the training paintings
of its gallery, whitening and background capped at each size (0: all of
them; a cap keeps an even spread of each artist's paintings, at least 4,
as ``background_rows`` does). Prints, for each size, the training
paintings it takes (what a first eval must embed beyond val, calib and
test), the fit's time and the attribution figures with their 95%
intervals. The verdict's figures do not depend on it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine  # noqa: E402

SHOWN = ("workspace_top1", "workspace_ece", "workspace_named_precision", "workspace_auroc", "attribution_top1",
         "open_set_auroc", "attribution_ece", "attribution_named_precision")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-w", "--workspace", type=Path, required=True)
    parser.add_argument("--run", required=True)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024, 0])
    args = parser.parse_args()

    from pbn_cli.core.runs import find_run
    from pbn_cli.core.workspace import Workspace
    from pbn_cli.data.cache import CacheData
    from pbn_cli.evaluation.evaluate import attribution_figures, background_rows
    from pbn_cli.model.store import model_store

    ws = Workspace(args.workspace)
    run = find_run(ws, args.run)
    weights = json.loads(run.calibration.read_text())["best"]["weights"]
    store, data = model_store(ws, weights), CacheData(ws)
    parts = {name: data.split(name) for name in ("val", "calib", "test")}
    parts["eval"] = parts["test"]
    print(f"{machine()}; run {run.name}; train {len(data.split('train'))} paintings, "
          f"{len(np.unique(data.split('train').labels))} artists", flush=True)
    print("| training paintings | fit s | " + " | ".join(SHOWN) + " |")
    print("| --- " * (len(SHOWN) + 2) + "|")
    for size in args.sizes:
        background = background_rows(data, size) if size else data.split("train")
        embedded = {name: store.read(rows) for name, rows in {**parts, "background": background}.items()}
        t = time.perf_counter()
        _, figures, _ = attribution_figures(embedded, {**parts, "background": background}, 0)
        took = time.perf_counter() - t
        cells = [f"{figures[k]:.3f} [{figures[k + '_ci'][0]:.3f}, {figures[k + '_ci'][1]:.3f}]" for k in SHOWN]
        print(f"| {len(background)} | {took:.1f} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
