"""resize: the cache, its manifest, resuming after SIGKILL, incremental runs."""

import hashlib
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from conftest import pipeline
from PIL import Image

from pbn_cli.data.synth import synth


def _sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _manifest(ws, name="resize"):
    return pd.read_parquet(ws / "manifests" / f"{name}.parquet")


def test_quirks_are_cached_or_rejected(pbn, quirky_set):
    pipeline(pbn, quirky_set, "clean", "split", "resize")
    kept = _manifest(pbn.workspace).set_index("image_id")
    clean = _manifest(pbn.workspace, "clean")
    rejected = _manifest(pbn.workspace, "resize.rejected").set_index("image_id")["reason"]
    assert list(rejected.index) == ["q_truncated.jpg"]
    assert rejected.iloc[0].startswith("truncated or corrupt image")
    assert len(kept) + len(rejected) == len(clean)
    assert kept["cache_row"].is_unique
    cache = np.load(pbn.workspace / "cache/images_256.npy", mmap_mode="r")
    assert cache.shape[1:] == (256, 256, 3) and cache.dtype == np.uint8
    for image_id in ("q_cmyk.jpg", "q_palette.png", "q_gray16.png", "q_exif6.jpg", "q_bomb.png"):
        pixels = cache[kept.loc[image_id, "cache_row"]]
        assert pixels.std() > 5, image_id  # a real painting, not a blank row
    grey = cache[kept.loc["q_gray16.png", "cache_row"]].astype(int)
    assert (grey[..., 0] == grey[..., 1]).all() and grey.max() > 150  # scaled, not clipped to 255 or crushed
    # EXIF: the stored file is landscape, the painting is portrait: the cache matches the upright painting
    stored = np.asarray(Image.open(quirky_set / "train/q_exif6.jpg").convert("RGB").resize((256, 256)))
    upright = cache[kept.loc["q_exif6.jpg", "cache_row"]]
    assert np.abs(upright.astype(int) - stored).mean() > 20
    assert (pbn.workspace / "cache/preview.png").exists()
    assert Image.open(pbn.workspace / "cache/preview.png").width > 1000


def test_rerun_is_up_to_date_and_other_size_needs_force(pbn, small_set):
    pipeline(pbn, small_set, "clean", "resize")
    digest = _sha(pbn.workspace / "cache/images_256.npy")
    assert "up to date" in pbn("resize").output
    result = pbn("resize", "--size", "64", expect=2)
    assert "one size per workspace" in result.output and "--force" in result.output
    pbn("resize", "--size", "64", "--force")
    assert not (pbn.workspace / "cache/images_256.npy").exists()
    assert np.load(pbn.workspace / "cache/images_64.npy").shape == (60, 64, 64, 3)
    assert digest


def test_incremental_run_appends_only_new_paintings(pbn, small_set, copy_of, tmp_path):
    data = copy_of(small_set)
    csv = data / "train_info.csv"
    rows = pd.read_csv(csv, keep_default_na=False)
    rows.iloc[:40].to_csv(csv, index=False)
    pipeline(pbn, data, "clean", "resize")
    first = _manifest(pbn.workspace).set_index("image_id")["cache_row"]
    cache_path = pbn.workspace / "cache/images_256.npy"
    old = np.load(cache_path)[: len(first)].copy()
    rows.to_csv(csv, index=False)
    pbn("ingest", csv)
    pbn("clean")
    out = pbn("resize")
    assert "kept 60 rows" in out.output
    second = _manifest(pbn.workspace).set_index("image_id")["cache_row"]
    assert (second[first.index] == first).all()  # old rows kept their place
    assert sorted(second.drop(first.index)) == list(range(40, 60))
    assert np.array_equal(np.load(cache_path)[:40], old)


@pytest.fixture(scope="module")
def medium_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("medium")
    synth(out, artists=10, paintings=10, seed=3, min_size=500, max_size=1100)
    return out


def _resize_process(ws):
    cmd = [sys.executable, "-m", "pbn_cli", "resize", "-w", str(ws), "--workers", "1"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _journal_lines(ws) -> int:
    try:
        return (ws / "cache/images_256.journal").read_text().count("\n")
    except FileNotFoundError:
        return 0


@pytest.mark.parametrize("kill_at_lines", [1, 33, 65])
def test_sigkill_then_resume_gives_identical_cache(tmp_path, medium_set, kill_at_lines):
    from conftest import Pbn

    calm, killed = Pbn(tmp_path / "calm"), Pbn(tmp_path / "killed")
    for p in (calm, killed):
        pipeline(p, medium_set, "clean")
    calm("resize")
    proc = _resize_process(killed.workspace)
    deadline = time.monotonic() + 60
    while _journal_lines(killed.workspace) < kill_at_lines and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed.workspace / "manifests/resize.parquet").exists(), "killed too late"
    assert _journal_lines(killed.workspace) >= kill_at_lines
    killed("resize")
    assert _sha(calm.workspace / "cache/images_256.npy") == _sha(killed.workspace / "cache/images_256.npy")
    a, b = _manifest(calm.workspace), _manifest(killed.workspace)
    assert a[["image_id", "cache_row", "phash"]].equals(b[["image_id", "cache_row", "phash"]])
    assert not list((killed.workspace / "cache").glob("*.journal"))


def _children(pid: int) -> list[int]:
    """The live processes whose parent is ``pid`` (from /proc)."""
    out = []
    for stat in os.listdir("/proc"):
        if stat.isdigit():
            try:
                fields = open(f"/proc/{stat}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                out.append(int(stat))
    return out


def _alive(pid: int) -> bool:
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads processes from /proc")
def test_killing_the_parent_of_a_resize_leaves_no_worker_and_a_rerun_works(tmp_path, medium_set):
    """Only the parent killed: its workers die with it (they would hold the workspace's lock), and a rerun runs."""
    from conftest import Pbn

    killed = Pbn(tmp_path / "killed")
    pipeline(killed, medium_set, "clean")
    cmd = [sys.executable, "-m", "pbn_cli", "resize", "-w", str(killed.workspace), "--workers", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, workers = time.monotonic() + 60, []
    while (len(workers) < 2 or _journal_lines(killed.workspace) < 2) and proc.poll() is None \
            and time.monotonic() < deadline:  # working: its two workers forked, a chunk written
        workers = _children(proc.pid)
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert workers, ("the resize ended before its workers could be seen", proc.returncode,
                     _journal_lines(killed.workspace))
    deadline = time.monotonic() + 10
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(w) for w in workers)
    killed("resize")  # not refused: no worker holds the lock
    assert (killed.workspace / "manifests/resize.parquet").exists()
