"""pbn's public Python API: what ``import pbn_cli as pbn`` offers, and all that the command line calls.

- ``pbn.Workspace(path)``: the data stages (``ingest``, ``clean``, ``split``, ``resize``) as methods, and
  ``status``, ``paintings``, ``runs`` as tables; ``pbn.synth`` makes a synthetic painting set.
- ``pbn.train(workspace, preset=..., **options)`` and ``pbn.evaluate(workspace, ...)``: the options of
  `pbn train` and `pbn eval`.
- ``pbn.load(...)``: a trained model with ``embed``, ``compare``, ``attribute``, ``search``, ``evidence``,
  ``predict`` and ``export``.
- Results are small dataclasses with ``to_dict()`` (``Verdict``, ``Attribution``, ``Evaluation``...) or pandas
  tables; errors are ``PbnError``s whose message is one line, the command line's.

docs/api.md walks through it; tests/test_api.py holds its answers to the commands' ``--json``.
"""

import importlib

#: where each public name lives; a module is imported when one of its names is first used (``pbn --help`` and
#: ``import pbn_cli`` stay cheap)
HOMES = {
    "pbn_cli.api.evaluation": ("FIGURES", "Evaluation", "evaluate"),
    "pbn_cli.api.model": ("Attribution", "Candidate", "Model", "Verdict", "load"),
    "pbn_cli.api.serving": ("Server", "serve"),
    "pbn_cli.api.training": ("backbones", "train"),
    "pbn_cli.api.workspace": ("Workspace", "runs", "synth"),
    "pbn_cli.core.errors": ("InputError", "PbnError"),
    "pbn_cli.core.progress": ("SILENT", "Progress"),
}
_HOME = {name: module for module, names in HOMES.items() for name in names}
__all__ = sorted(_HOME)


def __getattr__(name: str):
    if name in _HOME:
        value = getattr(importlib.import_module(_HOME[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'pbn_cli' has no attribute {name!r}")
