"""Channels-last memory layout against PyTorch's default (contiguous) layout, on this machine's device.

    .venv/bin/python tests/benchmarks/channels_last.py [--device cpu] [--repeats 5]

For the quick preset's compact CNN (96 and 128 px) and the cpu preset's
EfficientNet-Lite0 (224 px, no weights needed for speed): images per second
of a training step (forward, backward, AdamW step; batch 32) and of
embedding (eval mode, no gradients), best of ``--repeats`` after one warm-up,
in both layouts, measured in the same run; prints the ratios. pbn keeps
every network channels-last (networks/embedder.py); the figures are in
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine  # noqa: E402

from pbn_cli.networks import embedder  # noqa: E402
from pbn_cli.training.presets import resolve  # noqa: E402

CASES = [("quick", {}), ("quick", {"input_size": 128}), ("cpu", {"pretrained": False, "levels": 1}),
         ("cpu", {"pretrained": False})]


def speed(preset: str, over: dict, layout: torch.memory_format, train: bool, device: torch.device, repeats: int) -> float:
    embedder.MEMORY_FORMAT = layout  # the one place pbn sets it, weights and inputs alike
    config = resolve(preset, "triplet", dict(over)).model
    net = embedder.Embedder(config, load_pretrained=False).to(device).train(train)
    opt = torch.optim.AdamW(net.parameters(), 1e-4)
    x = torch.rand(32, 3, config.input_size, config.input_size, device=device).contiguous(memory_format=layout)
    best = float("inf")
    for i in range(repeats + 1):
        t = time.perf_counter()
        if train:
            net(x).pow(2).mean().backward()
            opt.step()
            opt.zero_grad()
        else:
            with torch.no_grad():
                net(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i:
            best = min(best, time.perf_counter() - t)
    return 32 / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    device = torch.device(args.device)
    print(f"{machine()}; torch {torch.__version__}; {torch.get_num_threads()} threads; device {device}")
    print("| network | size | step | contiguous img/s | channels-last img/s | ratio |")
    print("| --- | --- | --- | --- | --- | --- |")
    for preset, over in CASES:
        config = resolve(preset, "triplet", dict(over)).model
        name = config.backbone + (f" (levels {config.levels})" if config.levels > 1 else "")
        for train in (True, False):
            base = speed(preset, over, torch.contiguous_format, train, device, args.repeats)
            last = speed(preset, over, torch.channels_last, train, device, args.repeats)
            print(f"| {name} | {config.input_size} | {'train' if train else 'embed'} | {base:.1f} | {last:.1f} | "
                  f"{last / base:.2f} |", flush=True)


if __name__ == "__main__":
    main()
