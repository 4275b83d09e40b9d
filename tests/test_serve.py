"""pbn serve through its HTTP API on a tiny trained run: the same answers as the commands, bad uploads, many tabs."""

from __future__ import annotations

import base64
import io
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from serving import Served, cli_json, outside_painting, painting_files, runner

from pbn_cli.cli import app
from pbn_cli.web.service import MAX_UPLOAD_BYTES

@pytest.fixture(scope="module")
def served(tmp_path_factory, evaluated_run):
    ws = tmp_path_factory.mktemp("served") / "ws"
    shutil.copytree(evaluated_run, ws)
    s = Served(ws)
    yield s
    s.close()


def test_compare_through_the_page_equals_pbn_compare(served):
    a, b = painting_files(served.ws)[0], painting_files(served.ws)[-1]
    answer = served.post("api/compare", {"a": a, "b": b})
    assert answer.status_code == 200, answer.text
    page = answer.json()
    cli = cli_json(served.ws, "compare", a, b)
    assert page["distance"] == pytest.approx(cli["distance"], abs=1e-6)
    assert page["same_artist_probability"] == pytest.approx(cli["same_artist_probability"], abs=1e-6)
    assert page["same_artist"] == cli["same_artist"] and page["threshold"] == cli["threshold"] and page["run"] == "r"
    # the pictures: both views as the model sees them, neighbours of each, the val histogram with this pair
    assert [im["name"] for im in page["images"]] == [a.name, b.name]
    view = Image.open(io.BytesIO(base64.b64decode(page["images"][0]["view"].split(",", 1)[1])))
    assert view.size == (64, 64)  # the workspace's cache size: the crop the network is given
    assert len(page["neighbours"]) == 2 and all(len(n) == 5 for n in page["neighbours"])
    drawn = page["histogram"]
    assert 0 < drawn["left"] < drawn["right"] < 1 and 0 < drawn["top"] < drawn["bottom"] < 1
    assert drawn["xmin"] <= 0 < drawn["xmax"]
    assert served.client.get(drawn["picture"]).content.startswith(b"\x89PNG")


def test_search_through_the_page_equals_pbn_search(served, tmp_path):
    query = outside_painting(served.ws, tmp_path)
    for split, k in (("all", 10), ("test", 4)):
        answer = served.post("api/search", {"image": query}, k=k, split=split)
        assert answer.status_code == 200, answer.text
        page = answer.json()
        cli = cli_json(served.ws, "search", query, "-k", k, "--split", split)
        assert [n["image_id"] for n in page["neighbours"]] == [str(n["image_id"]) for n in cli["neighbours"]]
        assert np.allclose([n["distance"] for n in page["neighbours"]], [n["distance"] for n in cli["neighbours"]], atol=1e-6)
        assert page["vote"] == cli["vote"]
        assert split == "all" or {n["split"] for n in page["neighbours"]} == {split}
    thumb = served.client.get(page["neighbours"][0]["thumbnail"])
    assert thumb.status_code == 200 and Image.open(io.BytesIO(thumb.content)).size == (64, 64)


def test_bad_uploads_get_one_line_and_the_server_keeps_serving(served, tmp_path):
    good = painting_files(served.ws)[:2]
    text = tmp_path / "notes.jpg"
    text.write_text("these are my notes, not a painting\n" * 20)
    answer = served.post("api/compare", {"a": text, "b": good[1]})
    assert answer.status_code == 400 and answer.json()["error"].startswith("cannot read notes.jpg")
    assert "\n" not in answer.json()["error"]
    empty = served.post("api/search", {"image": ("empty.png", b"")})
    assert empty.status_code == 400 and "empty file" in empty.json()["error"]
    big = served.post("api/search", {"image": ("big.jpg", b"\xff" * (MAX_UPLOAD_BYTES + 10))})
    assert big.status_code in (400, 413) and "MB" in big.json()["error"]
    bad_split = served.post("api/search", {"image": good[0]}, split="everything")
    assert bad_split.status_code == 400 and "split must be one of" in bad_split.json()["error"]
    missing = served.client.post("api/compare", files={"a": ("a.png", good[0].read_bytes())})
    assert missing.status_code == 422  # FastAPI's answer to a form without b
    assert served.client.get("api/paintings/99999.png").status_code == 400
    again = served.post("api/compare", {"a": good[0], "b": good[1]})
    assert again.status_code == 200 and again.json()["run"] == "r"


def test_twenty_tabs_at_once_get_the_right_answers_and_each_image_is_embedded_once(tmp_path, evaluated_run):
    ws = tmp_path / "ws"
    shutil.copytree(evaluated_run, ws)
    s = Served(ws)
    try:
        files = painting_files(ws)[:4]
        pairs = [(files[i % 4], files[(i + 1 + i // 4) % 4]) for i in range(20)]
        expected = {(a, b): cli_json(ws, "compare", a, b) for a, b in set(pairs)}
        with ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(lambda p: s.post("api/compare", {"a": p[0], "b": p[1]}, k=3), pairs))
        assert all(r.status_code == 200 for r in answers), [r.text for r in answers if r.status_code != 200]
        for (a, b), r in zip(pairs, answers):
            assert r.json()["distance"] == pytest.approx(expected[(a, b)]["distance"], abs=1e-6)
            assert r.json()["same_artist"] == expected[(a, b)]["same_artist"]
        assert s.service.embedded == 4  # 40 images asked for, 4 distinct: each embedded once
        # the run's embedding store, which `pbn search` reads too: one store, each painting once
        (store,) = [p for p in (ws / "embeddings").iterdir() if p.is_dir()]
        ids = pd.concat([pd.read_parquet(p, columns=["image_id"]) for p in store.glob("part-*.parquet")])["image_id"]
        assert ids.is_unique
    finally:
        s.close()


def test_uploads_write_nothing_into_the_workspace(tmp_path, evaluated_run):
    ws = tmp_path / "ws"
    shutil.copytree(evaluated_run, ws)
    s = Served(ws)
    try:
        s.service.paintings()  # the search cache, which `pbn search` writes too
        before = {p: p.stat().st_mtime_ns for p in ws.rglob("*")}
        query = outside_painting(ws, tmp_path)
        assert s.post("api/search", {"image": query}).status_code == 200
        assert s.post("api/compare", {"a": query, "b": painting_files(ws)[0]}).status_code == 200
        after = {p: p.stat().st_mtime_ns for p in ws.rglob("*")}
        assert after == before
    finally:
        s.close()


def test_runs_and_their_reports(served):
    runs = served.client.get("api/runs").json()
    assert runs["serving"] == "r" and [r["run"] for r in runs["runs"]] == ["r"]
    row = runs["runs"][0]
    assert row["reports"] == ["test"] and row["test_triplet_accuracy"] is not None and row["serving"]
    html = served.client.get("api/runs/r/reports/test").text
    assert "<table>" in html and "triplet accuracy" in html and 'src="api/runs/r/reports/test/roc.png"' in html
    picture = served.client.get("api/runs/r/reports/test/roc.png")
    assert picture.status_code == 200 and picture.content.startswith(b"\x89PNG")
    for bad in ("api/runs/r/reports/test/..%2Fmetrics.json", "api/runs/r/reports/../config.json",
                "api/runs/r/reports/nothing", "api/runs/..%2F..%2Fmanifests/reports/test"):
        assert served.client.get(bad).status_code in (400, 404), bad


def test_an_exported_model_serves_compare_alone(tmp_path, evaluated_run):
    model_file = tmp_path / "painter.pt"
    assert runner.invoke(app, ["export", "r", str(model_file), "-w", str(evaluated_run)]).exit_code == 0
    s = Served(None, model_file)
    try:
        a, b = painting_files(evaluated_run)[:2]
        page = s.post("api/compare", {"a": a, "b": b}).json()
        assert page["distance"] == pytest.approx(cli_json(evaluated_run, "compare", a, b)["distance"], abs=1e-6)
        assert "neighbours" not in page
        assert "need `pbn serve -w WS`" in s.client.get("api/runs").json()["error"]
        assert s.client.get("api/model").json()["workspace"] is False
    finally:
        s.close()


def test_serve_from_the_command_line_prints_the_address_and_stops_cleanly_on_ctrl_c(tmp_path, evaluated_run):
    ws = tmp_path / "ws"
    shutil.copytree(evaluated_run, ws)
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "pbn_cli", "serve", "-w", str(ws), "--port", "0", "--device", "cpu",
                             "--host", "0.0.0.0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "COLUMNS": "200"})
    try:
        line = proc.stdout.readline()
        assert "pbn serve: run r (best) on http://0.0.0.0:" in line, (line, proc.stderr.read() if proc.poll() else "")
        port = int(line.split("http://0.0.0.0:")[1].split("/")[0])
        ready = time.monotonic() - started
        page = httpx.get(f"http://127.0.0.1:{port}/", timeout=30)
        assert page.status_code == 200 and "pbn: same painter?" in page.text
        assert httpx.get(f"http://127.0.0.1:{port}/api/model", timeout=30).json()["run"] == "r"
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "Traceback" not in err, err
    assert "pbn serve: stopped" in out
    assert "anyone who can reach this machine's port" in err  # a host other than loopback is warned about
    assert ready < 30


def test_serve_without_the_web_extra_says_what_to_install(monkeypatch, evaluated_run):
    import pbn_cli.core.extras as extras  # where pbn checks an extra's modules

    monkeypatch.setattr(extras, "find_spec", lambda name: None if name == "fastapi" else object())
    result = runner.invoke(app, ["serve", "-w", str(evaluated_run)])
    assert result.exit_code == 2 and "pip install 'pbn[web]'" in result.output and "Traceback" not in result.output


def test_pbn_help_imports_nothing_of_the_web():
    code = "import sys, pbn_cli.cli; print(sorted(m for m in sys.modules if m.split('.')[0] in ('fastapi', 'uvicorn', 'starlette') or m.startswith('pbn_cli.web')))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"


def test_attribute_through_the_page_equals_pbn_attribute(served, tmp_path):
    query = outside_painting(served.ws, tmp_path)
    answer = served.post("api/attribute", {"image": query}, k=4, among="all", evidence="false")
    assert answer.status_code == 200, answer.text
    page = answer.json()
    cli = cli_json(served.ws, "attribute", query, "-k", 4)["paintings"][0]
    assert [h["artist"] for h in page["hands"]] == [h["artist"] for h in cli["hands"]]
    assert np.allclose([h["probability"] for h in page["hands"]], [h["probability"] for h in cli["hands"]], atol=1e-6)
    said = ("unknown_hand", "answer", "reason")
    assert [page[key] for key in said] == [cli[key] for key in said]
    assert all(c["thumbnail"].startswith("api/paintings/") for h in page["hands"] for c in h["closest"])
    with_evidence = served.post("api/attribute", {"image": query}, k=2).json()
    assert with_evidence["evidence"].startswith("data:image/png;base64,")
    bad = served.post("api/attribute", {"image": query}, among="everywhere")
    assert bad.status_code == 400 and "--among must be one of" in bad.json()["error"]


def test_the_evidence_of_a_pair_is_a_picture(served):
    a, b = painting_files(served.ws)[:2]
    answer = served.post("api/evidence", {"a": a, "b": b})
    assert answer.status_code == 200, answer.text
    picture = Image.open(io.BytesIO(base64.b64decode(answer.json()["evidence"].split(",", 1)[1])))
    assert picture.format == "PNG" and picture.size[0] > 600
    data, details = answer.json()["evidence_data"], answer.json()["details"]
    assert [d["number"] for d in details] == [p["number"] for p in data["pairs"]] and details
    for d in details:  # each pair's two details, cut from the uploads at the boxes the data gives
        for side in "ab":
            x0, y0, x1, y1 = d[side]
            shown = Image.open(io.BytesIO(base64.b64decode(d[f"{side}_detail"].split(",", 1)[1])))
            assert shown.size == (x1 - x0, y1 - y0) or max(shown.size) == 1024
