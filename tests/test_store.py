"""The embedding store and search at scale: paintings embedded once, added and removed, filled by two processes or by
torchrun, searched exactly in chunks or through FAISS, filtered by the workspace's columns."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from pbn_cli.cli import app
from pbn_cli.core.workspace import Workspace
from pbn_cli.data.paths import image_root
from pbn_cli.data.synth import synth
from pbn_cli.inference import filters, index
from pbn_cli.inference.search import Gallery, exact_nearest
from pbn_cli.data.cache import SplitRows
from pbn_cli.model.store import Store, StoreFollower, all_stores, model_store, open_store, read_chunk

runner = CliRunner()


def pbn(*args, expect=0):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == expect, (result.output, result.exception)
    return result


def _store_rows(ws: Path) -> pd.DataFrame:
    (store,) = all_stores(Workspace(ws))
    parts = [read_chunk(p) for p in store.chunks()]
    return pd.DataFrame({"image_id": sum((p[0] for p in parts), []), "digest": sum((p[1] for p in parts), []),
                         "embedding": [e for p in parts for e in p[2]]})


def test_exact_search_in_chunks_equals_a_naive_loop():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(300, 8)).astype(np.float32)
    g = Gallery(pd.DataFrame({"image_id": range(300)}), emb)
    queries = rng.normal(size=(5, 8)).astype(np.float32)
    keep = rng.uniform(size=300) < 0.6
    for chunk in (7, 64, 1000):
        idx, d2 = exact_nearest(g, queries, 10, keep, chunk=chunk)
        for q, row, dist in zip(queries, idx, d2):
            naive = sorted((float(((emb[i] - q) ** 2).sum()), i) for i in range(300) if keep[i])[:10]
            assert list(row) == [i for _, i in naive]
            assert dist == pytest.approx([d for d, _ in naive], rel=1e-4, abs=1e-5)
    idx, d2 = exact_nearest(g, queries[:1], 400)  # more asked for than there are: the rest is -1 / inf
    assert (idx[0, 300:] == -1).all() and np.isinf(d2[0, 300:]).all() and len(set(idx[0, :300])) == 300


def _partial_workspace(root: Path, keep_per_artist: int) -> tuple[Path, Path]:
    """A synthetic set of 10 artists x 8 paintings; the workspace ingests the first ``keep_per_artist`` of each."""
    data = root / "data"
    synth(data, artists=10, paintings=8, seed=5, min_size=64, max_size=96)
    full = pd.read_csv(data / "train_info.csv", dtype=str)
    part = full.groupby("artist", group_keys=False).head(keep_per_artist)
    part.to_csv(data / "part.csv", index=False)
    ws = root / "ws"
    for args in (["ingest", data / "part.csv", "--images", data / "train"], ["clean"], ["split"], ["resize", "--size", "64"],
                 ["train", "--preset", "quick", "--input-size", "32", "--embedding-dim", "8", "--batch-size", "8",
                  "--epochs", "1", "--device", "cpu", "--run", "r"], ["eval", "--split", "val", "--device", "cpu"]):
        pbn(*args, "-w", ws)
    return ws, data


def test_paintings_added_are_the_only_ones_embedded_and_removed_ones_leave_the_results(tmp_path):
    ws, data = _partial_workspace(tmp_path, 6)
    first = pbn("embed", "--device", "cpu", "-w", ws)
    n_before = len(pd.read_parquet(ws / "manifests/resize.parquet"))
    assert f"{n_before:,} in the store" in first.stdout
    again = pbn("embed", "--device", "cpu", "-w", ws)
    assert "0 paintings embedded now" in again.stdout
    # ingest every painting: the 20 new ones (2 of each artist) are the only ones embedded
    for args in (["ingest", data / "train_info.csv", "--images", data / "train"], ["clean"], ["split"], ["resize"]):
        pbn(*args, "-w", ws)
    more = pbn("embed", "--device", "cpu", "-w", ws)
    added = len(pd.read_parquet(ws / "manifests/resize.parquet")) - n_before
    assert added == 20 and f"{added} paintings embedded now" in more.stdout
    assert f"embedding {added} of {n_before + added}" in more.output  # the progress line says how many
    rows = _store_rows(ws)
    assert rows["image_id"].is_unique and len(rows) == n_before + added
    # remove an artist (a new CSV without it): it is gone from every answer (`pbn embed` drops it once most is dead)
    full = pd.read_csv(data / "train_info.csv", dtype=str)
    gone = sorted(full["artist"].unique())[0]
    full[full["artist"] != gone].to_csv(data / "fewer.csv", index=False)
    for args in (["ingest", data / "fewer.csv", "--images", data / "train"], ["clean"], ["split"], ["resize"]):
        pbn(*args, "-w", ws)
    query = data / "train" / full[full["artist"] == gone]["filename"].iloc[0]
    out = json.loads(pbn("search", query, "-k", "200", "--json", "--device", "cpu", "-w", ws).stdout)
    assert gone not in {n["artist"] for n in out["neighbours"]} and len(out["neighbours"]) == len(full) - 8


def test_two_processes_filling_one_store_take_turns(tmp_path, evaluated_run):
    ws = tmp_path / "ws"
    shutil.copytree(evaluated_run, ws)
    shutil.rmtree(ws / "embeddings")
    cmd = [sys.executable, "-m", "pbn_cli", "embed", "--chunk", "4", "--device", "cpu", "-w", str(ws)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    embedded = sorted(int(out.split(" paintings embedded now")[0].split()[-1]) for out, _ in outs)
    assert embedded == [0, 96]  # the second waited for the first, then found nothing left
    rows = _store_rows(ws)
    assert rows["image_id"].is_unique and len(rows) == 96


def test_torchrun_two_processes_fill_the_store_as_one_does(tmp_path, evaluated_run):
    one, two = tmp_path / "one", tmp_path / "two"
    for ws in (one, two):
        shutil.copytree(evaluated_run, ws)
        shutil.rmtree(ws / "embeddings")
    pbn("embed", "--chunk", "8", "--device", "cpu", "-w", one)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29531", "-m", "pbn_cli",
           "embed", "--chunk", "8", "--device", "cpu", "-w", str(two)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "on 2 process(es)" in out.stdout
    a, b = (_store_rows(ws).sort_values("image_id").reset_index(drop=True) for ws in (one, two))
    assert list(a["image_id"]) == list(b["image_id"]) and list(a["digest"]) == list(b["digest"])
    assert np.allclose(np.stack(a["embedding"]), np.stack(b["embedding"]), atol=1e-5)


def _clustered(n: int = 3600, dim: int = 32, seed: int = 0) -> tuple[Gallery, SplitRows]:
    """``n`` unit vectors around 60 centres (neighbours worth finding), as a gallery and its paintings."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(60, dim))
    emb = centres[rng.integers(60, size=n)] + 0.6 * rng.normal(size=(n, dim))
    emb = (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)
    ids, digests = np.array([f"{i:05d}.jpg" for i in range(n)], object), np.array([f"{i:016x}" for i in range(n)], object)
    table = pd.DataFrame({"image_id": ids, "digest": digests, "split": np.where(np.arange(n) % 3, "train", "test")})
    return Gallery(table, emb), SplitRows(np.arange(n), np.zeros(n, int), ids, ids, digests)


def _first(g: Gallery, n: int) -> Gallery:
    return Gallery(g.table.iloc[:n].reset_index(drop=True), g.emb[:n])


def test_faiss_and_exact_search_agree_and_the_index_is_extended(tmp_path):
    pytest.importorskip("faiss")
    everything, rows = _clustered()
    store = Store(tmp_path / "store")
    for start in range(0, 3000, 512):
        store.write(rows[start : min(start + 512, 3000)], everything.emb[start : min(start + 512, 3000)])
    g = _first(everything, 3000)
    built = index.load_or_build(g, store)
    assert built.about["recall_at_10"] >= index.TARGET_RECALL and (store.folder / "index.faiss").exists()
    built.nprobe = built.index.nlist  # every cell scanned: the index must find what exact search finds
    queries = g.emb[:50] + 0.05
    exact, exact_d = exact_nearest(g, queries, 10)
    found, found_d = built(g, queries, 10)
    assert (found == exact).all() and np.allclose(found_d, exact_d)
    keep = (g.table["split"] == "test").to_numpy()
    assert (built(g, queries, 10, keep)[0] == exact_nearest(g, queries, 10, keep)[0]).all()
    # the store grows: the index takes the new paintings without being trained again
    store.write(rows[3000:], everything.emb[3000:])
    stamp = (store.folder / "index.faiss").stat().st_mtime_ns
    before = {name: (store.folder / name).read_bytes() for name in ("index-ids.npy", "index.json")}
    g2 = everything
    again = index.load_or_build(g2, store)
    assert again.index.ntotal == 3600 and again.about["built"] == built.about["built"]
    assert (store.folder / "index.faiss").stat().st_mtime_ns != stamp
    again.nprobe = again.index.nlist
    assert (again(g2, g2.emb[3500:3510], 5)[0] == exact_nearest(g2, g2.emb[3500:3510], 5)[0]).all()
    # a save killed after index.faiss (ids and index.json of before), or before index.json: built anew, right
    for killed in (("index-ids.npy", "index.json"), ("index.json",)):
        for name in killed:
            (store.folder / name).write_bytes(before[name])
        assert index.StoredIndex(store).held() is None or len(index.StoredIndex(store).held()) == 3000
        mended = index.load_or_build(g2, store)
        assert mended.index.ntotal == 3600 and len(mended.held) == 3600
        mended.nprobe = mended.index.nlist
        assert (mended(g2, g2.emb[3500:3510], 5)[0] == exact_nearest(g2, g2.emb[3500:3510], 5)[0]).all()


def test_search_through_the_index_answers_as_exact_search(tmp_path, evaluated_run):
    pytest.importorskip("faiss")
    ws = tmp_path / "ws"
    shutil.copytree(evaluated_run, ws)
    exact = json.loads(pbn("search", _a_painting(ws), "-k", "5", "--json", "--index", "exact", "--device", "cpu",
                           "-w", ws).stdout)
    faiss = json.loads(pbn("search", _a_painting(ws), "-k", "5", "--json", "--index", "faiss", "--device", "cpu",
                           "-w", ws).stdout)
    # (this tiny run's embeddings sit within 1e-4 of each other: agreement is checked on clustered vectors above)
    assert [n["distance"] for n in faiss["neighbours"]] == pytest.approx([n["distance"] for n in exact["neighbours"]],
                                                                         abs=1e-4)
    status = json.loads(pbn("index", "status", "--json", "-w", ws).stdout)
    assert status[0]["index"]["paintings"] == 96 and status[0]["of_the_workspace"] == 96


def _a_painting(ws: Path) -> str:
    split = pd.read_parquet(ws / "manifests/split.parquet")
    return os.path.join(image_root(Workspace(ws)), split["path"].iloc[0])


def test_without_the_faiss_extra_index_faiss_is_one_line(evaluated_run, monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # as if not installed
    result = pbn("search", _a_painting(evaluated_run), "--index", "faiss", "--device", "cpu", "-w", evaluated_run, expect=2)
    assert result.output.strip().splitlines()[-1] == "Error: --index faiss needs the faiss extra: pip install 'pbn[faiss]'"
    auto = pbn("search", _a_painting(evaluated_run), "--index", "auto", "--device", "cpu", "-w", evaluated_run)
    assert "vote:" in auto.stdout  # small collections search exactly, extra or not


def test_filters_by_the_workspace_columns(evaluated_run):
    split = pd.read_parquet(evaluated_run / "manifests/split.parquet")
    artist = sorted(split["artist"].unique())[1]
    q = _a_painting(evaluated_run)
    out = json.loads(pbn("search", q, "-k", "50", "--where", f"artist={artist}", "--json", "--device", "cpu",
                         "-w", evaluated_run).stdout)
    assert {n["artist"] for n in out["neighbours"]} == {artist}
    both = json.loads(pbn("search", q, "-k", "50", "--where", "split!=train", "--where", f"artist~{artist[:3]}",
                          "--json", "--device", "cpu", "-w", evaluated_run).stdout)
    assert all(n["split"] != "train" and artist[:3].lower() in n["artist"].lower() for n in both["neighbours"])
    styled = json.loads(pbn("search", q, "-k", "3", "--where", "style~e", "--json", "--device", "cpu",
                            "-w", evaluated_run).stdout)  # a column of the ingested CSV
    assert styled["neighbours"]
    bad = pbn("search", q, "--where", "school=Utrecht", "--device", "cpu", "-w", evaluated_run, expect=2)
    assert "no column 'school'; columns: " in bad.output and "style" in bad.output and "Traceback" not in bad.output
    malformed = pbn("search", q, "--where", "artist", "--device", "cpu", "-w", evaluated_run, expect=2)
    assert "write COLUMN OP VALUE" in malformed.output


def test_number_filters_read_the_first_number_of_a_value():
    table = pd.DataFrame({"date": ["1650", "c. 1590", "1601-1603", "", "unknown", "1700.5"], "split": ["train"] * 6})
    assert list(filters.mask(table, ["date>=1600"])) == [True, False, True, False, False, True]
    assert list(filters.mask(table, ["date<1600", "split=TRAIN"])) == [False, True, False, False, False, False]
    with pytest.raises(Exception, match="compares numbers"):
        filters.mask(table, ["date>=early"])


def test_half_store_keeps_embeddings_to_float16_precision(tmp_path, evaluated_run):
    g, rows = _clustered(600)
    half = Store(tmp_path / "half", half=True)
    half.write(rows, g.emb)
    back = half.read(rows)
    assert back.dtype == np.float32 and np.abs(back - g.emb).max() < 1e-3
    full = Store(tmp_path / "full")
    full.write(rows, g.emb)
    assert np.array_equal(full.read(rows), g.emb)
    size = [(folder / "part-000000.parquet").stat().st_size for folder in (tmp_path / "half", tmp_path / "full")]
    assert size[0] < 0.7 * size[1]
    ws = tmp_path / "ws"
    shutil.copytree(evaluated_run, ws)
    pbn("eval", "--half", "--device", "cpu", "-w", ws)
    assert json.loads((ws / "runs/r/eval/test/metrics.json").read_text())["half"]
    assert any(store.half for store in all_stores(Workspace(ws)))


def _listing(folder: Path) -> dict:
    return {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in folder.iterdir()}


def test_a_search_leaves_the_store_as_it_is_and_never_answers_with_a_stale_row(tmp_path, evaluated_run):
    ws = tmp_path / "ws"
    shutil.copytree(evaluated_run, ws)
    pbn("embed", "--device", "cpu", "-w", ws)
    store = model_store(Workspace(ws), json.loads((ws / "runs/r/calibration.json").read_text())["best"]["weights"])
    ids, digests, emb = read_chunk(store.chunks()[0])
    # rows of paintings gone from the workspace, twice as many as the live ones and as near to any query
    for copy in range(2):
        stale = np.array([f"gone-{copy}-{i}" for i in ids], object)
        store.write(SplitRows(np.arange(len(ids)), np.zeros(len(ids), int), stale, stale, np.array(digests, object)), emb)
    before = _listing(store.folder)
    out = json.loads(pbn("search", _a_painting(ws), "-k", "500", "--json", "--index", "exact", "--device", "cpu",
                         "-w", ws).stdout)
    found = {n["image_id"] for n in out["neighbours"]}
    assert found and not any(i.startswith("gone-") for i in found) and len(found) == len(ids) - 1  # the query left out
    assert _listing(store.folder) == before  # not a chunk, not the lock: the store was only read
    pbn("embed", "--device", "cpu", "-w", ws)  # the store's writer drops the stale rows
    kept = open_store(store.folder).keys()
    assert len(kept) == len(ids) and not kept["image_id"].str.startswith("gone-").any()


def test_the_index_follows_the_store_when_it_is_pruned(tmp_path):
    pytest.importorskip("faiss")
    everything, rows = _clustered(1400, dim=16)
    store = Store(tmp_path / "store")
    assert isinstance(index.StoredIndex(store), StoreFollower)
    index.StoredIndex(store).renumber(np.arange(3), np.arange(3))  # no index yet: nothing to follow
    for start in range(600, 1400, 400):  # rows of an earlier cache: never in the gallery
        store.write(rows[start : start + 400], everything.emb[start : start + 400])
    for start in range(0, 600, 200):
        store.write(rows[start : start + 200], everything.emb[start : start + 200])
    built = index.load_or_build(_first(everything, 600), store)
    stamp = (store.folder / "index.faiss").stat().st_mtime_ns
    alive = rows[:550]  # and 50 of the indexed paintings are gone too
    before = store.ids(alive.image_ids, alive.digests)
    assert store.prune(alive, followers=[index.StoredIndex(store)]) == 850
    after = store.ids(alive.image_ids, alive.digests)
    assert (after >= 0).all() and not np.isin(after, before).any()  # every kept row has a new id
    g = _first(everything, 550)
    again = index.load_or_build(g, store)  # renumbered, not built again
    assert again.about["built"] == built.about["built"] and (store.folder / "index.faiss").stat().st_mtime_ns == stamp
    assert again.about["paintings"] == 550 and (again.held[:550] == after).all() and (again.held[550:] == -1).all()
    again.nprobe = again.index.nlist
    queries = everything.emb[540:600] + 0.01  # some of them beside the paintings that are gone
    found, _ = again(g, queries, 10)
    assert (found == exact_nearest(g, queries, 10)[0]).all() and found.max() < 550
