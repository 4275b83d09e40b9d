"""The workspace folder: where each stage's manifests, cache and runs live.

See docs/pipeline.md for the layout. Stages are ordered; each names the
upstream manifest it reads, which is what ``pbn status`` checks for staleness.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pbn_cli.core import locking
from pbn_cli.core.errors import InputError
from pbn_cli.core.manifest import Record, read_record

#: stage -> the upstream stage whose manifest it reads
UPSTREAM: dict[str, str | None] = {
    "ingest": None,
    "clean": "ingest",
    "split": "clean",
    "resize": "clean",
}


@dataclass(frozen=True)
class Workspace:
    root: Path

    @property
    def manifests(self) -> Path:
        return self.root / "manifests"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def images(self) -> Path:
        """Paintings extracted from an ingested table (stages/ingest.py), named by their bytes."""
        return self.root / "images"

    @property
    def embeddings(self) -> Path:
        """The embedding stores, one folder per model (model/store.py)."""
        return self.root / "embeddings"

    def baseline(self, name: str, split: str) -> Path:
        """Outputs of a descriptor that learns nothing (eval's metrics, embeddings) on ``split``."""
        return self.root / "baselines" / name / split

    def manifest(self, stage: str) -> Path:
        return self.manifests / f"{stage}.parquet"

    def rejected(self, stage: str) -> Path:
        return self.manifests / f"{stage}.rejected.parquet"

    def record(self, stage: str) -> Record | None:
        return read_record(self.manifest(stage))

    def require(self, stage: str) -> Record:
        """The record of a finished ``stage``, or a clear error saying what to run."""
        record = self.record(stage)
        if record is None:
            raise InputError(
                f"no {stage} manifest in {self.root}; run `pbn {stage}` first"
            )
        return record

    def data_lock(self):
        """The lock every data stage (ingest, clean, split, resize) holds while writing."""
        return locking.hold(self.root / "locks" / "data.lock", f"workspace {self.root}")

    def is_stale(self, stage: str) -> bool:
        """Whether ``stage`` read an upstream manifest that has since been rewritten."""
        record = self.record(stage)
        up = UPSTREAM[stage]
        if record is None or up is None:
            return False
        up_record = self.record(up)
        return up_record is None or record.inputs.get(up) != up_record.fingerprint or self.is_stale(up)

    def up_to_date(self, stage: str, params: dict, inputs: dict[str, str]) -> bool:
        """Whether ``stage`` already ran on these inputs with these parameters."""
        record = self.record(stage)
        return (
            record is not None
            and record.params == params
            and record.inputs == inputs
            and self.rejected(stage).exists()
        )
