"""Hostile files: pickles that would run code, fuzzed CSVs and images, paths that leave the image folder."""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import invoke, one_error_line
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from pbn_cli.core.errors import PbnError
from pbn_cli.core.workspace import Workspace
from pbn_cli.inference.pairs import read_pairs
from pbn_cli.stages.clean import clean
from pbn_cli.stages.ingest import ingest
from pbn_cli.stages.resize import resize


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("where", ["run checkpoint", "exported model"])
def test_pickle_payload_is_refused_and_never_runs(tmp_path, evaluated_run, where):
    ws = tmp_path / "ws"
    shutil.copytree(evaluated_run, ws)
    marker = tmp_path / "pwned"
    evil = {"format": 1, "kind": "pbn-model", "model": _Payload(marker), "config": {}}
    target = ws / "runs/r/checkpoints/best.pt" if where == "run checkpoint" else tmp_path / "evil.pt"
    torch.save(evil, target)  # a real torch file whose pickle would call os.system
    a = next((ws.parent / "ws").rglob("*.npy"))  # any file will do as the painting: the model is refused first
    commands = [["eval", "--device", "cpu"], ["compare", a, a], ["search", a]] if where == "run checkpoint" else \
        [["compare", a, a, "--model", target], ["predict", a, "--images", tmp_path, "--model", target]]
    for command in commands:
        result = invoke(*command, "-w", ws)
        assert result.exit_code != 0
        assert "cannot be loaded as a pbn checkpoint" in one_error_line(result.output)
    assert not marker.exists()


_settings = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@st.composite
def _csv_bytes(draw) -> bytes:
    kind = draw(st.sampled_from(["bytes", "rows", "encoding", "huge"]))
    if kind == "bytes":
        return draw(st.binary(max_size=400))
    header = draw(st.sampled_from(["filename,artist", "filename,artist,title", "artist", "a,b", ""]))
    rows = draw(st.lists(st.lists(st.one_of(st.text(max_size=12), st.sampled_from(
        ["", "a.jpg", "../x.jpg", "/etc/passwd", "x\x00.jpg", '"', "b.png"])), max_size=5), max_size=8))
    text = header + "\n" + "\n".join(",".join(r) for r in rows)
    if kind == "huge":
        text += "\n" + "a.jpg," + "x" * 200_000
    if kind == "encoding":
        return text.encode(draw(st.sampled_from(["utf-16", "latin-1", "cp1252"])), errors="replace")
    return text.encode("utf-8", errors="surrogatepass")


@given(data=_csv_bytes())
@example(data=b'\n00,",\n,",,0,1\n,,,,')  # a newline inside a quoted column name: the error stays one line
@example(data=b'\n,",\n,",')  # ... in repeated column names
@_settings
def test_fuzzed_paintings_csv_gives_a_clean_error_or_rejections(tmp_path, data):
    with tempfile.TemporaryDirectory(dir=tmp_path) as tmp:
        tmp = Path(tmp)
        (tmp / "train").mkdir()
        Image.new("RGB", (8, 8), "red").save(tmp / "train/a.jpg")
        Image.new("RGB", (8, 8), "blue").save(tmp / "train/b.png")
        (tmp / "train_info.csv").write_bytes(data)
        try:
            result = ingest(Workspace(tmp / "ws"), tmp / "train_info.csv", workers=1)
        except PbnError as err:
            assert "\n" not in str(err).strip() and str(err)
            return
        kept = pd.read_parquet(tmp / "ws/manifests/ingest.parquet")
        assert set(kept["path"]) <= {"a.jpg", "b.png"}  # nothing outside the image folder, nothing that is not there
        assert result.kept == len(kept)


@given(data=st.one_of(st.binary(max_size=300), _csv_bytes()))
@_settings
def test_fuzzed_pairs_csv_gives_a_clean_error_or_pairs(tmp_path, data):
    path = tmp_path / "pairs.csv"
    path.write_bytes(data)
    try:
        pairs = read_pairs(path)
    except PbnError as err:
        assert "\n" not in str(err).strip()
        return
    assert len(pairs.first) == len(pairs.second) == len(pairs.index) > 0
    assert max(pairs.first.max(), pairs.second.max()) < len(pairs.names)


MAGIC = {"jpg": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "png": b"\x89PNG\r\n\x1a\n", "gif": b"GIF89a",
         "bmp": b"BM", "tif": b"II*\x00", "webp": b"RIFF\x00\x00\x00\x00WEBPVP8 "}


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG header declaring a huge image, with a tiny (wrong) body."""
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return MAGIC["png"] + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk)) + b"\x00" * 64


def test_fuzzed_and_hostile_images_are_rejected_with_reasons(tmp_path):
    rng = np.random.default_rng(11)
    images = tmp_path / "images"
    images.mkdir()
    rows, hostile = [], []
    for artist in ("Good One", "Good Two"):
        for k in range(3):
            name = f"{artist.split()[1].lower()}{k}.jpg"
            Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(images / name)
            rows.append((name, artist))
    for k in range(24):  # random bytes behind every format's magic number
        ext = list(MAGIC)[k % len(MAGIC)]
        name = f"fuzz{k}.{ext}"
        (images / name).write_bytes(MAGIC[ext] + rng.bytes(int(rng.integers(0, 3000))))
        hostile.append(name)
    good = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(good, "JPEG")
    (images / "cut.jpg").write_bytes(good.getvalue()[: len(good.getvalue()) // 3])
    (images / "empty.png").write_bytes(b"")
    (images / "bomb.png").write_bytes(_png_claiming(200_000, 200_000))
    (images / "wide.png").write_bytes(_png_claiming(1, 2_000_000_000))
    os.symlink("/etc/hostname", images / "outside.jpg")
    hostile += ["cut.jpg", "empty.png", "bomb.png", "wide.png", "outside.jpg"]
    rows += [(name, f"Hostile {k % 4}") for k, name in enumerate(hostile)]
    rows += [("../escape.jpg", "Hostile 0"), ("/etc/passwd", "Hostile 1"), ("sub\\..\\..\\x.jpg", "Hostile 2")]
    pd.DataFrame(rows, columns=["filename", "artist"]).to_csv(tmp_path / "info.csv", index=False)

    ws = Workspace(tmp_path / "ws")
    ingest(ws, tmp_path / "info.csv", images=images, workers=2)
    clean(ws, min_paintings=1)
    assert invoke("split", "--test-artists", "0", "-w", ws.root).exit_code == 0
    result = resize(ws, size=32, workers=2)
    assert result.kept == 6  # the good paintings, and only them
    rejected = pd.concat([pd.read_parquet(ws.root / f"manifests/{s}.rejected.parquet") for s in ("ingest", "resize")])
    reasons = dict(zip(rejected["path"], rejected["reason"]))
    for name in [*hostile, "../escape.jpg", "/etc/passwd", "sub\\..\\..\\x.jpg"]:
        assert reasons.get(name), f"{name} was not rejected with a reason"
    assert "escapes the image folder" in reasons["outside.jpg"] and "escapes" in reasons["../escape.jpg"]
    assert reasons["empty.png"].startswith("empty file")



def test_nul_byte_in_a_filename_refuses_the_csv(tmp_path):
    (tmp_path / "train").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "train/a.jpg")
    (tmp_path / "train_info.csv").write_bytes(b"filename,artist\na.jpg\x00../../etc/passwd,X\na.jpg,Y\n")
    result = invoke("ingest", tmp_path / "train_info.csv", "-w", tmp_path / "ws")
    assert result.exit_code == 2 and "contains NUL bytes" in one_error_line(result.output)
    assert not (tmp_path / "ws/manifests/ingest.parquet").exists()
