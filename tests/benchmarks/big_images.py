"""Peak memory of bringing the largest paintings into the cache, and of resize's worker processes.

Each image is read in a fresh process by pbn's one image door
(``imaging.load_rgb(path, 256)``) and, as the baseline, by a plain full
decode (``Image.open(path).convert("RGB")`` with Pillow's bomb check off);
the peak RSS of each process (VmHWM, which an exec resets, unlike
ru_maxrss) is printed with the decoded size for scale.

Images (made here, seeded): a 12,000 x 9,000 JPEG (108 MP, over Pillow's
89 MP bomb limit), a 9,500 x 9,500 RGB PNG (90 MP) and a 20,000 x 12,000
greyscale PNG (240 MP).

Usage: python tests/benchmarks/big_images.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

READ = """
import json, sys, time
t = time.perf_counter()
if sys.argv[2] == "pbn":
    from pbn_cli.data.imaging import load_rgb
    out = load_rgb(sys.argv[1], 256)
    shape = out.shape
else:
    from PIL import Image
    Image.MAX_IMAGE_PIXELS = None
    with Image.open(sys.argv[1]) as im:
        shape = im.convert("RGB").size
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print(json.dumps({"seconds": time.perf_counter() - t, "shape": list(shape), "peak_mb": int(hwm) / 1024}))
"""

BASE = """
import json
import numpy, PIL.Image
import pbn_cli.data.imaging
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print(json.dumps({"peak_mb": int(hwm) / 1024}))
"""


def _make(folder: Path) -> list[tuple[Path, int]]:
    rng = np.random.default_rng(0)
    Image.MAX_IMAGE_PIXELS = None
    made = []
    for name, (w, h), mode in [("big.jpg", (12_000, 9_000), "RGB"), ("big.png", (9_500, 9_500), "RGB"),
                                ("grey.png", (20_000, 12_000), "L")]:
        small = rng.integers(0, 255, (h // 100, w // 100, 3 if mode == "RGB" else 1), dtype=np.uint8).squeeze()
        im = Image.fromarray(small).resize((w, h), Image.BILINEAR)
        path = folder / name
        im.save(path, quality=90) if name.endswith("jpg") else im.save(path, compress_level=1)
        made.append((path, w * h * 3))
    return made


def _peak(path: Path, how: str) -> dict:
    out = subprocess.run([sys.executable, "-c", READ, str(path), how], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def main() -> None:
    base = json.loads(subprocess.run([sys.executable, "-c", BASE], capture_output=True, text=True, check=True).stdout)
    print(f"a process with numpy, Pillow and pbn's imaging imported: {base['peak_mb']:.0f} MB")
    with tempfile.TemporaryDirectory() as tmp:
        for path, decoded in _make(Path(tmp)):
            ours, plain = _peak(path, "pbn"), _peak(path, "plain")
            print(f"{path.name}: {path.stat().st_size / 2**20:.0f} MiB file, {decoded / 2**20:.0f} MiB decoded as RGB; "
                  f"pbn {ours['peak_mb']:.0f} MB in {ours['seconds']:.1f} s -> {tuple(ours['shape'])}; "
                  f"plain full decode {plain['peak_mb']:.0f} MB in {plain['seconds']:.1f} s "
                  f"({plain['peak_mb'] / ours['peak_mb']:.1f}x pbn's)")


if __name__ == "__main__":
    main()
