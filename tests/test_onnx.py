"""ONNX export: onnxruntime gives PyTorch's embeddings and the run's verdicts; anything else is one line.

Real runs on the CPU: the quick preset from scratch (``evaluated_run``) and
the cpu preset on timm's tiny test_efficientnet with its untouched copy and
--levels 2, each exported to .onnx and read back through onnxruntime.
"""

import json
import shutil
import sys

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from pbn_cli.cli import app
from reliability.helpers import one_error_line
from serving import painting_files

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
onnx = pytest.importorskip("onnx")
timm = pytest.importorskip("timm")

runner = CliRunner()


def _images(ws, n: int = 2) -> list[str]:
    """The first n - 1 test paintings and the last (another artist's)."""
    test = [str(p) for p in painting_files(ws, "test")]
    return [*test[: n - 1], test[-1]]


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory, tiny_workspace):
    """The cpu preset's recipe on a tiny pretrained timm network: mixed views, the untouched copy, --levels 2."""
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("onnx-cpu")
    torch.manual_seed(0)
    weights = root / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in timm.create_model("test_efficientnet").state_dict().items()}, str(weights))
    ws = root / "ws"
    shutil.copytree(tiny_workspace, ws)
    for args in (["train", "--preset", "cpu", "--backbone", "timm:test_efficientnet", "--weights", weights,
                  "--input-size", "32", "--batch-size", "16", "--epochs", "1", "--levels", "2", "--device", "cpu",
                  "--run", "e"], ["eval", "--run", "e", "--split", "val", "--device", "cpu"]):
        result = runner.invoke(app, [*map(str, args), "-w", str(ws)])
        assert result.exit_code == 0, result.output
    return ws, "e"


@pytest.fixture(scope="module", params=["quick", "cpu"])
def exported(request, tmp_path_factory):
    """(workspace, run, model.onnx) for each recipe."""
    ws, run = (request.getfixturevalue("evaluated_run"), "r") if request.param == "quick" else \
        request.getfixturevalue("cpu_run")
    path = tmp_path_factory.mktemp("onnx") / "painter.onnx"
    result = runner.invoke(app, ["export", run, str(path), "-w", str(ws)])
    assert result.exit_code == 0, result.output
    assert "as ONNX (opset 18); onnxruntime's embeddings match PyTorch's within" in result.output
    assert not [p for p in path.parent.iterdir() if p != path]  # one file, no temp file left
    return ws, run, path


def test_graph_views_are_grid_views():
    """The antialiased shrink as two matrix products gives the views ``grid_views`` gives; crops are the same slices."""
    from pbn_cli.model.onnx_model import graph_views, shrink_matrix
    from pbn_cli.networks.views import grid_views

    torch.manual_seed(1)
    for side, size, view in [(64, 32, "mixed"), (64, 24, "resize"), (100, 32, "mixed"), (256, 224, "mixed"),
                             (64, 32, "crop"), (48, 64, "crop"), (64, 64, "resize")]:
        x = torch.randint(0, 256, (3, side, side, 3), dtype=torch.uint8)
        ours, theirs = graph_views(x, size, view, shrink_matrix(side, size)), grid_views(x, size, view)
        assert ours.shape == theirs.shape
        assert (ours - theirs).abs().max() < 1e-6, (side, size, view)
        if view == "crop" and size < side:
            assert torch.equal(ours, theirs)


def test_onnxruntime_embeds_as_pytorch_does(exported):
    from pbn_cli.data.cache import CacheData
    from pbn_cli.core.workspace import Workspace
    from pbn_cli.model import trained
    from pbn_cli.networks.embed import embed_images

    ws, run, path = exported
    cpu = torch.device("cpu")
    model, torch_model = trained.from_file(path), trained.from_run(Workspace(ws), run)
    assert model.runtime is not None and model.state is None
    assert model.name == run and model.fingerprint() == torch_model.fingerprint()
    assert model.calibration == torch_model.calibration
    assert (model.image_size, model.fit) == (torch_model.image_size, torch_model.fit)
    data = CacheData(Workspace(ws))
    images = data.gather(data.split("test").rows)
    expected = embed_images(torch_model.network(cpu), lambda idx: images[idx], len(images), cpu)
    assert np.abs(model.runtime.session.run(None, {"images": images})[0] - expected).max() < 1e-4  # batched
    for pixels in [model.read(p) for p in _images(ws, 3)]:  # through the image door, one painting alone
        assert np.abs(model.embed_one(pixels) - torch_model.embed_one(pixels, cpu)).max() < 1e-4
    meta = model.runtime.metadata
    config = torch_model.config.model
    assert (meta["pbn.view"], int(meta["pbn.input_size"]), meta["pbn.weights"]) == \
        (config.view, config.input_size, torch_model.fingerprint())
    assert float(meta["pbn.threshold"]) == torch_model.calibration["threshold"]
    assert [i.type for i in model.runtime.session.get_inputs()] == ["tensor(uint8)"]


def test_compare_with_the_onnx_model_gives_the_runs_verdict(exported, tmp_path, monkeypatch):
    from pbn_cli.model import trained

    ws, run, path = exported
    a, b = _images(ws)
    with_run = runner.invoke(app, ["compare", a, b, "--run", run, "--json", "--device", "cpu", "-w", str(ws)])
    assert with_run.exit_code == 0, with_run.output
    monkeypatch.chdir(tmp_path)  # no workspace here
    alone = runner.invoke(app, ["compare", a, b, "--model", str(path), "--json", "--device", "cpu", "--sheet", "v.png"])
    assert alone.exit_code == 0, alone.output
    ours, theirs = json.loads(alone.stdout), json.loads(with_run.stdout)
    assert abs(ours["distance"] - theirs["distance"]) < 1e-4
    # p(same) moves at most |platt_a| / 4 per unit of distance (a tiny run's calibration can be very steep)
    slope = abs(trained.from_file(path).calibration["platt_a"]) / 4
    assert abs(ours["same_artist_probability"] - theirs["same_artist_probability"]) <= \
        slope * abs(ours["distance"] - theirs["distance"]) + 1e-9
    assert (ours["same_artist"], ours["threshold"], ours["run"]) == (theirs["same_artist"], theirs["threshold"], run)
    assert (tmp_path / "v.png").exists()
    evidence = runner.invoke(app, ["compare", a, b, "--model", str(path), "--evidence", "e.png"])
    assert evidence.exit_code == 2 and "is an ONNX model" in one_error_line(evidence.output)
    who = runner.invoke(app, ["attribute", a, "--model", str(path), "-w", str(ws), "--json"])  # the run's attribution
    by_run = runner.invoke(app, ["attribute", a, "--run", run, "-w", str(ws), "--json"])
    assert who.exit_code == by_run.exit_code == 0, who.output
    ours, theirs = (json.loads(r.stdout)["paintings"][0] for r in (who, by_run))  # hands far behind tie at 0
    assert (ours["answer"], ours["hands"][0]["artist"]) == (theirs["answer"], theirs["hands"][0]["artist"])
    empty = tmp_path / "empty"
    shutil.copytree(ws, empty, ignore=shutil.ignore_patterns("runs"))  # the paintings, not the run
    who = runner.invoke(app, ["attribute", a, "--model", str(path), "-w", str(empty)])
    assert who.exit_code == 2 and "carries no attribution model" in one_error_line(who.output), who.output


def _onnx_file(path, elem_type: int, shape: list, metadata: dict | None = None):
    """A small foreign ONNX model: (n, 3) means of its 4-d input (channels first or last), cast to float."""
    from onnx import TensorProto, helper

    axes = [1, 2] if shape[-1] == 3 else [2, 3]
    graph = helper.make_graph(
        [helper.make_node("Cast", ["x"], ["f"], to=TensorProto.FLOAT),
         helper.make_node("ReduceMean", ["f"], ["y"], axes=axes, keepdims=0)],
        "foreign", [helper.make_tensor_value_info("x", elem_type, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
    return path


def test_other_onnx_files_are_refused_in_one_line(evaluated_run, tmp_path):
    from onnx import TensorProto

    a, b = _images(evaluated_run)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not an onnx model at all")
    cases = {
        _onnx_file(tmp_path / "float.onnx", TensorProto.FLOAT, ["n", 3, 64, 64],
                   {"pbn.kind": "pbn-onnx-model"}): "is not a pbn painting model: it takes x: tensor(float)",
        _onnx_file(tmp_path / "other.onnx", TensorProto.UINT8, ["n", 64, 64, 3]): "not a pbn export (no pbn metadata)",
        garbage: "cannot be loaded as an ONNX model",
        tmp_path / "missing.onnx": "missing.onnx does not exist",
    }
    for path, message in cases.items():
        result = runner.invoke(app, ["compare", a, b, "--model", str(path), "--json"])
        assert result.exit_code == 2 and message in one_error_line(result.output), (path, result.output)


def test_a_missing_onnxruntime_is_one_line(evaluated_run, tmp_path, monkeypatch):
    a, b = _images(evaluated_run)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if it were not installed
    result = runner.invoke(app, ["compare", a, b, "--model", str(tmp_path / "m.onnx")])
    assert result.exit_code == 2
    assert one_error_line(result.output) == "Error: reading an ONNX model needs onnxruntime: pip install 'pbn[onnx]'"
    result = runner.invoke(app, ["export", "r", str(tmp_path / "m.onnx"), "-w", str(evaluated_run)])
    assert result.exit_code == 2 and "pip install 'pbn[onnx]'" in one_error_line(result.output)
    assert not list(tmp_path.iterdir())
