"""clean: duplicate files and artists with too few paintings."""

import pandas as pd
from conftest import pipeline


def test_quirks_clean(pbn, quirky_set):
    pipeline(pbn, quirky_set, "clean")
    kept = pd.read_parquet(pbn.workspace / "manifests/clean.parquet")
    rejected = pd.read_parquet(pbn.workspace / "manifests/clean.rejected.parquet").set_index("image_id")["reason"]
    assert kept.groupby("artist").size().min() >= 2
    assert {"Still Life with Apples", "Portrait of a Lady, 1650"}.isdisjoint(kept["artist"])
    dup_same = [i for i in rejected.index if i.startswith("q_dup_same")]
    assert len(dup_same) == 1 and rejected[dup_same[0]].startswith("duplicate file: same bytes as ")
    original = rejected[dup_same[0]].rsplit(" ", 1)[1]
    assert original in set(kept["image_id"])
    conflicting = rejected[rejected.str.startswith("duplicate file attributed to different artists")]
    assert len(conflicting) == 2
    assert kept["sha256"].notna().sum() < len(kept)  # hashed only where sizes collide


def test_min_paintings_option(pbn, small_set):
    pipeline(pbn, small_set)
    pbn("clean", "--min-paintings", "6")
    kept = pd.read_parquet(pbn.workspace / "manifests/clean.parquet")
    assert kept.empty  # every artist has 5
    rejected = pd.read_parquet(pbn.workspace / "manifests/clean.rejected.parquet")
    assert rejected["reason"].str.startswith("artist has fewer than 6 paintings").all()


def test_clean_without_ingest_says_what_to_run(pbn):
    result = pbn("clean", expect=2)
    assert "no ingest manifest" in result.output and "run `pbn ingest` first" in result.output
