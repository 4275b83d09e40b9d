"""Measuring for Python: ``evaluate`` a run (or a baseline) on artists it never saw.

The options are the command's (`pbn eval`), by the same names.

Example (``trained`` is a workspace with a trained run):

>>> import pbn_cli as pbn
>>> result = pbn.evaluate(trained, device="cpu")
>>> sorted(result.figures()["metric"])[:2]
['MAP@R', 'calibration error of p(same)']
>>> 0.0 <= result.metrics["triplet_accuracy"] <= 1.0
True
>>> (result.folder / "report.md").exists()
True
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pbn_cli.api.workspace import folder
from pbn_cli.core.errors import InputError
from pbn_cli.core.progress import SILENT, Progress
from pbn_cli.evaluation.scores import FIGURES

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Evaluation", "FIGURES", "evaluate"]


@dataclass
class Evaluation:
    """What ``evaluate`` measured: the figures of metrics.json (with 95% intervals as ``<name>_ci``), where it
    wrote them, and the colour-histogram baseline's figures on the same split when they were computed."""

    run: str
    split: str
    folder: Path
    metrics: dict
    baseline: dict | None = None

    def figures(self) -> pd.DataFrame:
        """The headline figures as a table: metric, value, low, high (the interval), baseline."""
        import pandas as pd

        nan = (float("nan"), float("nan"))
        return pd.DataFrame([{"metric": label, "value": self.metrics[name], "low": self.metrics.get(f"{name}_ci", nan)[0],
                              "high": self.metrics.get(f"{name}_ci", nan)[1],
                              "baseline": (self.baseline or {}).get(name)} for name, label, _ in FIGURES])

    def to_dict(self) -> dict:
        return {"run": self.run, "split": self.split, "folder": str(self.folder), "metrics": self.metrics,
                "baseline": self.baseline}


def evaluate(workspace, *, run: str | None = None, split: str = "test", checkpoint: str = "best",
             baseline: str | None = None, triplets: int = 20_000, group_size: int = 1800, seed: int = 0,
             half: bool = False, device: str = "auto", engine: str = "auto",
             progress: Progress = SILENT) -> Evaluation:
    """Evaluate a run on ``split`` (test: artists it never saw): embed it, fit the verdict's calibration and the
    attribution model, and write metrics.json, report.md and the plots under runs/<run>/eval/<split>/.
    ``baseline="color-hist"`` measures a descriptor that learns nothing instead. ``triplets``: seeded triplets for
    triplet accuracy; ``group_size``: paintings per group for pair AUC (Kaggle: 1800)."""
    from pbn_cli.evaluation.evaluate import baseline_metrics, evaluate_baseline
    from pbn_cli.evaluation.evaluate import evaluate as measure
    from pbn_cli.model.engine import choose

    ws = folder(workspace)
    if baseline:
        # a baseline is a run's alternative: naming a run, checkpoint or half store is a mistake; the device and
        # engine (often set for every command, PBN_ENGINE) have nothing to do there
        ignored = [name for name, value, default in (("run", run, None), ("checkpoint", checkpoint, "best"),
                   ("half", half, False)) if value != default]
        if ignored:
            raise InputError(f"evaluate: a baseline learns nothing; {', '.join(ignored)} applies to a run only")
        done = evaluate_baseline(ws, name=baseline, split=split, seed=seed, n_triplets=triplets,
                                 group_size=group_size, progress=progress)
        return Evaluation(done.run, done.split, done.folder, done.metrics)
    done = measure(ws, run_name=run, split=split, which=checkpoint, device_name=device,
                   engine_name=choose(engine, device), seed=seed, n_triplets=triplets, group_size=group_size,
                   half=half, progress=progress)
    return Evaluation(done.run, done.split, done.folder, done.metrics, baseline_metrics(ws, split))
