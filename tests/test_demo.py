"""pbn demo: every stage end to end on a small synthetic set, and a second run skips what is done."""

import json

from typer.testing import CliRunner

from pbn_cli.cli import app


def test_demo_runs_every_stage_and_resumes(tmp_path):
    runner = CliRunner()
    folder = tmp_path / "demo"
    args = ["demo", str(folder), "--artists", "10", "--paintings", "4", "--epochs", "1", "--device", "cpu"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    for step in ("synth", "ingest", "clean", "split", "resize", "train", "eval", "compare", "search"):
        assert f"pbn {step}" in first.output
    ws = folder / "workspace"
    report = ws / "runs/demo/eval/test/report.md"
    assert report.exists() and str(report) in first.output
    metrics = json.loads((ws / "runs/demo/eval/test/metrics.json").read_text())
    assert 0 <= metrics["triplet_accuracy"] <= 1
    assert (ws / "baselines/color-hist/test/metrics.json").exists()
    for picture in ("compare-same.png", "compare-different.png", "search.png"):
        assert (folder / picture).stat().st_size > 1000
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert "exists, reusing it" in again.output and "up to date, nothing to do" in again.output
    assert runner.invoke(app, ["demo", str(folder), "--artists", "2"]).exit_code == 2
