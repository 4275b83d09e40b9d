"""Parquet manifests: atomic writes with provenance in the key-value metadata.

Every manifest records under the metadata key ``pbn`` a JSON object:
``stage``, ``params``, ``inputs`` (the fingerprints of the manifests or files
it was made from), ``fingerprint`` (this write's identity), ``version``,
``created`` and ``rows``, plus anything the stage adds (``image_root``...).
A downstream stage is stale when the fingerprint it recorded for an input
differs from that input's current fingerprint.

pandas and pyarrow are imported when a manifest is read or written, not
with this module, so an answer that needs no workspace never pays for them.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pbn_cli.core.version import VERSION as __version__
from pbn_cli.core.atomic import atomic_path
from pbn_cli.core.errors import PbnError

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

META_KEY = b"pbn"


@dataclass
class Record:
    """The provenance of one manifest write."""

    stage: str
    params: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, str] = field(default_factory=dict)
    fingerprint: str = ""
    version: str = __version__
    created: str = ""
    rows: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {
                "stage": self.stage,
                "params": self.params,
                "inputs": self.inputs,
                "fingerprint": self.fingerprint,
                "version": self.version,
                "created": self.created,
                "rows": self.rows,
                "extra": self.extra,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> Record:
        d = json.loads(text)
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def table_digest(table: pa.Table) -> str:
    """A hash of a table's schema and contents (Arrow IPC bytes)."""
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(path: Path, frame: pd.DataFrame, record: Record) -> Record:
    """Atomically write ``frame`` to ``path`` with ``record`` as its provenance.

    The fingerprint identifies this write: the table's contents plus the
    time, so that a forced re-run marks everything downstream as stale.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    record.created = time.strftime("%Y-%m-%d %H:%M:%S")
    record.rows = table.num_rows
    record.fingerprint = hashlib.sha256(
        (table_digest(table) + record.created + str(time.time_ns())).encode()
    ).hexdigest()[:16]
    meta = dict(table.schema.metadata or {})
    meta.pop(b"pandas", None)
    meta[META_KEY] = record.to_json().encode()
    table = table.replace_schema_metadata(meta)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return record


def _damaged(path: Path, err: Exception) -> PbnError:
    stage = path.name.split(".")[0]
    return PbnError(
        f"{path} is damaged ({type(err).__name__}: {err}); "
        f"re-create it with `pbn {stage} --force`"
    )


def read_record(path: Path) -> Record | None:
    """The provenance of the manifest at ``path``, or None when it does not exist."""
    if not path.exists():
        return None
    import pyarrow.parquet as pq

    try:
        meta = pq.read_schema(path).metadata or {}
        return Record.from_json(meta[META_KEY].decode())
    except Exception as err:  # any unreadable file is reported the same way
        raise _damaged(path, err) from None


def read_manifest(path: Path) -> tuple[pd.DataFrame, Record]:
    """The rows and provenance of the manifest at ``path``."""
    record = read_record(path)
    if record is None:
        raise FileNotFoundError(path)
    import pyarrow.parquet as pq

    try:
        frame = pq.read_table(path).to_pandas()
    except Exception as err:
        raise _damaged(path, err) from None
    return frame, record
