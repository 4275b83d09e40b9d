"""Perceptual hashes and near-duplicate groups, against brute force."""

import io

import numpy as np
import pandas as pd
from conftest import pipeline
from PIL import Image

from pbn_cli.data.near_duplicates import hamming, near_duplicate_groups, phash
from pbn_cli.data.synth import make_hand, paint


def _brute_groups(hashes, t):
    n = len(hashes)
    label = list(range(n))
    for i in range(n):
        for j in range(i + 1, n):
            if bin((int(hashes[i]) ^ int(hashes[j])) & (2**64 - 1)).count("1") <= t:
                a, b = label[i], label[j]
                label = [a if x == b else x for x in label]
    return label


def test_hamming_matches_python_popcount():
    rng = np.random.default_rng(0)
    a, b = rng.integers(-(2**63), 2**63 - 1, 100), rng.integers(-(2**63), 2**63 - 1, 100)
    expected = [bin((int(x) ^ int(y)) & (2**64 - 1)).count("1") for x, y in zip(a, b)]
    assert list(hamming(a, b)) == expected


def test_groups_match_brute_force():
    rng = np.random.default_rng(1)
    hashes = []
    for h in rng.integers(0, 2**63, 40, dtype=np.uint64) * np.uint64(2) + np.uint64(1):
        hashes.append(h)
        for _ in range(rng.integers(0, 3)):  # near copies: flip a few bits
            flips = rng.choice(64, rng.integers(0, 7), replace=False)
            hashes.append(h ^ np.uint64(sum(1 << int(f) for f in flips)))
    hashes = np.array(hashes, dtype=np.uint64).view(np.int64)
    groups = near_duplicate_groups(hashes, max_distance=4)
    brute = _brute_groups(hashes, 4)
    sizes = {g: brute.count(g) for g in brute}
    for i in range(len(hashes)):
        assert (groups[i] >= 0) == (sizes[brute[i]] > 1)
        for j in range(len(hashes)):
            if groups[i] >= 0 and groups[j] >= 0:
                assert (groups[i] == groups[j]) == (brute[i] == brute[j])


def test_phash_survives_reencoding_and_rescaling_but_tells_paintings_apart():
    hand = make_hand(np.random.default_rng(3))
    a = paint(hand, 400, 300, np.random.default_rng(1))
    b = paint(hand, 400, 300, np.random.default_rng(2))
    buf = io.BytesIO()
    a.resize((300, 225)).save(buf, "JPEG", quality=60)
    copy = Image.open(buf).resize((400, 300))
    h = [phash(np.asarray(im.resize((256, 256)))) for im in (a, copy, b)]
    d = hamming(np.array(h[:1] * 2), np.array(h[1:]))
    assert d[0] <= 4 < d[1]


def test_resize_reports_near_duplicates_straddling_splits(pbn, small_set, copy_of):
    data = copy_of(small_set)
    rows = pd.read_csv(data / "train_info.csv", keep_default_na=False)
    src = rows.iloc[0]
    other = rows[rows["artist"] != src["artist"]].iloc[0]["artist"]
    im = Image.open(data / "train" / src["filename"]).convert("RGB")
    im.resize((im.width * 3 // 4, im.height * 3 // 4)).save(data / "train/copy.jpg", quality=70)
    rows.loc[len(rows)] = {**src.to_dict(), "filename": "copy.jpg", "artist": other}
    rows.to_csv(data / "train_info.csv", index=False)
    pipeline(pbn, data, "clean", "split")
    out = pbn("resize").output
    kept = pd.read_parquet(pbn.workspace / "manifests/resize.parquet").set_index("image_id")
    assert kept.loc["copy.jpg", "near_duplicate_group"] == kept.loc[src["filename"], "near_duplicate_group"] >= 0
    assert "1 groups of near-identical paintings (2 paintings)" in out
