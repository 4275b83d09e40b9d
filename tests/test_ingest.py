"""ingest: CSV parsing, header reads, rejections with reasons, bad input."""

import os
import shutil
from pathlib import Path

import pandas as pd
from conftest import Pbn, pipeline
from PIL import Image

from pbn_cli.core.manifest import Record
from pbn_cli.core.workspace import Workspace
from pbn_cli.data.paths import image_root, painting_files
from pbn_cli.data.synth import synth


def _rejected(ws: Path, stage: str) -> pd.DataFrame:
    return pd.read_parquet(ws / "manifests" / f"{stage}.rejected.parquet")


def test_quirks_rejects_exactly_missing_escaping_non_image_and_duplicate_rows(pbn, quirky_set):
    pipeline(pbn, quirky_set)
    rejected = _rejected(pbn.workspace, "ingest").set_index("image_id")["reason"]
    assert rejected.to_dict() == {
        "q_not_an_image.jpg": "not an image: cannot identify image file",
        "q_missing.jpg": "file missing",
        "../q_escape.jpg": "path escapes the image folder: `..` in the filename",
        "000000.jpg" if "000000.jpg" in rejected.index else "000000.png": "duplicate row: filename already listed on CSV row 2",
    }
    kept = pd.read_parquet(pbn.workspace / "manifests/ingest.parquet")
    csv = pd.read_csv(quirky_set / "train_info.csv", encoding="utf-8")
    assert len(kept) + len(rejected) == len(csv)
    assert kept["image_id"].is_unique
    bomb = kept.set_index("image_id").loc["q_bomb.png"]
    assert (bomb["width"], bomb["height"], bomb["format"]) == (9500, 9500, "PNG")
    assert set(kept["mode"]) >= {"RGB", "CMYK", "P", "I;16"}
    assert "Portrait of a Lady, 1650" in set(kept["artist"])  # a quoted field with a comma


def _write_images(folder: Path, names):
    folder.mkdir(parents=True, exist_ok=True)
    for k, name in enumerate(names):
        Image.new("RGB", (40 + k, 30), (k * 20 % 255, 80, 120)).save(folder / name)


def test_bom_quotes_and_non_ascii_parse(pbn, tmp_path):
    _write_images(tmp_path / "train", ["a.jpg", "b.png"])
    text = 'filename,artist,title\na.jpg,Zoë Ångström,"Study, ""No. 1"""\nb.png,葛飾 北斎,plain\n'
    (tmp_path / "info.csv").write_bytes(b"\xef\xbb\xbf" + text.encode())
    pbn("ingest", tmp_path / "info.csv")
    kept = pd.read_parquet(pbn.workspace / "manifests/ingest.parquet").set_index("image_id")
    assert kept.loc["a.jpg", "artist"] == "Zoë Ångström"
    assert kept.loc["a.jpg", "title"] == 'Study, "No. 1"'
    assert kept.loc["b.png", "artist"] == "葛飾 北斎"
    assert (kept.loc["b.png", "width"], kept.loc["b.png", "format"]) == (41, "PNG")


def test_custom_columns_and_absolute_and_symlink_paths(pbn, tmp_path):
    _write_images(tmp_path / "imgs", ["a.jpg", "b.jpg"])
    _write_images(tmp_path / "outside", ["secret.jpg"])
    os.symlink(tmp_path / "outside/secret.jpg", tmp_path / "imgs/link.jpg")
    os.symlink(tmp_path / "imgs/a.jpg", tmp_path / "imgs/inside_link.jpg")
    (tmp_path / "c.csv").write_text(
        "file,painter\na.jpg,X\nb.jpg,X\nlink.jpg,Y\ninside_link.jpg,Y\n"
        f"{tmp_path / 'imgs/a.jpg'},Y\n"
    )
    pbn("ingest", tmp_path / "c.csv", "--images", tmp_path / "imgs", "--filename-column", "file", "--artist-column", "painter")
    rejected = _rejected(pbn.workspace, "ingest").set_index("image_id")["reason"]
    assert rejected["link.jpg"] == "path escapes the image folder: symbolic link leads outside"
    assert rejected[str(tmp_path / "imgs/a.jpg")] == "path escapes the image folder: absolute path"
    kept = pd.read_parquet(pbn.workspace / "manifests/ingest.parquet")
    assert sorted(kept["image_id"]) == ["a.jpg", "b.jpg", "inside_link.jpg"]


def test_kaggle_all_data_info_layout(pbn, tmp_path):
    _write_images(tmp_path / "train", ["1.jpg"])
    _write_images(tmp_path / "test", ["2.jpg"])
    (tmp_path / "all_data_info.csv").write_text(
        "artist,date,genre,pixelsx,pixelsy,size_bytes,source,style,title,artist_group,in_train,new_filename\n"
        "A,1900,g,40,30,1,s,st,t,train_and_test,True,1.jpg\n"
        "B,1901,g,40,30,1,s,st,t,train_and_test,False,2.jpg\n"
    )
    pbn("ingest", tmp_path / "all_data_info.csv")
    kept = pd.read_parquet(pbn.workspace / "manifests/ingest.parquet").set_index("image_id")
    assert kept.loc["1.jpg", "path"] == "train/1.jpg"
    assert kept.loc["2.jpg", "path"] == "test/2.jpg"


def test_reingest_with_more_rows_keeps_image_ids(pbn, tmp_path):
    _write_images(tmp_path / "train", ["a.jpg", "b.jpg", "c.jpg"])
    csv = tmp_path / "train_info.csv"
    csv.write_text("filename,artist\na.jpg,X\nb.jpg,Y\n")
    pbn("ingest", csv)
    before = pd.read_parquet(pbn.workspace / "manifests/ingest.parquet")
    csv.write_text("filename,artist\nc.jpg,Z\na.jpg,X\nb.jpg,Y\n")
    pbn("ingest", csv)
    after = pd.read_parquet(pbn.workspace / "manifests/ingest.parquet").set_index("filename")
    for _, row in before.iterrows():
        assert after.loc[row["filename"], "image_id"] == row["image_id"]
    assert len(after) == 3


def test_rerun_is_up_to_date_and_force_redoes(pbn, small_set):
    pbn("ingest", small_set / "train_info.csv")
    again = pbn("ingest", small_set / "train_info.csv")
    assert "up to date, nothing to do" in again.output
    forced = pbn("ingest", small_set / "train_info.csv", "--force")
    assert "kept 60 rows" in forced.output


def test_missing_artist_column_is_one_line_exit_2(pbn, tmp_path):
    _write_images(tmp_path / "train", ["a.jpg"])
    (tmp_path / "x.csv").write_text("filename,title\na.jpg,t\n")
    result = pbn("ingest", tmp_path / "x.csv", expect=2)
    assert result.output.strip() == (
        "Error: the CSV has no artist column (looked for artist, painter, author; it has: "
        "filename, title); name it with --artist-column"
    )
    named = pbn("ingest", tmp_path / "x.csv", "--artist-column", "painter", expect=2)
    assert named.output.strip() == "Error: the CSV has no column 'painter' (it has: filename, title)"


def test_bad_inputs_are_one_line_errors(pbn, tmp_path):
    (tmp_path / "train").mkdir()
    cases = {
        "empty.csv": (b"", "is empty: expected a header row and one row per painting"),
        "header.csv": (b"filename,artist\n", "has a header but no paintings"),
        "latin1.csv": ("filename,artist\na.jpg,Zoë\n".encode("latin-1"), "is not UTF-8 text (byte 0xeb at offset 24); save it as UTF-8"),
        "ragged.csv": (b"filename,artist\na.jpg,X,extra\n", "row 2 has 3 fields but the header has 2"),
    }
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        result = pbn("ingest", tmp_path / name, expect=2)
        assert result.output.count("\n") == 1 and "Traceback" not in result.output
        assert message in result.output, result.output
    missing = pbn("ingest", tmp_path / "nope.csv", expect=2)
    assert "nope.csv does not exist" in missing.output
    (tmp_path / "ok.csv").write_text("filename,artist\na.jpg,X\n")
    no_folder = pbn("ingest", tmp_path / "ok.csv", "--images", tmp_path / "gone", expect=2)
    assert "image folder" in no_folder.output and "does not exist" in no_folder.output


def test_a_workspace_moved_with_its_images_finds_them(tmp_path):
    project = tmp_path / "project"
    synth(project / "data", artists=10, paintings=4, seed=5, min_size=40, max_size=60)
    Pbn(project / "ws")("ingest", project / "data/train_info.csv")
    Pbn(project / "ws")("clean")
    assert Workspace(project / "ws").record("clean").extra["image_root"] == os.path.join("..", "data", "train")
    alone = tmp_path / "copy/ws"  # the workspace copied without its images still finds them where they are
    shutil.copytree(project / "ws", alone)
    assert image_root(Workspace(alone)) == os.path.realpath(project / "data/train")

    moved = tmp_path / "elsewhere/project"
    moved.parent.mkdir()
    os.rename(project, moved)  # the workspace and its images together, under a new parent
    ws = Workspace(moved / "ws")
    assert image_root(ws) == os.path.realpath(moved / "data/train")
    Pbn(ws.root)("split")
    Pbn(ws.root)("resize", "--size", "32")
    assert len(pd.read_parquet(ws.manifest("resize"))) == 40 and pd.read_parquet(ws.rejected("resize")).empty
    files = painting_files(ws)
    assert len(files) == 40 and all(f.startswith(str(moved)) and os.path.isfile(f) for f in files.values())

    lost = Pbn(alone)("resize", "--size", "32", expect=2)  # the copy's images moved away: one line, and --images
    assert lost.output.count("\n") == 1 and "the workspace may have moved: point to it with --images" in lost.output
    Pbn(alone)("resize", "--size", "32", "--images", moved / "data/train")
    old = Record("ingest", extra={"image_root": str(moved / "data/train")})  # as older workspaces recorded it
    assert image_root(Workspace(tmp_path / "anywhere"), old) == os.path.realpath(moved / "data/train")
