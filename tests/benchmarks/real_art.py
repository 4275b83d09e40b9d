"""Real paintings: pbn's recipes against the colour histogram on artists never seen in training.

    python tests/benchmarks/real_art.py [--data ../shared/data/old-masters]
        [--weights ../shared/weights/tf_efficientnet_lite0.imagenet.safetensors]
        [--workspace real-art-ws] [--only cpu scratch ...] [--ablation-epochs 1]

Runs the pipeline through the CLI as a user would (ingest, clean, split,
resize: each skipped when done), the colour-histogram baseline, then for
each recipe `pbn train` and `pbn eval` on the test split, and prints one
table: triplet accuracy, pair AUC, P@1 and MAP@R with their 95% intervals
(bootstrap over artists), training minutes and epochs.

Recipes (the ablation ones train the same number of epochs, one by default,
so their rows compare with each other, not with ``cpu``):
- ``cpu``: ``--preset cpu`` with the given weights, ``--max-minutes 15``; ``cpu-start``: its network before
  training (`eval --checkpoint start`: the pretrained features beside their centred copy);
- ``cpu-keep0``: the same without the untouched copy (``--keep-pretrained 0``); its start, ``frozen``: the
  pretrained backbone's own features (three levels), no training;
- ``cpu-levels1``: without the copy, the last stage's features alone (``--levels 1``; its start: ``frozen-levels1``);
- ``scratch``: no pretrained weights: the quick preset at 128 px, whole painting and crops, with the artist loss,
  learning at 1e-3 after a 5% warm-up;
- ``abl-triplet``: triplet loss alone, crops only; ``abl-artist``: + artist loss;
  ``abl-proxy``: artist loss alone (proxy mode); ``abl-mixed``: triplet + the whole-painting view (the cpu
  recipe); ``abl-mixed-artist``: + both;
  ``abl-frozen-head``: a 256-d head on cached frozen features (--freeze-backbone).

Results are kept in <workspace>/real_art.json by recipe and arguments: a
second invocation reuses a finished recipe (delete its run folder and entry
to measure it again). Figures recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from _common import machine

HERE = Path(__file__).resolve().parents[2]
LITE0 = "timm:tf_efficientnet_lite0"


def recipes(weights: str, ablation: int) -> dict[str, list[str]]:
    pre = ["--backbone", LITE0, "--weights", weights]
    short = ["--epochs", f"{ablation}", "--max-minutes", "60"]  # the same steps for every row
    return {
        "cpu": ["--preset", "cpu", *pre, "--max-minutes", "15"],
        "cpu-keep0": ["--preset", "cpu", *pre, "--max-minutes", "15", "--keep-pretrained", "0"],
        "cpu-levels1": ["--preset", "cpu", *pre, "--max-minutes", "15", "--keep-pretrained", "0", "--levels", "1"],
        "scratch": ["--preset", "quick", "--input-size", "128", "--view", "mixed", "--id-weight", "1",
                    "--lr", "1e-3", "--warmup", "0.05", "--max-minutes", "15"],
        "abl-triplet": ["--preset", "cpu", *pre, *short, "--id-weight", "0", "--view", "crop"],
        "abl-artist": ["--preset", "cpu", *pre, *short, "--view", "crop", "--id-weight", "1"],
        "abl-proxy": ["--preset", "cpu", *pre, *short, "--mode", "proxy", "--view", "crop"],
        "abl-mixed": ["--preset", "cpu", *pre, *short],  # the cpu recipe
        "abl-mixed-artist": ["--preset", "cpu", *pre, *short, "--id-weight", "1"],
        "abl-frozen-head": ["--preset", "cpu", *pre, "--freeze-backbone", "--embedding-dim", "256", "--epochs", "30"],
    }


FROZEN = {"cpu": "cpu-start", "cpu-keep0": "frozen", "cpu-levels1": "frozen-levels1"}  # runs whose start is measured too


def preset_values(args: list[str]) -> str:
    """The preset's values as pbn has them now: a row measured with other defaults is measured again."""
    from pbn_cli.training.presets import PRESETS

    return json.dumps(PRESETS[args[args.index("--preset") + 1]], sort_keys=True)


def pbn(*args: str) -> None:
    print("$ pbn " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "pbn_cli", *args], check=True)


def metrics(ws: Path, folder: str) -> dict:
    return json.loads((ws / folder / "metrics.json").read_text())


def row(name: str, m: dict, minutes: float | None, epochs: int | None) -> str:
    def cell(key: str) -> str:
        lo, hi = m[f"{key}_ci"]
        return f"{m[key]:.3f} [{lo:.3f}, {hi:.3f}]"

    time_ = "–" if minutes is None else f"{minutes:.1f}"
    return (f"| {name} | {cell('triplet_accuracy')} | {cell('pair_auc')} | {cell('precision_at_1')} | "
            f"{cell('map_at_r')} | {time_} | {'–' if epochs is None else epochs} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(HERE.parent / "shared/data/old-masters"))
    parser.add_argument("--weights", default=str(HERE.parent / "shared/weights/tf_efficientnet_lite0.imagenet.safetensors"))
    parser.add_argument("--workspace", default="real-art-ws")
    parser.add_argument("--only", nargs="*", help="recipes to run (default: all; frozen comes with cpu)")
    parser.add_argument("--ablation-epochs", type=int, default=1)
    a = parser.parse_args()
    ws = Path(a.workspace).resolve()
    w = ["-w", str(ws)]
    pbn("ingest", str(Path(a.data) / "train_info.csv"), *w)
    for stage in ("clean", "split", "resize"):
        pbn(stage, *w)
    store = ws / "real_art.json"
    done = json.loads(store.read_text()) if store.exists() else {}
    if "color-hist" not in done:
        pbn("eval", "--baseline", "color-hist", *w)
        done["color-hist"] = {"metrics": metrics(ws, "baselines/color-hist/test")}
    table = recipes(a.weights, a.ablation_epochs)
    for name in a.only or list(table):
        args = table[name]
        if done.get(name, {}).get("args") == args and done[name].get("preset") == preset_values(args):
            print(f"{name}: measured before, reused ({store})", flush=True)
            continue
        t0 = time.monotonic()
        pbn("train", "--run", name, *args, *w)
        minutes = (time.monotonic() - t0) / 60
        pbn("eval", "--run", name, *w)
        history = json.loads(subprocess.run(
            [sys.executable, "-c", "import pandas as pd, sys; h = pd.read_parquet(sys.argv[1]); "
             "print(h.to_json(orient='records'))", str(ws / "runs" / name / "history.parquet")],
            check=True, capture_output=True, text=True).stdout)
        done[name] = {"args": args, "preset": preset_values(args), "minutes": minutes, "epochs": max(r["epoch"] for r in history),
                      "metrics": metrics(ws, f"runs/{name}/eval/test")}
        if (ws / "runs" / name / "checkpoints/start.pt").exists() and name in FROZEN:
            pbn("eval", "--run", name, "--checkpoint", "start", *w)
            done[FROZEN[name]] = {"metrics": metrics(ws, f"runs/{name}/eval/test-start")}
        store.write_text(json.dumps(done, indent=2))
    print(f"\nold-masters test split, artists unseen in training; {machine()}\n")
    print("| recipe | triplet acc. | pair AUC | P@1 | MAP@R | train min | epochs |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name in ["color-hist", *FROZEN.values(), *table]:
        if name in done:
            r = done[name]
            print(row(name, r["metrics"], r.get("minutes"), r.get("epochs")))


if __name__ == "__main__":
    main()
