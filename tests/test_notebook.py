"""docs/notebook.ipynb runs: its code cells in order, on a small set (the parameters cell replaced, as papermill
would), leave the pictures and answers it promises."""

from __future__ import annotations

import json
from pathlib import Path

NOTEBOOK = Path(__file__).parents[1] / "docs" / "notebook.ipynb"

SMALL = '''
from pathlib import Path
FOLDER = Path("nb")
ARTISTS, PAINTINGS, SEED = 12, 5, 0
SYNTH = dict(min_size=64, max_size=128)
TRAIN = dict(epochs=1, input_size=32, embedding_dim=16, batch_size=16)
DEVICE = "cpu"
'''


def test_the_notebook_runs(tmp_path, monkeypatch):
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    assert "parameters" in code[0]["metadata"].get("tags", [])
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(SMALL, "parameters", "exec"), scope)
    for n, cell in enumerate(code[1:], start=1):
        exec(compile("".join(cell["source"]), f"notebook cell {n}", "exec"), scope)
    assert (tmp_path / "nb" / "compare-evidence.png").stat().st_size > 0
    assert (tmp_path / "nb" / "attribute.png").stat().st_size > 0
    assert scope["hands"].verdict in ("named", "probably", "unknown hand")
    assert len(scope["near"]) == 8 and scope["near"].attrs["vote"]
    assert 0 <= scope["result"].metrics["triplet_accuracy"] <= 1
