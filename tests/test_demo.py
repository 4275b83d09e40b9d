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
    # what each command prints when it has finished, in the order the steps run
    done = ["synth: 40 paintings by 10 artists", "ingest: kept 40 rows", "clean: kept", "split", "resize: kept",
            "train: run demo: 1 epochs", "eval: wrote", "eval: wrote", "probability of the same artist",
            "for two paintings by the same painter", "probability of the same artist", "by two different painters",
            "vote: ", "who painted it", "search's vote among the 8 nearest test paintings"]
    at = 0
    for line in done:
        found = first.output.find(line, at)
        assert found >= 0, f"{line!r} missing after position {at}:\n{first.output}"
        at = found + len(line)
    ws = folder / "workspace"
    for stage in ("ingest", "clean", "split", "resize"):
        assert (ws / f"manifests/{stage}.parquet").exists()
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
