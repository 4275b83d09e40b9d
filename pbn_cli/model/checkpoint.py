"""Checkpoints: plain data only, written atomically, loaded with weights_only=True.

A checkpoint holds the network's and the optimiser's state (the learning
rate of a step is a function of the step, training/schedule.py, so there is
no scheduler state to keep), the epoch and step reached, the augmentation
generator's state, the best validation figure, the planned epochs and the
resolved configuration as a plain dict, so ``--resume`` rebuilds exactly the
same network and continues exactly where it stopped.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import torch

from pbn_cli.core.atomic import write_bytes
from pbn_cli.core.errors import InputError, PbnError

FORMAT = 1


def save(path: Path, state: dict) -> None:
    buf = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buf)
    write_bytes(path, buf.getvalue())


def check_cache(state: dict, cache_size: int, run: str) -> None:
    """Refuse to use a run's network on a cache of another size than the one it trained on."""
    trained = state.get("cache_size")
    config = state.get("config", {})
    input_size = config.get("model", {}).get("input_size", 0)
    if trained is not None and trained != cache_size:
        raise InputError(
            f"run {run} was trained on a {trained}-px cache but the workspace's cache is now {cache_size} px; "
            f"re-run `pbn resize --size {trained} --force`, or train a new run on this cache"
        )
    view = config.get("model", {}).get("view", config.get("view"))  # older checkpoints kept it beside the model
    if view == "crop" and input_size > cache_size:
        raise InputError(f"run {run} sees {input_size}-px crops, larger than the workspace's {cache_size}-px cache; "
                         f"re-run `pbn resize --size {input_size} --force` or larger")


def load(path: Path, map_location="cpu") -> dict:
    """The checkpoint at ``path``; refuses anything that is not plain tensors and containers."""
    if not Path(path).exists():
        raise PbnError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        reason = str(err).splitlines()[0].split(". ")[0][:160] if str(err) else type(err).__name__
        raise PbnError(
            f"{path} cannot be loaded as a pbn checkpoint ({reason}): it is damaged, or holds more than plain data; "
            "use the run's other checkpoint (--checkpoint best or last) or train again"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT or "model" not in state:
        raise PbnError(f"{path} is not a pbn checkpoint")
    return state


def weights_digest(state: dict, salt: str = "") -> str:
    """A 16-hex digest of a state dict's tensors (names and bytes) and ``salt``."""
    h = hashlib.sha256(salt.encode())
    for key in sorted(state):
        h.update(key.encode())
        h.update(state[key].detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]
