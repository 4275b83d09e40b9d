"""The public Python API (pbn_cli/api, docs/api.md): the same answers as the command line's --json, its doctests,
cheap to import, and what the command line may import."""

from __future__ import annotations

import ast
import doctest
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import pbn_cli as pbn
from pbn_cli.cli import app
from pbn_cli.data.synth import synth

PACKAGE = Path(pbn.__file__).parent


def _cli(*args) -> dict:
    result = CliRunner().invoke(app, [*map(str, args)])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _files(ws: Path, n: int = 3) -> list[Path]:
    table = pbn.Workspace(ws).paintings("test")
    return [Path(f) for f in table.sort_values("image_id")["file"].iloc[:n]]


def test_the_api_answers_as_the_command_line_does(evaluated_run):
    a, b, c = _files(evaluated_run)
    model = pbn.load(workspace=evaluated_run, device="cpu", engine="torch")
    w = ("--device", "cpu", "-w", evaluated_run)

    verdict = model.compare(a, c)
    assert verdict.to_dict() == pytest.approx(_cli("compare", a, c, "--json", *w))
    assert verdict.words == ("same artist" if verdict.same_artist else "different artists")

    hands = model.attribute([a, b], k=3)
    cli = _cli("attribute", a, b, "-k", 3, "--json", *w)
    assert cli["run"] == model.name
    assert [h.to_dict() for h in hands] == cli["paintings"]

    near = model.search(a, 4, split="test")
    cli = _cli("search", a, "-k", 4, "--split", "test", "--json", *w)
    assert near.to_dict("records") == cli["neighbours"]
    assert [list(v) for v in near.attrs["vote"]] == cli["vote"]

    assert pbn.Workspace(evaluated_run).status().to_dict("records") == _cli("status", "--json", "-w", evaluated_run)
    runs = pbn.Workspace(evaluated_run).runs().to_dict("records")
    assert json.loads(json.dumps(runs)) == _cli("runs", "--json", "-w", evaluated_run)


def test_images_in_memory_are_the_files_pixels(evaluated_run, tmp_path):
    """A PIL image or an array gives the embedding of the same picture read from a lossless file."""
    model = pbn.load(workspace=evaluated_run, device="cpu", engine="torch")
    pixels = np.asarray(Image.open(_files(evaluated_run, 1)[0]).convert("RGB"))
    Image.fromarray(pixels).save(tmp_path / "p.png")
    from_file = model.embed(tmp_path / "p.png")
    assert from_file.ndim == 1
    np.testing.assert_allclose(model.embed(pixels), from_file, atol=1e-6)
    np.testing.assert_allclose(model.embed([Image.fromarray(pixels)])[0], from_file, atol=1e-6)
    hand = model.attribute(pixels, k=2)  # an image in memory is never one of the gallery's files
    assert hand.query == "image 1" and len(hand.hands) == 2
    with pytest.raises(pbn.PbnError, match="uint8"):
        model.embed(pixels.astype(np.float32))


def test_errors_are_the_command_lines_one_liners(tmp_path, evaluated_run):
    with pytest.raises(pbn.PbnError) as err:
        pbn.load(workspace=tmp_path / "empty")
    assert "\n" not in str(err.value)
    model = pbn.load(workspace=evaluated_run, device="cpu", engine="torch")
    alone = pbn.Model(model.trained)  # a model without a workspace has no paintings to look among
    with pytest.raises(pbn.InputError, match="workspace"):
        alone.search(_files(evaluated_run, 1)[0])
    with pytest.raises(pbn.InputError, match="does not exist"):
        model.compare(tmp_path / "missing.jpg", _files(evaluated_run, 1)[0])


def test_what_the_api_would_ignore_it_refuses(tmp_path, evaluated_run):
    """Arguments that could not take effect are one-line errors, not silently dropped."""
    a = _files(evaluated_run, 1)[0]
    model = pbn.load(workspace=pbn.Workspace(evaluated_run), device="cpu", engine="torch")
    assert repr(model) == f"Model('r', engine='torch', workspace={str(evaluated_run)!r})" and model.checkpoint == "best"
    model.export(tmp_path / "r.pt")
    refused = [
        (lambda: pbn.load(tmp_path / "r.pt", run="r"), "model file"),
        (lambda: pbn.train(evaluated_run, epochs="3"), "epochs='3': expected int"),
        (lambda: pbn.train(evaluated_run, gpu=True, device="cpu"), "gpu=True"),
        (lambda: pbn.evaluate(evaluated_run, baseline="color-hist", run="r", half=True), "run, half applies"),
        (lambda: pbn.Workspace(evaluated_run).paintings("tset"), "unknown split"),
        (lambda: model.embed([]), "at least one"),
        (lambda: model.search(a, index="annoy"), "unknown index"),
        (lambda: model.evidence(np.zeros((64, 64, 3), np.float32), a), "uint8"),
    ]
    for call, message in refused:
        with pytest.raises(pbn.InputError, match=message):
            call()
    assert pbn.load(tmp_path / "r.pt", workspace=evaluated_run).checkpoint is None
    assert list(pbn.Workspace(tmp_path / "empty").runs().columns[:2]) == ["run", "mode"]


def test_importing_pbn_cli_is_cheap():
    """No torch, pandas or matplotlib until they are needed; the names resolve without torch."""
    code = ("import sys, pbn_cli; assert pbn_cli.__version__; "
            "heavy = [m for m in ('torch', 'pandas', 'matplotlib') if m in sys.modules]; "
            "pbn_cli.Workspace, pbn_cli.load, pbn_cli.train, pbn_cli.evaluate; "
            "print(heavy, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[] False"


def test_every_public_name_resolves():
    assert sorted(pbn.__all__) == sorted(set(pbn.__all__))
    for name in pbn.__all__:
        assert getattr(pbn, name) is not None
    with pytest.raises(AttributeError):
        pbn.no_such_name


def _api_modules():
    return sorted(p for p in (PACKAGE / "api").glob("*.py"))


@pytest.fixture(scope="module")
def doctest_globals(tmp_path_factory, evaluated_run, tiny_workspace):
    """What the docstrings' examples name: copies of the fixtures (the examples export and evaluate)."""
    scratch = tmp_path_factory.mktemp("doctest")
    synth(scratch / "data", artists=8, paintings=6, seed=3, min_size=64, max_size=128)
    trained = scratch / "trained"
    shutil.copytree(evaluated_run, trained)
    prepared = scratch / "prepared"
    shutil.copytree(tiny_workspace, prepared)
    a, b = _files(evaluated_run, 2)
    return {"pbn": pbn, "scratch": scratch, "data": scratch / "data", "workspace": trained, "trained": trained,
            "prepared": prepared, "a": a, "b": b}


@pytest.mark.parametrize("path", _api_modules() + [PACKAGE / "__init__.py"], ids=lambda p: p.name)
def test_the_docstrings_examples_run(path, doctest_globals):
    import importlib

    name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(module, name, globs={**vars(module), **doctest_globals}):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0


def test_the_command_line_calls_only_the_api():
    """cli/ imports the API (pbn_cli.api), its own modules and core's terminal tools (errors, progress, runs,
    manifests), nothing else of the library."""
    allowed = ("pbn_cli.api", "pbn_cli.cli", "pbn_cli.core")
    wrong = []
    for path in sorted((PACKAGE / "cli").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            elif isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            else:
                continue
            wrong += [f"{path.name}: {m}" for m in modules if m.startswith("pbn_cli.") and not m.startswith(allowed)]
    assert wrong == []


def test_the_command_line_and_the_api_default_alike():
    """An option's default is written in the command and in the API function it calls: the two agree."""
    import inspect

    from pbn_cli.cli import answer, collection, data, evaluate

    pairs = [(data.ingest, pbn.Workspace.ingest), (data.clean, pbn.Workspace.clean),
             (data.split, pbn.Workspace.split), (data.resize, pbn.Workspace.resize), (data.synth, pbn.synth),
             (evaluate.eval, pbn.evaluate), (answer.attribute, pbn.Model.attribute), (answer.search, pbn.Model.search),
             (collection.embed, pbn.Workspace.embed)]
    compared, differ = 0, []
    for command, function in pairs:
        ours = inspect.signature(function).parameters
        for name, p in inspect.signature(command).parameters.items():
            if name in ours and ours[name].default is not inspect.Parameter.empty:
                compared += 1
                if p.default != ours[name].default:
                    differ.append(f"{command.__name__} {name}: {p.default!r} != {ours[name].default!r}")
    assert differ == [] and compared >= 25


def test_every_public_name_has_one_home():
    from pbn_cli import api

    assert sorted(api._HOME) == sorted(pbn.__all__) == sorted(api.__all__)
