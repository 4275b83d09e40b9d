"""Checkpoints: plain data only, written atomically, loaded with weights_only=True.

A checkpoint holds the model, optimizer and scheduler state, the epoch and
step reached, the augmentation generator's state, the best validation
figure and the resolved configuration as a plain dict, so ``--resume``
rebuilds exactly the same network and continues exactly where it stopped.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch

from pbn_cli.atomic import write_bytes
from pbn_cli.errors import PbnError

FORMAT = 1


def save(path: Path, state: dict) -> None:
    buf = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buf)
    write_bytes(path, buf.getvalue())


def load(path: Path, map_location="cpu") -> dict:
    """The checkpoint at ``path``; refuses anything that is not plain tensors and containers."""
    if not Path(path).exists():
        raise PbnError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise PbnError(
            f"{path} is not a loadable pbn checkpoint ({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
            "it may be damaged or unsafe: retrain, or resume from another checkpoint"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT or "model" not in state:
        raise PbnError(f"{path} is not a pbn checkpoint")
    return state
