"""Training throughput and peak memory of pbn's own training step, against the reference's loop.

What is timed is the shipped code: a workspace of random paintings is
written on disk (manifests and a 256-px cache, no decoding), ``pbn train``'s
``setup`` builds the run (the real sampler, loader, objective, optimiser
groups and schedule of the ``default`` recipe, without downloading weights),
and ``train_one_epoch`` runs a fixed number of steps. Variants:

- ``pbn step``: exactly as `pbn train` runs it (bf16 autocast on CUDA,
  channels-last, P x K batches, all-triplet mining);
- ``pbn step, autocast off``: the same with the autocast helper patched to
  full precision, to show what bf16 buys (channels-last stays: pbn has no
  contiguous path);
- ``pbn step, --compile``: the same compiled with torch.compile;
- the reference's loop: batch of 4 triplets, fp32, each branch's forward on
  its own, items copied to the device one by one.

Prints images/s and peak memory. Run by tests/benchmarks/gpu_check.sh;
``--device cpu --steps 1`` is the smoke test that keeps the script runnable.

Usage: python tests/benchmarks/gpu_train.py [--device cuda] [--steps 30] [--batch 128] [--paintings 768]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pbn_cli.core.manifest import Record, write_manifest
from pbn_cli.core.runs import Run
from pbn_cli.core.workspace import Workspace
from pbn_cli.data import cache
from pbn_cli.networks.embedder import Embedder
from pbn_cli.networks.losses import TripletLoss
from pbn_cli.networks.recipe import ModelConfig
from pbn_cli.networks.views import to_float
from pbn_cli.training import objective
from pbn_cli.training.loop import setup, train_one_epoch
from pbn_cli.training.presets import resolve


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def fixed_workspace(root: Path, paintings: int = 768, artists: int = 96, size: int = 256) -> Workspace:
    """Manifests and a cache of random paintings, as resize would leave them (every artist in train, 10% val)."""
    ws = Workspace(root)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (paintings, size, size, 3), dtype=np.uint8)
    path = cache.cache_path(ws.cache, size)
    cache.ensure_rows(path, paintings, size)
    np.load(path, mmap_mode="r+")[:] = pixels
    ids = [f"{i:06d}.png" for i in range(paintings)]
    split = np.where(np.arange(paintings) % 10 == 0, "val", "train")
    frame = pd.DataFrame({"image_id": ids, "filename": ids, "path": ids, "artist": [f"a{i % artists}" for i in range(paintings)],
                          "split": split})
    write_manifest(ws.manifest("split"), frame, Record("split", extra={"image_root": str(root)}))
    resized = frame[["image_id"]].assign(cache_row=np.arange(paintings), digest=[cache.pixels_digest(p) for p in pixels])
    write_manifest(ws.manifest("resize"), resized, Record("resize", {"size": size, "fit": "crop"}))
    return ws


def pbn_step(ws: Workspace, backbone: str, device: torch.device, steps: int, batch: int, compile_model: bool,
             name: str) -> float:
    """images/s of train_one_epoch over ``steps`` P x K batches of the default recipe (no pretrained download)."""
    config = resolve("default", "triplet", {"backbone": backbone, "pretrained": False, "keep_pretrained": 0.0,
                                            "input_size": 224, "batch_size": batch, "device": str(device),
                                            "compile": compile_model})
    state = setup(ws, config, Run(ws.runs / name), resume=False, device=device)
    batches = (state.sampler.epoch(0) * (1 + (steps + 5) // max(1, len(state.sampler.epoch(0)))))[: steps + 5]
    generator = torch.Generator().manual_seed(0)
    train_one_epoch(state, batches[:5], generator)  # warm-up (and compilation)
    state.cursor.restart()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    _, images = train_one_epoch(state, batches[5:], generator)
    _sync(device)
    return images / (time.perf_counter() - t)


def reference_loop(backbone: str, device: torch.device, steps: int, ws: Workspace) -> float:
    """Batch of 4 triplets, fp32, each branch's forward on its own, items copied one by one."""
    images = np.load(cache.cache_path(ws.cache, 256), mmap_mode="r")
    torch.manual_seed(0)
    model = Embedder(ModelConfig(backbone, 224, None, normalize=False, pretrained=False, keep_pretrained=0.0)).to(device)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    loss_fn = TripletLoss(1.0)
    rng = np.random.default_rng(0)

    def branch():
        items = [to_float(torch.from_numpy(np.array(images[i : i + 1, :224, :224])).to(device))
                 for i in rng.integers(0, len(images), 4)]
        return model(torch.cat(items))

    def step():
        a, p, n = branch(), branch(), branch()
        loss = loss_fn(a, p, n)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    _sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return 12 * steps / (time.perf_counter() - t)


@contextlib.contextmanager
def autocast_off():
    """The shipped step with its bf16 autocast patched to full precision."""
    shipped = objective.autocast
    objective.autocast = lambda device: torch.autocast(device.type, enabled=False)
    try:
        yield
    finally:
        objective.autocast = shipped


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--backbones", default="resnet50,compact")
    ap.add_argument("--paintings", type=int, default=768, help="random paintings in the workspace (96 artists)")
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        print(f"device: {torch.cuda.get_device_name(device)}; torch {torch.__version__}")
    precision = "bf16 autocast" if device.type == "cuda" else "fp32 (no autocast on the CPU)"
    variants = [(f"pbn step ({precision}, channels-last)", False, contextlib.nullcontext),
                ("pbn step, autocast off (fp32, channels-last)", False, autocast_off)]
    if not args.no_compile:
        variants.append((f"pbn step, --compile ({precision})", True, contextlib.nullcontext))
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        ws = fixed_workspace(Path(tmp) / "ws", args.paintings, min(96, args.paintings // 8))
        for backbone in args.backbones.split(","):
            for k, (name, comp, patch) in enumerate(variants):
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats()
                with patch():
                    ips = pbn_step(ws, backbone, device, args.steps, args.batch, comp, f"{backbone}-{k}")
                peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
                results.append({"backbone": backbone, "variant": name, "batch": args.batch, "images_per_s": round(ips, 1),
                                "peak_gib": round(peak, 2)})
                print(json.dumps(results[-1]), flush=True)
            ips = reference_loop(backbone, device, max(2, args.steps), ws)
            results.append({"backbone": backbone, "variant": "reference loop (batch 4, fp32, branch by branch)",
                            "batch": 4, "images_per_s": round(ips, 1)})
            print(json.dumps(results[-1]), flush=True)
    for r in results:
        if r["batch"] == 4:
            continue
        ref = next(x for x in results if x["backbone"] == r["backbone"] and x["batch"] == 4)["images_per_s"]
        print(f"{r['backbone']:9s} {r['variant']:48s} {r['images_per_s']:9.1f} images/s  "
              f"{r['images_per_s'] / ref:6.1f}x the reference loop  peak {r['peak_gib']} GiB")


if __name__ == "__main__":
    main()
