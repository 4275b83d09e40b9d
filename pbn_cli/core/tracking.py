"""Training watched in TensorBoard: scalars and the embedding projector, written when `tensorboard` is installed.

``open_tracker(folder)`` gives a ``Tracker`` whose calls write TensorBoard
event files into ``folder`` (the run's ``tensorboard/``), or, without the
`tracking` extra (pip install 'pbn[tracking]'), a tracker that writes
nothing: watching is optional, training is not.
"""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path


class Tracker:
    """Writes nothing (TensorBoard is not installed, or this process is not rank 0)."""

    folder: Path | None = None

    def scalars(self, values: dict[str, float], step: int) -> None:
        """Scalars by tag (``train/loss``, ``val/pair_auc``...) at ``step``."""

    def embedding(self, matrix, labels: list[str], images, tag: str, step: int | None = None) -> None:
        """Points of the projector: one row each, with a label and a small picture ((N, 3, H, W) in [0, 1])."""

    def close(self) -> None:
        """Flush what was written."""


class TensorBoard(Tracker):
    def __init__(self, folder: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.folder = Path(folder)
        self.writer = SummaryWriter(str(self.folder), flush_secs=30)

    def scalars(self, values: dict[str, float], step: int) -> None:
        for tag, value in values.items():
            if value == value:  # NaN (no val split) is left out
                self.writer.add_scalar(tag, float(value), step)

    def embedding(self, matrix, labels: list[str], images, tag: str, step: int | None = None) -> None:
        # each eval adds its own step (TensorBoard's projector lists them all) rather than overwrite a folder
        step = step if step is not None else sum(1 for p in self.folder.iterdir() if p.name.isdigit())
        self.writer.add_embedding(matrix, metadata=labels, label_img=images, global_step=step, tag=tag)

    def close(self) -> None:
        self.writer.close()


def available() -> bool:
    return find_spec("tensorboard") is not None


def open_tracker(folder: Path, enabled: bool = True) -> Tracker:
    """TensorBoard event files in ``folder`` when `tensorboard` is installed and ``enabled``; else a silent tracker."""
    return TensorBoard(folder) if enabled and available() else Tracker()
