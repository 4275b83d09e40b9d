"""The embedding engines on a real run: PyTorch against onnxruntime (and onnxruntime on an int8 model), as eval uses them.

    .venv/bin/python tests/benchmarks/engine.py -w WORKSPACE --run RUN [--paintings 120] [--int8]

On the run's best checkpoint, over the first PAINTINGS test paintings of
the cache:

- throughput, paintings per second, best of --repeats after a warm-up:
  the torch engine as `eval` fills the store (``embed_images`` with the
  CPU's default batch; both networks of a --keep-pretrained run), and the
  onnx engine as it fills the store (``Runtime.embed``, the run's export,
  ``engine.BATCH`` paintings a call); their ratio, and the largest
  difference between the two engines' embeddings;
- with --int8: the export quantised by onnxruntime's own dynamic int8
  quantisation (``quantize_dynamic``, weights int8), its speed, and what it
  does to the test figures: triplet accuracy and pair AUC of every test
  painting, each engine's, with intervals (``evaluation.scores``).

The export comes from the run's onnx engine cache (made once, like eval).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine  # noqa: E402


def best_rate(fn, n: int, repeats: int) -> tuple[float, np.ndarray]:
    out = fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return n / best, out


def figures(emb: np.ndarray, artists: np.ndarray) -> dict:
    from pbn_cli.evaluation.scores import compute_metrics

    m = compute_metrics(emb, artists, 0, 20_000, 1800, None)
    return {k: (round(m[k], 4), [round(x, 4) for x in m[f"{k}_ci"]]) for k in ("triplet_accuracy", "pair_auc")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-w", "--workspace", type=Path, required=True)
    parser.add_argument("--run", required=True)
    parser.add_argument("--paintings", type=int, default=120)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--int8", action="store_true", help="also measure onnxruntime's dynamic int8 quantisation")
    args = parser.parse_args()

    from pbn_cli.core.runs import find_run
    from pbn_cli.core.workspace import Workspace
    from pbn_cli.data.cache import CacheData
    from pbn_cli.model import engine, trained
    from pbn_cli.networks.embed import embed_images

    torch.set_num_threads(torch.get_num_threads())
    ws = Workspace(args.workspace)
    run = find_run(ws, args.run)
    model = trained.attach_runtime(run, trained.from_checkpoint(ws, run, "best"))
    data = CacheData(ws)
    test = data.split("test")
    images = data.gather(test.rows[: args.paintings])
    cpu = torch.device("cpu")
    net = model.network(cpu)
    print(f"{machine()}; torch {torch.__version__}, {torch.get_num_threads()} threads; run {run.name} "
          f"({model.config.model.backbone}, keep_pretrained {model.config.model.keep_pretrained}); "
          f"{len(images)} test paintings at {images.shape[1]} px", flush=True)
    pt, by_torch = best_rate(lambda: embed_images(net, lambda idx: images[idx], len(images), cpu), len(images),
                             args.repeats)
    ort, by_onnx = best_rate(lambda: model.runtime.embed(images), len(images), args.repeats)
    print(f"torch engine {pt:.2f} paintings/s; onnx engine {ort:.2f} paintings/s: {ort / pt:.2f}x; largest "
          f"difference {np.abs(by_torch - by_onnx).max():.1e}", flush=True)
    if not args.int8:
        return
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as folder:
        small = Path(folder) / "int8.onnx"
        t = time.perf_counter()
        quantize_dynamic(str(model.runtime.path), str(small), weight_type=QuantType.QInt8)
        print(f"int8: quantised in {time.perf_counter() - t:.0f} s, {small.stat().st_size / 2**20:.1f} MiB "
              f"(float: {model.runtime.path.stat().st_size / 2**20:.1f} MiB)", flush=True)
        quantised = engine.open_runtime(small)
        q, by_int8 = best_rate(lambda: quantised.embed(images), len(images), args.repeats)
        print(f"int8 engine {q:.2f} paintings/s: {q / ort:.2f}x the float onnx engine; largest difference "
              f"{np.abs(by_int8 - by_onnx).max():.1e}", flush=True)
        every = data.gather(test.rows)
        t = time.perf_counter()
        full = model.runtime.embed(every)
        print(f"test figures over {len(every)} paintings (float onnx in {time.perf_counter() - t:.0f} s): "
              f"{figures(full, test.artists)}", flush=True)
        print(f"int8: {figures(quantised.embed(every), test.artists)}", flush=True)


if __name__ == "__main__":
    main()
