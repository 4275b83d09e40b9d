"""split: artist-disjoint, seeded, stable, independent of row order."""

import math

import pandas as pd
from conftest import pipeline
from hypothesis import given, settings
from hypothesis import strategies as st

from pbn_cli.stages.split import assign_splits

artists_st = st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=60, unique=True)


def _frame(artists, counts):
    rows = [(f"{a}/{k}.jpg", a) for a, n in zip(artists, counts) for k in range(n)]
    return pd.DataFrame(rows, columns=["image_id", "artist"])


@st.composite
def collections(draw):
    artists = draw(artists_st)
    counts = draw(st.lists(st.integers(2, 15), min_size=len(artists), max_size=len(artists)))
    return _frame(artists, counts)


@settings(max_examples=60, deadline=None)
@given(collections(), st.floats(0, 0.9), st.floats(0, 0.5), st.integers(0, 5), st.randoms())
def test_split_properties(frame, test_frac, val_frac, seed, rnd):
    split = assign_splits(frame["image_id"], frame["artist"], test_frac, val_frac, seed=seed)
    by_artist = split.groupby(frame["artist"]).agg(set)
    # no artist both in test and in train/val
    assert all(s == {"test"} or "test" not in s for s in by_artist)
    # every artist with val paintings keeps at least two in train
    train_counts = frame[split == "train"].groupby("artist").size()
    for artist in frame.loc[split == "val", "artist"].unique():
        assert train_counts[artist] >= 2
    # deterministic and independent of row order
    order = list(frame.index)
    rnd.shuffle(order)
    shuffled = frame.loc[order]
    again = assign_splits(shuffled["image_id"], shuffled["artist"], test_frac, val_frac, seed=seed)
    assert again.loc[frame.index].equals(split)


@settings(max_examples=40, deadline=None)
@given(st.integers(200, 600), st.floats(0.05, 0.5), st.integers(0, 1000))
def test_fractions_are_within_sampling_error(n_artists, frac, seed):
    frame = _frame([f"artist {i}" for i in range(n_artists)], [10] * n_artists)
    split = assign_splits(frame["image_id"], frame["artist"], frac, 0.1, seed=seed)
    test_artists = frame.loc[split == "test", "artist"].nunique()
    sd = math.sqrt(n_artists * frac * (1 - frac))
    assert abs(test_artists - frac * n_artists) <= 5 * sd + 1
    trainval = (split != "test").sum()
    val_share = (split == "val").sum() / trainval
    assert abs(val_share - 0.1) <= 5 * math.sqrt(0.09 / trainval) + 0.01


def test_adding_artists_never_moves_existing_ones():
    base = _frame([f"a{i}" for i in range(50)], [6] * 50)
    more = pd.concat([base, _frame([f"b{i}" for i in range(50)], [6] * 50)], ignore_index=True)
    s1 = assign_splits(base["image_id"], base["artist"], 0.2, 0.1)
    s2 = assign_splits(more["image_id"], more["artist"], 0.2, 0.1)
    assert s2[: len(base)].equals(s1)


def test_val_artists_are_held_out_whole():
    frame = _frame([f"a{i}" for i in range(200)], [5] * 200)
    split = assign_splits(frame["image_id"], frame["artist"], 0.2, val_artists=0.25)
    sets = split.groupby(frame["artist"]).agg(lambda s: frozenset(s))
    assert all(len(s) == 1 for s in sets)
    assert 20 <= (sets == frozenset({"val"})).sum() <= 65


def test_quirks_split_and_force_reproduces(pbn, quirky_set):
    pipeline(pbn, quirky_set, "clean", "split")
    first = pd.read_parquet(pbn.workspace / "manifests/split.parquet")
    result = pbn("split")
    assert "up to date" in result.output
    pbn("split", "--force")
    second = pd.read_parquet(pbn.workspace / "manifests/split.parquet")
    assert first[["image_id", "split"]].equals(second[["image_id", "split"]])
    assert set(first["split"]) == {"train", "val", "test"}


def test_bad_fraction_is_exit_2(pbn, small_set):
    pipeline(pbn, small_set, "clean")
    result = pbn("split", "--test-artists", "1.5", expect=2)
    assert result.output.strip() == "Error: --test-artists must be in [0, 1), got 1.5"
