"""The ONNX export against its run: the same verdicts, and embedding speed with onnxruntime against PyTorch.

    .venv/bin/python tests/benchmarks/onnx_speed.py --weights tf_efficientnet_lite0.safetensors [--pairs 100]

Builds once, in --folder (default: a temporary folder), a workspace of the
demo's synthetic paintings (40 artists x 12, cached at 256 px), trains a
run of the cpu preset as shipped (timm:tf_efficientnet_lite0 from the
--weights file; mixed views at 224 px: 4 crops and the whole painting; 3
levels; the untouched pretrained copy) for one short epoch, evaluates it and
exports it with `pbn export RUN model.onnx`. Without --weights the same
network starts from random weights (speed only means something then).

- agreement: PAIRS pairs of test paintings (half by one artist), each
  compared through ``inference.compare`` (what `pbn compare` calls) with the
  run and with the ONNX model: how many verdicts agree, the largest
  difference of distance and probability.
- speed: paintings per second embedding the same cached test paintings with
  PyTorch (``embed_images`` on the run's network, full precision,
  channels-last) and with onnxruntime (the exported graph, CPU provider), in
  the same batches (1: how `compare` embeds; the CPU's default batch of
  `eval`), best of --repeats after a warm-up.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine  # noqa: E402


def build(folder: Path, weights: str | None, artists: int, paintings: int) -> tuple[Path, str, Path]:
    """(workspace, run, model.onnx): synth, stages, one short cpu-preset epoch, eval, export; reused when present."""
    from typer.testing import CliRunner

    from pbn_cli.cli import app

    ws, model = folder / "ws", folder / "model.onnx"
    runner = CliRunner()
    source = ["--weights", weights] if weights else ["--no-pretrained", "--keep-pretrained", "0"]
    steps = [["synth", folder / "data", "--artists", artists, "--paintings", paintings, "--seed", 0],
             ["ingest", folder / "data/train_info.csv"], ["clean"], ["split"], ["resize"],
             ["train", "--preset", "cpu", "--backbone", "timm:tf_efficientnet_lite0", *source, "--epochs", 1,
              "--device", "cpu", "--run", "lite0"],
             ["eval", "--run", "lite0", "--device", "cpu"], ["export", "lite0", model]]
    if model.exists():
        return ws, "lite0", model
    for step in steps:
        t = time.perf_counter()
        args = [str(a) for a in step] + ([] if step[0] == "synth" else ["-w", str(ws)])
        result = runner.invoke(app, args)
        if result.exit_code != 0:
            sys.exit(f"pbn {' '.join(args)} failed:\n{result.output}")
        print(f"  pbn {step[0]}: {time.perf_counter() - t:.0f} s", flush=True)
    return ws, "lite0", model


def paths_of(ws: Path, split: str) -> pd.DataFrame:
    from pbn_cli.core.workspace import Workspace
    from pbn_cli.data.paths import image_root

    table = pd.read_parquet(ws / "manifests/split.parquet")
    root = image_root(Workspace(ws))
    table = table[table["split"] == split].reset_index(drop=True)
    return table.assign(file=[str(Path(root) / p) for p in table["path"]])


def agreement(ws: Path, run: str, model_file: Path, n_pairs: int) -> dict:
    from pbn_cli.core.workspace import Workspace
    from pbn_cli.inference.compare import compare
    from pbn_cli.model import trained

    cpu = torch.device("cpu")
    torch_model, onnx_model = trained.from_run(Workspace(ws), run), trained.from_file(model_file)
    test = paths_of(ws, "test")
    rng = np.random.default_rng(0)
    same = dist = prob = 0.0
    pairs = []
    while len(pairs) < n_pairs:
        i, j = rng.choice(len(test), 2, replace=False)
        if (test["artist"][i] == test["artist"][j]) == (len(pairs) % 2 == 0):
            pairs.append((test["file"][i], test["file"][j]))
    for a, b in pairs:
        x, y = compare(torch_model, Path(a), Path(b), device=cpu), compare(onnx_model, Path(a), Path(b), device=cpu)
        same += x.same_artist == y.same_artist
        dist = max(dist, abs(x.distance - y.distance))
        prob = max(prob, abs(x.same_artist_probability - y.same_artist_probability))
    return {"pairs": n_pairs, "same_verdicts": int(same), "max_distance_diff": dist, "max_probability_diff": prob,
            "threshold": torch_model.calibration["threshold"]}


def best_rate(fn, n: int, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return n / best


def speed(ws: Path, run: str, model_file: Path, n: int, batches: list[int], repeats: int) -> list[dict]:
    from pbn_cli.core.workspace import Workspace
    from pbn_cli.data.cache import CacheData
    from pbn_cli.model import trained
    from pbn_cli.networks.embed import embed_images

    cpu = torch.device("cpu")
    torch_model, onnx_model = trained.from_run(Workspace(ws), run), trained.from_file(model_file)
    data = CacheData(Workspace(ws))
    images = data.gather(data.split("test").rows[:n])
    net = torch_model.network(cpu)
    rows = []
    for batch in batches:
        def with_torch():
            return embed_images(net, lambda idx: images[idx], len(images), cpu, batch_size=batch)

        def with_onnx():
            session = onnx_model.runtime.session
            return np.concatenate([session.run(None, {"images": images[s : s + batch]})[0]
                                   for s in range(0, len(images), batch)])

        diff = float(np.abs(with_torch() - with_onnx()).max())
        pt, ort = best_rate(with_torch, len(images), repeats), best_rate(with_onnx, len(images), repeats)
        rows.append({"batch": batch, "pytorch": pt, "onnxruntime": ort, "ratio": ort / pt, "max_diff": diff})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", help="timm tf_efficientnet_lite0 state dict (.safetensors)")
    parser.add_argument("--folder", type=Path, help="where the workspace and model.onnx are built (kept)")
    parser.add_argument("--artists", type=int, default=40)
    parser.add_argument("--paintings", type=int, default=12)
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--images", type=int, default=48, help="paintings embedded for speed")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import onnxruntime

    from pbn_cli.networks.embed import paintings_per_batch
    from pbn_cli.networks.views import views_per_painting

    folder = args.folder or Path(tempfile.mkdtemp(prefix="pbn-onnx-"))
    print(f"# ONNX export against its run ({machine()}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"onnxruntime {onnxruntime.__version__})\n\nbuilding in {folder}:", flush=True)
    ws, run, model = build(folder, args.weights, args.artists, args.paintings)
    print(f"  model.onnx: {model.stat().st_size / 2**20:.1f} MiB\n")
    agree = agreement(ws, run, model, args.pairs)
    print(f"agreement on {agree['pairs']} test pairs: {agree['same_verdicts']}/{agree['pairs']} verdicts equal; "
          f"max |distance difference| {agree['max_distance_diff']:.2e}, max |probability difference| "
          f"{agree['max_probability_diff']:.2e} (threshold {agree['threshold']:.4f})\n")
    default = paintings_per_batch(torch.device("cpu"), views_per_painting(256, 224, "mixed"))
    rows = speed(ws, run, model, args.images, sorted({1, default}), args.repeats)
    print(f"| batch (paintings, 5 views each) | PyTorch paintings/s | onnxruntime paintings/s | onnxruntime / PyTorch "
          f"| max |embedding difference| |\n| --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['batch']} | {r['pytorch']:.2f} | {r['onnxruntime']:.2f} | {r['ratio']:.2f}x | {r['max_diff']:.1e} |")
    print(f"\n({args.images} cached test paintings at 256 px, best of {args.repeats} after a warm-up; "
          f"{'weights ' + Path(args.weights).name if args.weights else 'random weights'})")


if __name__ == "__main__":
    main()
