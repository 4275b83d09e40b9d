"""pbn serve: time to ready, one compare through the page against the library's compare, and the docs' screenshots.

Usage (a workspace with an evaluated run, e.g. the demo's):
    .venv/bin/python tests/benchmarks/serve_page.py -w workspace [--run RUN] [--shots docs] [--chromium /usr/bin/chromium]

Measures, in one run on this machine:
- ready: from starting `pbn serve` until the page answers (the model loaded once);
- compare through the page (HTTP upload of two new images, embedding, verdict,
  neighbours and histogram) against `inference.compare.compare` in-process with
  the model already loaded (`pbn compare` without its start-up), and against a
  whole `pbn compare` command;
- then takes a screenshot of each of the three views with headless Chromium.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine  # noqa: E402

from pbn_cli.core.device import select_device  # noqa: E402
from pbn_cli.core.workspace import Workspace  # noqa: E402
from pbn_cli.data.cache import CacheData  # noqa: E402
from pbn_cli.inference.compare import compare  # noqa: E402
from pbn_cli.model import trained as models  # noqa: E402


def test_paintings(ws: Path, out: Path, n: int) -> list[Path]:
    """n test-split paintings of the cache written as new files (distinct bytes each time)."""
    data = CacheData(Workspace(ws))
    rows = data.split("test")
    paths = []
    for i in range(n):
        path = out / f"painting-{i}.png"
        Image.fromarray(data.gather(rows.rows[[i % len(rows)]])[0]).rotate(90 * (i // len(rows))).save(path)
        paths.append(path)
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-w", "--workspace", type=Path, required=True)
    ap.add_argument("--run", help="the run to serve (default: the latest trained run)")
    ap.add_argument("--shots", type=Path, help="folder for serve-compare.png, serve-search.png, serve-runs.png")
    ap.add_argument("--chromium", default=os.environ.get("PBN_CHROMIUM") or shutil.which("chromium"))
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="pbn-serve-bench-"))
    files = test_paintings(args.workspace, tmp, 4 * args.repeats + 4)

    started = time.perf_counter()
    chosen = ["--run", args.run] if args.run else []
    proc = subprocess.Popen([sys.executable, "-m", "pbn_cli", "serve", "-w", str(args.workspace), "--port", "0", *chosen],
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    url = line.split(" on ")[1].split()[0]
    httpx.get(url + "api/model", timeout=60).raise_for_status()
    ready = time.perf_counter() - started
    try:
        client = httpx.Client(base_url=url, timeout=120)
        client.post("api/compare", files={"a": files[-1].open("rb"), "b": files[-2].open("rb")}).raise_for_status()
        page = []
        for i in range(args.repeats):
            a, b = files[2 * i], files[2 * i + 1]
            t = time.perf_counter()
            client.post("api/compare", files={"a": a.open("rb"), "b": b.open("rb")}).raise_for_status()
            page.append(time.perf_counter() - t)

        model = models.from_run(Workspace(args.workspace), args.run)
        device = select_device("auto")
        compare(model, files[-1], files[-2], device=device)  # network built once, as in the server
        library = []
        for i in range(args.repeats):
            a, b = files[2 * args.repeats + 2 * i], files[2 * args.repeats + 2 * i + 1]
            t = time.perf_counter()
            compare(model, a, b, device=device)
            library.append(time.perf_counter() - t)
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "pbn_cli", "compare", str(files[0]), str(files[1]), "--json",
                        *chosen, "-w", str(args.workspace)], check=True, capture_output=True)
        command = time.perf_counter() - t

        print(f"machine: {machine()}")
        print(f"ready: {ready:.1f} s from `pbn serve` to the first answer")
        print(f"compare through the page (median of {args.repeats}): {np.median(page) * 1000:.0f} ms "
              f"(verdict, both views, 2 x 5 neighbours, the histogram's place)")
        print(f"compare in-process, model loaded (pbn compare without start-up): {np.median(library) * 1000:.0f} ms; "
              f"ratio page / library {np.median(page) / np.median(library):.2f}")
        print(f"a whole `pbn compare` command: {command:.1f} s")
        if args.shots and args.chromium:
            shots(url, files, args.shots, args.chromium)
    finally:
        proc.send_signal(2)
        proc.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)


def shots(url: str, files: list[Path], folder: Path, chromium: str) -> None:
    from playwright.sync_api import sync_playwright

    folder.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1180, "height": 900})
        page.set_default_timeout(120_000)
        page.goto(url)
        page.wait_for_function("document.getElementById('model').textContent.startsWith('run ')")
        page.set_input_files("#file-a", str(files[0]))
        page.set_input_files("#file-b", str(files[1]))
        page.click("#compare-go")
        page.wait_for_selector("#compare-result", state="visible")
        loaded = "[...document.images].filter(i => i.offsetParent).every(i => i.complete && i.naturalWidth > 0)"
        page.wait_for_selector("#compare-evidence", state="visible")
        page.wait_for_selector("#compare-details .detail")  # the matched details under the evidence
        page.wait_for_function(loaded)
        page.screenshot(path=str(folder / "serve-compare.png"), full_page=True)
        verdict = {k: page.inner_text(f"#{k}") for k in ("verdict", "probability", "distance", "threshold")}
        for view, drop in (("search", "q"), ("attribute", "h")):  # one painting dropped on each of these views
            page.click(f"nav button[data-view={view}]")
            page.set_input_files(f"#file-{drop}", str(files[0]))
            page.click(f"#{view}-go")
            page.wait_for_selector(f"#{view}-result", state="visible")
            if view == "attribute":
                page.wait_for_selector("#attribute-details .detail")
            page.wait_for_function(loaded)
            page.screenshot(path=str(folder / f"serve-{view}.png"), full_page=True)
        page.click("nav button[data-view=runs]")
        page.wait_for_selector("#run-table tr:nth-child(2)")
        page.locator("#run-table tr:nth-child(2) button").first.click()
        page.wait_for_selector("#report table")
        page.wait_for_function("[...document.querySelectorAll('#report img')].every(i => i.complete)")
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(folder / "serve-runs.png"), full_page=False)
        browser.close()
    print("page showed:", json.dumps(verdict), "for", files[0].name, files[1].name)
    names = ("serve-compare.png", "serve-search.png", "serve-attribute.png", "serve-runs.png")
    print(f"screenshots: {', '.join(str(folder / n) for n in names)}")


if __name__ == "__main__":
    main()
