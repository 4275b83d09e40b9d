"""The docs' picture of a run watched in TensorBoard: its scalars, as a user sees them.

    python tests/benchmarks/tensorboard_shot.py -w WORKSPACE --run RUN [--out docs/tensorboard.png]
        [--chromium /usr/bin/chromium]

Starts ``tensorboard --logdir <workspace>/runs`` (the `tracking` extra: the
command the README gives) on a free local port, waits until it answers,
opens its time-series view in headless Chromium (playwright driving the
system's browser; no browser download), filters it to the run and to its
loss, learning rate and validation scalars, smoothing off (an epoch is one
point), and saves one screenshot. Then stops TensorBoard.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url: str, seconds: float = 60) -> None:
    end = time.time() + seconds
    while time.time() < end:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"TensorBoard did not answer at {url} within {seconds:.0f} s")


def shoot(url: str, out: Path, chromium: str, tags: str, run: str) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1500, "height": 1000}, device_scale_factor=1)
        page.goto(f"{url}/?darkMode=false#timeseries")
        page.wait_for_selector("input[placeholder*='Filter tags']", timeout=60_000)
        page.fill("input[placeholder*='Filter runs']", f"^{run}/")
        page.fill("input[placeholder*='Filter tags']", tags)
        smoothing = page.locator("input[type='number']").first  # the scalars' smoothing: epochs are few points
        if smoothing.count():
            smoothing.fill("0")
            smoothing.press("Enter")
        outliers = page.get_by_text("Ignore outliers in chart scaling")
        if outliers.count():
            outliers.first.click(timeout=5000)  # on by default: it crops the first epochs away
        close = page.locator("button[aria-label*='Close']:visible")
        if close.count():
            close.first.click(timeout=5000)  # the settings pane hides a third of the charts
        time.sleep(5)  # the charts draw after their data arrives
        page.screenshot(path=str(out))
        browser.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-w", "--workspace", type=Path, required=True)
    ap.add_argument("--run", required=True)
    ap.add_argument("--out", type=Path, default=Path("docs/tensorboard.png"))
    ap.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    ap.add_argument("--tags", default="train/loss|val/|lr/group0", help="TensorBoard's tag filter (a regular expression)")
    args = ap.parse_args()
    logdir = args.workspace / "runs"
    if not (logdir / args.run / "tensorboard").is_dir():
        raise SystemExit(f"run {args.run} has no tensorboard folder: train it with `pbn[tracking]` installed")
    tensorboard = Path(sys.executable).with_name("tensorboard")
    port = free_port()
    server = subprocess.Popen([str(tensorboard), "--logdir", str(logdir), "--port", str(port), "--host", "127.0.0.1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_up(url)
        shoot(url, args.out, args.chromium, args.tags, args.run)
        print(f"wrote {args.out}")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
