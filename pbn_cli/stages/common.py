"""What every data stage returns, for the CLI's summary."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from pbn_cli.core.manifest import Record


@dataclass
class StageResult:
    """What a stage did: skipped (up to date) or the rows it kept and rejected."""

    skipped: bool
    kept: int
    rejected: int
    reasons: dict[str, int] = field(default_factory=dict)
    record: Record | None = None
    summary: dict = field(default_factory=dict)


def reason_counts(rejected: pd.DataFrame) -> dict[str, int]:
    """Rejected rows counted by the kind of reason (the text before the first colon)."""
    if rejected.empty:
        return {}
    return rejected["reason"].str.split(":").str[0].value_counts().to_dict()
