"""synth: the synthetic painting set."""

import hashlib

import pandas as pd
from PIL import Image

from pbn_cli.data.synth import QUIRKS, synth


def test_same_seed_same_files(tmp_path):
    a = synth(tmp_path / "a", artists=3, paintings=2, seed=5, min_size=64, max_size=128, workers=1)
    b = synth(tmp_path / "b", artists=3, paintings=2, seed=5, min_size=64, max_size=128, workers=2)
    assert a["paintings"] == b["paintings"] == 6
    for f in sorted((tmp_path / "a/train").iterdir()):
        assert hashlib.sha256(f.read_bytes()).digest() == hashlib.sha256((tmp_path / "b/train" / f.name).read_bytes()).digest()


def test_quirks_are_all_there(quirky_set):
    rows = pd.read_csv(quirky_set / "train_info.csv", encoding="utf-8", keep_default_na=False)
    names = set(rows["filename"])
    for expected in ("q_truncated.jpg", "q_not_an_image.jpg", "q_cmyk.jpg", "q_palette.png", "q_gray16.png", "q_exif6.jpg", "q_bomb.png", "q_missing.jpg", "../q_escape.jpg"):
        assert expected in names
    assert rows["filename"].duplicated().sum() == 1
    assert not (quirky_set / "train/q_missing.jpg").exists()
    assert Image.open(quirky_set / "train/q_cmyk.jpg").mode == "CMYK"
    assert Image.open(quirky_set / "train/q_gray16.png").mode == "I;16"
    assert Image.open(quirky_set / "train/q_exif6.jpg").getexif()[0x0112] == 6
    big = Image.open(quirky_set / "train/q_bomb.png")
    assert big.width * big.height > Image.MAX_IMAGE_PIXELS
    assert any(ord(c) > 127 for c in "".join(rows["artist"]))
    assert rows["title"].str.contains(",").any() and rows["title"].str.contains('"').any()
    assert len(QUIRKS) == 13


def test_sizes_and_formats(small_set):
    sizes = [Image.open(p).size for p in (small_set / "train").iterdir()]
    assert all(120 // 2 <= min(s) and max(s) <= 300 for s in sizes)
    formats = {p.suffix for p in (small_set / "train").iterdir()}
    assert formats == {".jpg", ".png"}
