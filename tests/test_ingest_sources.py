"""ingest from a folder of artist folders and from Parquet tables with the images inside (Hugging Face datasets)."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pbn_cli.cli import app
from pbn_cli.core.workspace import Workspace
from pbn_cli.stages.ingest import ingest


@pytest.fixture
def hf():
    """The tables are written by Hugging Face `datasets` itself (a test dependency); the folder tests need it not."""
    return pytest.importorskip("datasets")


def _picture(k: int, fmt: str = "PNG", size: tuple[int, int] = (36, 28)) -> bytes:
    """A small image of its own (``k`` sets its colours), encoded as ``fmt``."""
    im = Image.new("RGB", size, ((k * 37) % 256, (k * 91) % 256, (k * 53 + 40) % 256))
    im.putpixel((k % size[0], (k // size[0]) % size[1]), (255 - (k % 256), 0, 0))
    buf = io.BytesIO()
    im.save(buf, fmt)
    return buf.getvalue()


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _manifest(pbn, name: str = "ingest") -> pd.DataFrame:
    return pd.read_parquet(pbn.workspace / "manifests" / f"{name}.parquet")


def _reasons(pbn) -> dict:
    return _manifest(pbn, "ingest.rejected").set_index("image_id")["reason"].to_dict()


def _later_stages(pbn, kept: int) -> None:
    """clean, split and resize run unchanged on what ingest wrote; every clean painting gets a cache row."""
    pbn("clean")
    pbn("split")
    pbn("resize", "--size", "32")
    clean, resize = _manifest(pbn, "clean"), _manifest(pbn, "resize")
    assert 0 < len(clean) <= kept
    assert sorted(resize["image_id"]) == sorted(clean["image_id"])
    assert not (pbn.workspace / "manifests/resize.rejected.parquet").exists() or _manifest(pbn, "resize.rejected").empty


# ---------------------------------------------------------------- folders of artists


def _artist_tree(tmp_path: Path) -> Path:
    root = tmp_path / "art"
    _write(root / "Monet/a.jpg", _picture(1, "JPEG"))
    _write(root / "Monet/b.png", _picture(2))
    _write(root / "Monet/series/haystacks/c.jpg", _picture(3, "JPEG"))  # deeper level: still Monet
    _write(root / "Renoir/x.png", _picture(4))
    _write(root / "Renoir/y.png", _picture(5))
    _write(root / "Renoir/notes.txt", b"not a painting\n")
    _write(root / "Renoir/.DS_Store", b"\x00\x00\x00\x01Bud1")
    _write(tmp_path / "outside/secret.png", _picture(6))
    os.symlink(tmp_path / "outside/secret.png", root / "Renoir/leak.png")
    _write(root / "  Degas /d1.png", _picture(7))  # the artist's name is stripped, as in a CSV
    _write(root / "  Degas /d2.png", _picture(8))
    (root / "Empty").mkdir()
    _write(root / "Hidden only/.ipynb_checkpoints/e-checkpoint.png", _picture(9))
    _write(root / ".ipynb_checkpoints/z.png", _picture(10))
    _write(root / "stray.png", _picture(11))
    return root


def test_folder_of_artists_rows_rejections_and_later_stages(pbn, tmp_path):
    root = _artist_tree(tmp_path)
    first = pbn("ingest", root)
    assert "ingest: kept 7 rows, rejected 3" in first.output
    assert "2 artist folders with no paintings: Empty, Hidden only" in first.output
    assert "skipped 3 hidden files or folders (names starting with '.')" in first.output
    kept = _manifest(pbn).set_index("image_id")
    assert kept["artist"].to_dict() == {
        "  Degas /d1.png": "Degas", "  Degas /d2.png": "Degas", "Monet/a.jpg": "Monet", "Monet/b.png": "Monet",
        "Monet/series/haystacks/c.jpg": "Monet", "Renoir/x.png": "Renoir", "Renoir/y.png": "Renoir",
    }
    assert (kept["path"] == kept.index).all() and (kept["filename"] == kept.index).all()
    assert kept.loc["Monet/a.jpg", ["format", "width", "height", "mode"]].tolist() == ["JPEG", 36, 28, "RGB"]
    assert kept.loc["Monet/b.png", "bytes"] == (root / "Monet/b.png").stat().st_size
    assert _reasons(pbn) == {
        "Renoir/notes.txt": "not an image: cannot identify image file",
        "Renoir/leak.png": "path escapes the image folder: symbolic link leads outside",
        "stray.png": "not in an artist folder: expected FOLDER/<artist>/<painting>",
    }
    record = Workspace(pbn.workspace).record("ingest")
    assert record.extra["image_root"] == os.path.relpath(root.resolve(), pbn.workspace.resolve())

    assert "up to date, nothing to do" in pbn("ingest", root).output
    _write(root / "Renoir/deeper/w.png", _picture(12))
    assert "ingest: kept 8 rows" in pbn("ingest", root).output  # a changed tree is read again
    assert "up to date" in pbn("ingest", root).output
    assert "ingest: kept 8 rows, rejected 3" in pbn("ingest", root, "--force").output
    _later_stages(pbn, 8)


def test_folder_without_artist_folders_and_wrong_options_are_one_line_errors(pbn, tmp_path):
    _write(tmp_path / "flat/a.png", _picture(1))
    result = pbn("ingest", tmp_path / "flat", expect=2)
    assert result.output.count("\n") == 1 and "Traceback" not in result.output
    assert "has no artist folders: expected one sub-folder per artist" in result.output
    _write(tmp_path / "tree/A/a.png", _picture(1))
    wrong = pbn("ingest", tmp_path / "tree", "--artist-column", "x", expect=2)
    assert "--artist-column does not apply to tree: it is a folder of artist folders" in wrong.output
    (tmp_path / "c.csv").write_text("filename,artist\na.png,X\n")
    wrong = pbn("ingest", tmp_path / "c.csv", "--image-column", "img", expect=2)
    assert "--image-column does not apply to c.csv: it is a CSV" in wrong.output


# ---------------------------------------------------------------- tables (Hugging Face datasets)

ARTISTS = ["Hokusai", "Vermeer", "Kahlo", "Turner"]


def _hf_table(path: Path, *, label: bool = True, n_per_artist: int = 3, start: int = 0, extra_rows=()) -> list[bytes]:
    """A table written by `datasets` itself: images as the Image feature, the artist and style ClassLabels or text."""
    from datasets import ClassLabel, Dataset, Features, Value
    from datasets import Image as ImageFeature

    images, artists, styles, years = [], [], [], []
    for a, artist in enumerate(ARTISTS):
        for p in range(n_per_artist):
            k = start + a * n_per_artist + p
            images.append({"bytes": _picture(k, "JPEG" if k % 2 else "PNG"), "path": f"{artist.lower()}_{k}.jpg"})
            artists.append(artist)
            styles.append(f"style {a}")
            years.append(1800 + k)
    for data, artist in extra_rows:
        images.append(data if isinstance(data, dict) else {"bytes": data, "path": None})
        artists.append(artist)
        styles.append("style 0")
        years.append(1999)
    labelled = ClassLabel(names=ARTISTS), ClassLabel(names=[f"style {a}" for a in range(len(ARTISTS))])
    features = Features({"artist": labelled[0] if label else Value("string"), "image": ImageFeature(),
                         "style": labelled[1] if label else Value("string"), "year": Value("int32")})
    Dataset.from_dict({"artist": artists, "image": images, "style": styles, "year": years},
                      features=features).to_parquet(str(path))
    return [im["bytes"] for im in images]


def test_datasets_table_with_class_labels_damaged_image_duplicates_and_later_stages(pbn, tmp_path, hf):
    table = tmp_path / "paintings.parquet"
    written = _hf_table(table, extra_rows=[(_picture(0, "PNG"), "Hokusai"), (b"these bytes are no image", "Kahlo")])
    assert b"huggingface" in pq.read_schema(table).metadata  # as the datasets library writes it
    out = pbn("ingest", table).output
    assert "ingest: kept 13 rows, rejected 1" in out
    assert "12 images in" in out and "1 rows share their bytes with another" in out
    kept = _manifest(pbn).set_index("image_id")
    assert kept.loc["paintings.parquet#0", "artist"] == "Hokusai"  # the ClassLabel's name, not 0
    assert kept.loc["paintings.parquet#4", ["artist", "style", "year", "filename"]].tolist() == [
        "Vermeer", "style 1", 1804, "vermeer_4.jpg"]
    assert set(kept.columns) >= {"style", "year", "format", "width", "height", "mode", "bytes"}
    assert _reasons(pbn) == {"paintings.parquet#13": "not an image: cannot identify image file"}
    images = pbn.workspace / "images"
    files = sorted(p for p in images.rglob("*") if p.is_file())
    assert len(files) == 12  # row 12 repeats row 0's bytes: stored once
    assert kept.loc["paintings.parquet#12", "path"] == kept.loc["paintings.parquet#0", "path"]
    for image_id, row in kept.iterrows():
        data = written[int(image_id.split("#")[1])]
        on_disk = images / row["path"]
        assert on_disk.read_bytes() == data and on_disk.stem == hashlib.sha256(data).hexdigest()
        assert on_disk.suffix == {"JPEG": ".jpg", "PNG": ".png"}[row["format"]] and row["bytes"] == len(data)
    assert Workspace(pbn.workspace).record("ingest").extra["image_root"] == "images"  # inside the workspace

    stamps = {p: p.stat().st_mtime_ns for p in files}
    assert "up to date, nothing to do" in pbn("ingest", table).output
    assert {p: p.stat().st_mtime_ns for p in files} == stamps
    _later_stages(pbn, 13)
    assert len(_manifest(pbn, "clean")) == 12  # clean keeps one of the two identical Hokusai images


def test_a_killed_extraction_resumes_without_rewriting(pbn, tmp_path, hf):
    table = tmp_path / "t.parquet"
    _hf_table(table)
    pbn("ingest", table)
    images = pbn.workspace / "images"
    files = sorted(p for p in images.rglob("*") if p.is_file())
    gone, stay = files[:4], files[4:]
    for p in gone:
        p.unlink()
    (pbn.workspace / "manifests/ingest.parquet").unlink()  # as if killed before the manifest was written
    leftover = stay[0].parent / f".{stay[0].name}.tmp-99999"
    leftover.write_bytes(b"half an ima")
    stamps = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in stay}
    assert "ingest: kept 12 rows, rejected 0" in pbn("ingest", table).output
    assert all(p.exists() for p in gone) and not leftover.exists()
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in stay} == stamps


def test_plain_string_artists_in_a_folder_of_two_shards(pbn, tmp_path, hf):
    shards = tmp_path / "data"
    shards.mkdir()
    elsewhere = tmp_path / "elsewhere/x.png"  # a row whose image is a path, not bytes: datasets writes such rows
    _write(elsewhere, _picture(97))
    _hf_table(shards / "train-00000-of-00002.parquet", label=False, n_per_artist=2)
    _hf_table(shards / "train-00001-of-00002.parquet", label=False, n_per_artist=2, start=8,
              extra_rows=[(_picture(99), None), (_picture(98), "  "),
                          ({"bytes": None, "path": str(elsewhere)}, "Kahlo")])
    out = pbn("ingest", shards).output
    assert "ingest: kept 16 rows, rejected 3" in out
    kept = _manifest(pbn).set_index("image_id")
    assert kept.loc["train-00001-of-00002.parquet#0", "artist"] == "Hokusai"
    assert kept.loc["train-00001-of-00002.parquet#0", "year"] == 1808
    assert kept["artist"].value_counts().to_dict() == {a: 4 for a in ARTISTS}
    assert _reasons(pbn) == {
        "train-00001-of-00002.parquet#8": "no artist given", "train-00001-of-00002.parquet#9": "no artist given",
        "train-00001-of-00002.parquet#10": "path escapes the image folder: absolute path outside "
                                           f"{os.path.realpath(shards)} (point --images to a folder above it)"}
    assert "up to date" in pbn("ingest", shards).output
    _hf_table(shards / "extra.parquet", label=False, n_per_artist=1, start=30)  # a changed table is read again
    assert "ingest: kept 20 rows, rejected 3" in pbn("ingest", shards).output
    _later_stages(pbn, 20)


def test_many_row_groups_on_two_workers_match_one_worker(tmp_path, hf):
    """Images stream in batches across row groups to worker processes; the manifest is the same as in one process."""
    from datasets import Dataset, Features, Value
    from datasets import Image as ImageFeature

    n = 300
    features = Features({"image": ImageFeature(), "painter": Value("string"), "genre": Value("string")})
    ds = Dataset.from_dict({"image": [{"bytes": _picture(k, size=(8, 8)), "path": None} for k in range(n)],
                            "painter": [f"p{k % 7}" for k in range(n)], "genre": ["g"] * n}, features=features)
    ds.to_parquet(str(tmp_path / "raw.parquet"))
    table = tmp_path / "small_groups.parquet"
    pq.write_table(pq.read_table(tmp_path / "raw.parquet"), table, row_group_size=16)  # keeps the schema metadata
    assert pq.ParquetFile(table).metadata.num_row_groups == 19
    one = ingest(Workspace(tmp_path / "one"), table, workers=1)
    two = ingest(Workspace(tmp_path / "two"), table, workers=2)
    assert (one.kept, one.rejected, two.kept, two.rejected) == (n, 0, n, 0)
    a = pd.read_parquet(tmp_path / "one/manifests/ingest.parquet")
    b = pd.read_parquet(tmp_path / "two/manifests/ingest.parquet")
    pd.testing.assert_frame_equal(a, b)
    assert a["image_id"].tolist() == [f"small_groups.parquet#{k}" for k in range(n)]
    assert a["artist"].tolist() == [f"p{k % 7}" for k in range(n)]


def test_table_errors_are_one_line(pbn, tmp_path, hf):
    no_images = tmp_path / "meta.parquet"
    pq.write_table(pa.table({"artist": ["a"], "title": ["t"]}), no_images)
    result = pbn("ingest", no_images, expect=2)
    assert result.output.count("\n") == 1 and "Traceback" not in result.output
    assert "has no image column" in result.output and "it has: artist, title" in result.output
    table = tmp_path / "t.parquet"
    _hf_table(table, n_per_artist=1, label=False)
    unknown = pbn("ingest", table, "--artist-column", "maker", expect=2)
    assert unknown.output.strip() == (
        "Error: the table t.parquet has no column 'maker' (it has: artist, image, style, year)")
    not_images = pbn("ingest", table, "--image-column", "style", expect=2)
    assert "column 'style' holds string, not images" in not_images.output
    images_opt = pbn("ingest", table, "--images", tmp_path / "nowhere", expect=2)
    assert images_opt.output.strip().startswith("Error: image folder") and "does not exist" in images_opt.output


def test_ingest_help_explains_the_three_sources(pbn):
    result = pbn.runner.invoke(app, ["ingest", "--help"])
    assert result.exit_code == 0
    for line in ("pbn ingest ~/kaggle/train_info.csv --images ~/kaggle/train", "pbn ingest ~/paintings",
                 "pbn ingest wikiart/data --artist-column artist", "FOLDER/<artist>/<painting>", "Parquet",
                 "Example: pbn "):
        assert line in result.output, line


def test_a_table_with_paths_ingests_the_same_paintings_as_one_with_bytes(pbn, tmp_path, hf):
    """`datasets` writes rows of images left on disk as a path without bytes: they are read from those files,
    relative to the table's folder (or --images), and give the paintings the bytes give."""
    import pyarrow as pa

    with_bytes = tmp_path / "bytes/paintings.parquet"
    with_bytes.parent.mkdir()
    written = _hf_table(with_bytes)
    table = pq.read_table(with_bytes)
    names = [f"img/{k}.bin" for k in range(len(written))]
    for name, data in zip(names, written):
        _write(tmp_path / "paths" / name, data)
    image = pa.StructArray.from_arrays([pa.array([None] * len(names), pa.binary()), pa.array(names)],
                                       fields=list(table.schema.field("image").type))
    with_paths = tmp_path / "paths/paintings.parquet"
    pq.write_table(table.set_column(table.schema.get_field_index("image"), "image", image), with_paths)
    other = type(pbn)(tmp_path / "ws-paths")
    pbn("ingest", with_bytes)
    other("ingest", with_paths)
    ours, theirs = _manifest(pbn), _manifest(other)
    assert len(ours) == len(written) and ours[["image_id", "path", "artist"]].equals(theirs[["image_id", "path", "artist"]])
    elsewhere = type(pbn)(tmp_path / "ws-elsewhere")  # the same table moved away from its images: --images finds them
    moved = tmp_path / "moved.parquet"
    with_paths.rename(moved)
    elsewhere("ingest", moved, "--images", tmp_path / "paths")
    assert _manifest(elsewhere)[["path", "artist"]].equals(ours[["path", "artist"]])


def test_a_table_is_known_by_its_bytes_not_its_modification_time(pbn, tmp_path):
    table = tmp_path / "t.parquet"

    def write(artists: list[str]) -> None:
        pq.write_table(pa.table({"artist": artists, "image": [_picture(k) for k in range(4)]}), table,
                       compression="none")

    write(["Monet", "Monet", "Degas", "Degas"])
    pbn("ingest", table)
    pbn("clean")
    ws = Workspace(pbn.workspace)
    first, st = ws.record("ingest").fingerprint, table.stat()
    later = st.st_mtime_ns + 10**10
    os.utime(table, ns=(st.st_atime_ns, later))  # touched, its bytes unchanged
    assert "up to date, nothing to do" in pbn("ingest", table).output
    assert ws.record("ingest").fingerprint == first and not ws.is_stale("clean")
    write(["Manet", "Manet", "Degas", "Degas"])  # new bytes of the same size under the same modification time
    os.utime(table, ns=(st.st_atime_ns, later))
    assert table.stat().st_size == st.st_size
    assert "ingest: kept 4 rows" in pbn("ingest", table).output
    assert sorted(_manifest(pbn)["artist"]) == ["Degas", "Degas", "Manet", "Manet"] and ws.is_stale("clean")
