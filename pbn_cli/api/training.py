"""Training for Python: ``train`` a network on a prepared workspace, as `pbn train` does, and the ``backbones``
it accepts.

The options are the command's, by the same names (``OPTIONS``: each declared
once, on the recipe field it sets, networks/recipe.py; ``margin`` is the
mode's margin, ``paintings_per_artist`` is ``--k``). An option left out
keeps the preset's value; the ``default`` preset is the recipe's own
defaults and the others change a few of them (training/presets.py).

Example (``prepared`` is a workspace that went through ingest, clean, split
and resize):

>>> from pbn_cli.api.training import train
>>> summary = train(prepared, preset="quick", epochs=1, input_size=32, embedding_dim=16, batch_size=16,
...                 device="cpu", run="doctest")
>>> summary.epochs, summary.to_dict()["config"]["model"]["backbone"]
(1, 'compact')
>>> train("workspace", epoch=2)  # doctest: +ELLIPSIS
Traceback (most recent call last):
    ...
pbn_cli.core.errors.InputError: unknown train option 'epoch' (did you mean epochs?); the options are backbone, ...
"""

from __future__ import annotations

import difflib
import numbers
import os
from typing import TYPE_CHECKING

from pbn_cli.core.errors import InputError
from pbn_cli.core.progress import SILENT, Progress
from pbn_cli.core.workspace import Workspace
from pbn_cli.networks.recipe import OPTIONS, given_fields

if TYPE_CHECKING:
    from pbn_cli.training.loop import TrainSummary

__all__ = ["KEYWORDS", "OPTIONS", "backbones", "train"]

#: the options ``train`` takes as keywords beside ``preset`` and ``mode``, in the command's order
KEYWORDS = tuple(name for name in OPTIONS if name not in ("preset", "mode"))


def train(workspace: str | os.PathLike | Workspace, *, preset: str | None = None, mode: str | None = None,
          run: str | None = None, resume: bool = False, gpu: bool = False, progress: Progress = SILENT,
          **options) -> TrainSummary:
    """Train a Siamese network on ``workspace``'s train split, validating on val every epoch, into runs/<run>/
    (config.json, checkpoints, history); returns the ``TrainSummary`` (``to_dict()`` for plain data).

    ``preset``: default, cpu, quick or reference (None: default); ``mode``: pair, triplet or proxy (None:
    triplet). With ``resume`` the run (``run``, or the latest) continues with its own recipe: None keeps its
    preset and mode, and an option given must agree with it but for epochs, max_minutes, device and compile.
    ``gpu``: short for ``device="cuda"``. ``options``: ``KEYWORDS`` (the command's options, e.g. ``epochs=2,
    max_minutes=1, lr=1e-3, margin=0.3``); None keeps the preset's value. An unknown one is an ``InputError``.
    """
    unknown = [name for name in options if name not in KEYWORDS]
    if unknown:
        close = difflib.get_close_matches(unknown[0], KEYWORDS, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise InputError(f"unknown train option {unknown[0]!r}{hint}; the options are {', '.join(KEYWORDS)}")
    options = {name: _typed(name, value) for name, value in options.items()}
    if gpu and options.get("device") not in (None, "cuda"):
        raise InputError(f"train: gpu=True means device='cuda', not device={options['device']!r}; give one")
    from pbn_cli.api.workspace import folder
    from pbn_cli.training.loop import train as run_training
    from pbn_cli.training.presets import resolve

    fields = given_fields(mode, options)
    if gpu:
        fields["device"] = "cuda"
    config = resolve(preset, mode, fields)
    return run_training(folder(workspace), config, run_name=run, resume=resume, progress=progress,
                        changes={"preset": preset, "mode": mode, **fields})


def _typed(name: str, value):
    """An option's value as its field's type (an int for a float, a path for a string); ``InputError`` else."""
    want = OPTIONS[name].type
    if value is None:
        return None
    if want is bool and isinstance(value, (bool, numbers.Integral)) and value in (0, 1):
        return bool(value)
    if want is int and isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if want is float and isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    if want is str and isinstance(value, (str, os.PathLike)):
        return os.fspath(value)
    raise InputError(f"train option {name}={value!r}: expected {want.__name__}")


def backbones(contains: str | None = None) -> dict[str, list[str]]:
    """The backbones ``backbone=`` accepts, by source (pbn's own, torchvision, timm: empty without the extra);
    ``contains``: only the names that contain it, in any case.

    >>> "resnet50" in backbones("resnet50")["torchvision"]
    True
    """
    from pbn_cli.networks.backbones import available

    return {source: [n for n in names if not contains or contains.lower() in n.lower()]
            for source, names in available().items()}
