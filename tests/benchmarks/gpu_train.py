"""Training throughput and peak memory on a GPU, against the reference's own loop.

For each backbone (reference, resnet50) at 256 px, a fixed number of
training steps on synthetic cache data: fp32; bf16 autocast + channels_last;
the same compiled once with torch.compile; and the reference's loop (batch
4, fp32, one branch at a time, per-item host copies). Prints images/s and
peak memory. Run by tests/benchmarks/gpu_check.sh; `--device cpu --steps 2`
is a smoke test that the script still runs.

Usage: python tests/benchmarks/gpu_train.py [--device cuda] [--steps 30] [--batch 96]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from pbn_cli.model.embedder import Embedder, ModelConfig
from pbn_cli.model.losses import TripletLoss
from pbn_cli.model.mining import mined_triplet_loss
from pbn_cli.model.views import random_views, to_float


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def ours(backbone, device, steps, batch, bf16, channels_last, compile_model, cache):
    torch.manual_seed(0)
    model = Embedder(ModelConfig(backbone, 256, 512 if backbone != "reference" else None)).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    net = torch.compile(model) if compile_model else model
    opt = torch.optim.AdamW(model.parameters(), 3e-4)
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(batch, device=device) // 4
    rng = np.random.default_rng(0)

    def step():
        rows = np.sort(rng.integers(0, len(cache), batch))
        x = torch.from_numpy(cache[rows])
        x = (x.pin_memory() if device.type == "cuda" else x).to(device, non_blocking=True)
        views = random_views(x, 256, "crop", gen, hflip=0.5)
        if channels_last:
            views = views.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            emb = net(views)
        loss = mined_triplet_loss(emb.float(), labels, "semihard", TripletLoss(0.2))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3 if not compile_model else 5):  # warm-up (and compilation)
        step()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return batch * steps / (time.perf_counter() - t)


def reference_loop(backbone, device, steps, cache):
    """Batch of 4 triplets, fp32, each branch's forward on its own, items copied one by one."""
    torch.manual_seed(0)
    model = Embedder(ModelConfig(backbone, 256, None, normalize=False)).to(device)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    loss_fn = TripletLoss(1.0)
    rng = np.random.default_rng(0)

    def branch():
        items = [to_float(torch.from_numpy(cache[i : i + 1]).to(device)) for i in rng.integers(0, len(cache), 4)]
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=96)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--backbones", default="reference,resnet50")
    args = ap.parse_args()
    device = torch.device(args.device)
    cache = np.random.default_rng(0).integers(0, 256, (512, 256, 256, 3), dtype=np.uint8)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        print(f"device: {torch.cuda.get_device_name(device)}; torch {torch.__version__}")
    results = []
    backbones = args.backbones.split(",")
    for backbone in backbones:
        variants = [("fp32", False, False, False), ("bf16+channels_last", device.type == "cuda", True, False)]
        if not args.no_compile:
            variants.append(("bf16+channels_last+compile", device.type == "cuda", True, True))
        for name, bf16, cl, comp in variants:
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            ips = ours(backbone, device, args.steps, args.batch, bf16, cl, comp, cache)
            peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
            results.append({"backbone": backbone, "variant": name, "batch": args.batch, "images_per_s": round(ips, 1), "peak_gib": round(peak, 2)})
            print(json.dumps(results[-1]), flush=True)
        ips = reference_loop(backbone, device, max(2, args.steps), cache)
        results.append({"backbone": backbone, "variant": "reference loop (batch 4, fp32, branch by branch)", "batch": 4, "images_per_s": round(ips, 1)})
        print(json.dumps(results[-1]), flush=True)
    for backbone in backbones:
        ref = next(r for r in results if r["backbone"] == backbone and r["batch"] == 4)["images_per_s"]
        for r in results:
            if r["backbone"] == backbone and r["batch"] != 4:
                print(f"{backbone:9s} {r['variant']:28s} {r['images_per_s']:9.1f} images/s  {r['images_per_s'] / ref:6.1f}x the reference loop  peak {r['peak_gib']} GiB")


if __name__ == "__main__":
    main()
