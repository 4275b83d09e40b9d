"""The onnx engine: onnxruntime embeds as PyTorch does, answers start without torch, the store and eval say which
engine computed what, and without the extra the choice is one line.

The rest of the suite embeds with PyTorch (conftest.py sets PBN_ENGINE=torch); here the same fixture run is
evaluated again with the onnx engine from an empty store, and every answer is checked against the torch one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from pbn_cli.cli import app
from pbn_cli.core.errors import InputError
from pbn_cli.core.runs import Run
from pbn_cli.core.workspace import Workspace
from pbn_cli.data.cache import CacheData
from pbn_cli.model import engine, trained
from pbn_cli.model.store import model_store
from serving import painting_files

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
pytest.importorskip("onnx")

runner = CliRunner()
# figures averaged over many triplets and pairs: a rank flipped by float noise moves them by little. The fixture's
# one-epoch network puts its paintings within ~1e-5 of each other, so the attribution figures (8 known queries,
# an attribution space chosen among near-ties) are not among them: there the engines' 1e-7 differences decide.
FIGURES = ("triplet_accuracy", "pair_auc", "verification_accuracy", "calibration_ece", "eer")


def _invoke(ws, *args, expect: int = 0):
    result = runner.invoke(app, [*map(str, args), "-w", str(ws)])
    assert result.exit_code == expect, result.output
    return result


@pytest.fixture(scope="module")
def onnx_run(tmp_path_factory, evaluated_run):
    """The evaluated fixture run (torch) evaluated again with the onnx engine, from an empty store; and its export."""
    ws = tmp_path_factory.mktemp("engine") / "ws"
    shutil.copytree(evaluated_run, ws)
    torch_store = model_store(Workspace(ws), json.loads((ws / "runs/r/calibration.json").read_text())["best"]["weights"])
    shutil.move(torch_store.folder, ws.parent / "torch-store")  # kept aside to compare with
    result = _invoke(ws, "eval", "--engine", "auto", "--device", "cpu")  # auto: onnx here, where the extra is installed
    assert "exporting run r's network to ONNX" in result.output
    _invoke(ws, "export", "r", ws.parent / "r.onnx")
    return ws


def test_the_engines_agree_on_embeddings_and_figures(onnx_run, evaluated_run):
    ws = Workspace(onnx_run)
    fingerprint = json.loads((onnx_run / "runs/r/calibration.json").read_text())["best"]["weights"]
    ours = model_store(ws, fingerprint)
    theirs = type(ours)(onnx_run.parent / "torch-store")
    rows = CacheData(ws).split("all")
    assert ours.engines() == {"onnx": len(ours.chunks())} and theirs.engines() == {"torch": len(theirs.chunks())}
    assert np.abs(ours.read(rows) - theirs.read(rows)).max() <= engine.TOLERANCE
    status = {s["store"]: s for s in json.loads(_invoke(onnx_run, "index", "status", "--json").stdout)}
    assert status[fingerprint]["engines"] == {"onnx": len(ours.chunks())}  # `pbn index status` says who wrote it
    onnx_figures = json.loads((onnx_run / "runs/r/eval/test/metrics.json").read_text())
    torch_figures = json.loads((evaluated_run / "runs/r/eval/test/metrics.json").read_text())
    assert (onnx_figures["engine"], torch_figures["engine"]) == ("onnx", "torch")
    shared = [name for name in FIGURES if name in torch_figures]
    assert len(shared) == len(FIGURES)
    for name in shared:
        assert abs(onnx_figures[name] - torch_figures[name]) <= 0.005, name
    timing = json.loads((onnx_run / "runs/r/eval/test/time.json").read_text())
    assert timing["embedded_now"]["eval"] == timing["embedded_of"]["eval"] > 0 and "embedding (onnx)" in timing["seconds"]
    report = (onnx_run / "runs/r/eval/test/report.md").read_text()
    assert "## Where the time went" in report and "embedding (onnx)" in report
    assert (onnx_run / "runs/r/onnx" / f"{fingerprint}.onnx").is_file()


def test_a_second_eval_embeds_nothing(onnx_run, tmp_path):
    ws = tmp_path / "ws"
    shutil.copytree(onnx_run, ws)
    result = _invoke(ws, "eval", "--engine", "onnx")
    timing = json.loads((ws / "runs/r/eval/test/time.json").read_text())
    assert set(timing["embedded_now"].values()) == {0}
    assert "exporting" not in result.output  # the export is reused
    assert result.output.count("time: ") == 1


def test_answers_through_onnx_import_no_torch(onnx_run, tmp_path):
    """compare, attribute, search and predict with --model x.onnx, and compare with the run: torch, torchvision and
    timm stay out of sys.modules, and the answers are the torch engine's."""
    a, b = map(str, painting_files(onnx_run, "test")[:2])
    model = str(onnx_run.parent / "r.onnx")
    pairs = tmp_path / "pairs.csv"
    folder = os.path.dirname(a)
    pairs.write_text(f"index,image1,image2\n0,{os.path.relpath(a, folder)},{os.path.relpath(b, folder)}\n"
                     f"1,{os.path.relpath(b, folder)},{os.path.relpath(a, folder)}\n")
    commands = [["compare", a, b, "--model", model, "--json"],
                ["attribute", a, "--model", model, "-w", str(onnx_run), "--json"],
                ["search", a, "--model", model, "-w", str(onnx_run), "-k", "3", "--json"],
                ["predict", str(pairs), "--images", folder, "--model", model, "-o", str(tmp_path / "out.csv")],
                ["compare", a, b, "-w", str(onnx_run), "--run", "r", "--json"],
                ["attribute", a, "-w", str(onnx_run), "--json"]]
    code = ("import json, sys\nfrom typer.testing import CliRunner\nfrom pbn_cli.cli import app\n"
            f"outs = [CliRunner().invoke(app, args) for args in {commands!r}]\n"
            "print(json.dumps({'codes': [o.exit_code for o in outs], 'outputs': [o.stdout for o in outs], "
            "'modules': sorted(m for m in ('torch', 'torchvision', 'timm') if m in sys.modules)}))")
    env = {k: v for k, v in os.environ.items() if k != "PBN_ENGINE"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["codes"] == [0] * len(commands), got["outputs"]
    assert got["modules"] == []
    by_torch = [_invoke(onnx_run, *args[:1], *[x for x in args[1:] if x != "-w" and x != str(onnx_run)],
                        "--engine", "torch") for args in (commands[4], commands[5])]
    _close(json.loads(got["outputs"][4]), json.loads(by_torch[0].stdout))
    ours, theirs = (json.loads(text)["paintings"][0] for text in (got["outputs"][5], by_torch[1].stdout))
    # hands far behind tie at a score of 0 in any order; the answer and the leading hands' probabilities agree
    assert (ours["answer"], ours["verdict"], ours["hands"][0]["artist"]) == \
        (theirs["answer"], theirs["verdict"], theirs["hands"][0]["artist"])
    assert abs(ours["unknown_hand_probability"] - theirs["unknown_hand_probability"]) <= 0.01
    assert abs(ours["hands"][0]["probability"] - theirs["hands"][0]["probability"]) <= 0.01
    assert json.loads(got["outputs"][0])["distance"] == pytest.approx(json.loads(by_torch[0].stdout)["distance"],
                                                                       abs=1e-4)
    assert (tmp_path / "out.csv").read_text().count("\n") == 3


def _close(ours, theirs, tolerance: float = 1e-3) -> None:
    """The same answer: equal words and order, numbers within ``tolerance`` (the embeddings agree within 1e-4)."""
    assert type(ours) is type(theirs) or {type(ours), type(theirs)} == {int, float}
    if isinstance(ours, dict):
        assert ours.keys() == theirs.keys()
        for key in ours:
            _close(ours[key], theirs[key], tolerance)
    elif isinstance(ours, list):
        assert len(ours) == len(theirs)
        for x, y in zip(ours, theirs):
            _close(x, y, tolerance)
    elif isinstance(ours, float):
        assert abs(ours - theirs) <= tolerance
    else:
        assert ours == theirs


def test_a_changed_checkpoint_is_read_again_and_the_export_reused(onnx_run, tmp_path):
    ws = tmp_path / "ws"
    shutil.copytree(onnx_run, ws)
    fast = trained.from_run(Workspace(ws), "r", engine_name="onnx")
    assert fast.state is None and fast.runtime is not None  # from the export and the calibration alone
    best = Run(ws / "runs/r").best
    os.utime(best, ns=(best.stat().st_atime_ns, best.stat().st_mtime_ns + 10**9))  # the file touched
    again = trained.from_run(Workspace(ws), "r", engine_name="onnx")
    assert again.state is not None and again.runtime is not None  # weights read and fingerprinted; same export
    assert trained.from_run(Workspace(ws), "r", engine_name="onnx").state is None  # stamped anew
    assert {p.name for p in (ws / "runs/r/onnx").iterdir()} == \
        {"best.json", f"{fast.fingerprint()}.onnx", f"{fast.fingerprint()}-tiles.onnx"}
    pixels = fast.read(painting_files(ws, "test")[0])
    assert np.abs(fast.embed_one(pixels) - trained.from_run(Workspace(ws), "r").embed_one(pixels, torch.device("cpu"))).max() \
        <= engine.TOLERANCE


def test_the_engine_choice(monkeypatch, evaluated_run, tmp_path):
    assert engine.choose("torch", "cpu") == "torch" and engine.choose("onnx", "cpu") == "onnx"
    assert engine.choose("auto", "cpu") == "onnx" and engine.choose("auto", "cuda") == "torch"
    for bad, words in ((("onnx", "cuda"), "--engine onnx embeds on the CPU"), (("fast", "cpu"), "--engine must be")):
        with pytest.raises(InputError, match=words):
            engine.choose(*bad)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if the extra were not installed
    assert engine.choose("auto", "cpu") == "torch"
    a, b = map(str, painting_files(evaluated_run, "test")[:2])
    result = _invoke(evaluated_run, "compare", a, b, "--engine", "onnx", expect=2)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines == ["Error: --engine onnx needs the onnx extra: pip install 'pbn[onnx]'"]


def test_the_evidence_tiles_agree_between_engines(onnx_run):
    """The tile graph (exported beside the paintings' one) embeds the evidence's tiles as the torch network does,
    small tiles enlarged as ``F.interpolate`` enlarges them."""
    import torch.nn.functional as F

    from pbn_cli.inference import evidence as ev

    for side, size in ((21, 32), (112, 224), (7, 8)):
        theirs = F.interpolate(torch.eye(side)[None, None], size=(size, side), mode="bilinear", antialias=True,
                               align_corners=False)[0, 0].numpy()
        assert np.abs(engine.upsample_matrix(side, size) - theirs).max() < 1e-6
    ws = Workspace(onnx_run)
    fast, slow = trained.from_run(ws, "r", engine_name="onnx"), trained.from_run(ws, "r")
    assert fast.tiles is not None and fast.state is None
    path = painting_files(onnx_run, "test")[0]
    ours, theirs = ev.tiles(fast, path, None), ev.tiles(slow, path, torch.device("cpu"))
    assert ours.boxes.shape == theirs.boxes.shape and ours.boxes[0, 2] < fast.config.model.input_size  # enlarged
    assert np.abs(ours.emb - theirs.emb).max() <= engine.TOLERANCE
    assert fast.state is None  # the evidence needed no torch network
