"""compare: are two paintings by the same artist?"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pbn_cli.core.pictures import pyplot, save_figure
from pbn_cli.data import imaging
from pbn_cli.model.trained import TrainedModel

if TYPE_CHECKING:
    import torch


@dataclass
class Verdict:
    """The answer to "same artist?": the embeddings' distance against the run's calibrated threshold, and the
    probability of the same artist."""

    distance: float
    threshold: float
    same_artist_probability: float
    same_artist: bool
    run: str

    @property
    def words(self) -> str:
        """The verdict in words: same artist, or different artists."""
        return "same artist" if self.same_artist else "different artists"

    def to_dict(self) -> dict:
        return {**asdict(self), "words": self.words}


def verdict(model: TrainedModel, a: np.ndarray, b: np.ndarray) -> Verdict:
    """The verdict on two embeddings: their distance against the run's calibrated threshold."""
    distance = float(np.linalg.norm(a.astype(np.float64) - b.astype(np.float64)))
    threshold = float(model.calibration["threshold"])
    return Verdict(distance, threshold, model.probability(distance), distance <= threshold, model.name)


def compare(model: TrainedModel, a: Path, b: Path, *, device: torch.device | None) -> Verdict:
    emb = model.embed_files([a, b], device)
    return verdict(model, emb[0], emb[1])


def verdict_sheet(model: TrainedModel, a: Path, b: Path, verdict: Verdict, path: Path) -> None:
    """The two paintings side by side with the verdict (as the model saw them)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(7, 3.9))
    for n, (ax, p) in enumerate(zip(axes, (a, b))):
        ax.imshow(model.read(p))
        ax.set(xticks=[], yticks=[], title=imaging.image_name(p, n)[:40])
    fig.suptitle(f"{verdict.words}: p(same) = {verdict.same_artist_probability:.2f}, distance {verdict.distance:.3f} "
                 f"(threshold {verdict.threshold:.3f})", color="tab:green" if verdict.same_artist else "tab:red")
    save_figure(fig, path)
