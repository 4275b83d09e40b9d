"""The evidence's time, warm in `pbn serve`: a pair of paintings' evidence drawn by the page's service.

    .venv/bin/python tests/benchmarks/evidence_time.py -w WORKSPACE --run RUN A B [--engine onnx] [-n 5]

Loads the run once as `pbn serve` does (web/service.py), draws one
evidence to warm it, then draws the evidence of A and B (two uploads) N
times, each anew (the service's cache is bypassed), and prints the median
and range of the seconds each took: reading both files, tiling and
embedding the tiles, the picture, and the matched details. The cold
command is measured from outside as a whole process (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-w", "--workspace", type=Path, required=True)
    parser.add_argument("--run", required=True)
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--engine", default="onnx", choices=["torch", "onnx"])
    parser.add_argument("-n", type=int, default=5)
    args = parser.parse_args()

    from pbn_cli.core.workspace import Workspace
    from pbn_cli.model import trained
    from pbn_cli.web.service import Service

    ws = Workspace(args.workspace)
    model = trained.from_run(ws, args.run, engine_name=args.engine)
    device = None
    if model.runtime is None:
        import torch

        device = torch.device("cpu")
    service = Service(model, device, ws)
    files = [(Path(p).read_bytes(), Path(p).name) for p in (args.a, args.b)]
    service.evidence(files[0], files[1], "warm-up")
    times = []
    for n in range(args.n):
        t = time.perf_counter()
        found = service.evidence(files[0], files[1], f"run {n}")  # another title: drawn anew
        times.append(time.perf_counter() - t)
    service.close()
    print(f"{machine()}; run {model.name} ({model.engine}); {args.a.name} and {args.b.name}: evidence warm in the "
          f"service, median {statistics.median(times):.2f} s [{min(times):.2f}, {max(times):.2f}] over {args.n}; "
          f"{len(found['details'])} detail pairs")


if __name__ == "__main__":
    main()
