"""A trained model ready to answer: network, image geometry and verdict calibration.

It comes from a run in a workspace (``from_run``) or from one exported file
(``from_file``), so ``compare --model`` works on a machine without the
workspace. Images enter through ``imaging.load_rgb`` with the cache's size
and fit, so a painting gets the same pixels, and the same embedding, as in
the workspace.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pbn_cli import imaging
from pbn_cli.atomic import read_json
from pbn_cli.errors import InputError, PbnError
from pbn_cli.evaluation import calibration
from pbn_cli.evaluation.embed import embed_images
from pbn_cli.model.embedder import Embedder
from pbn_cli.runs import latest_run, run_for
from pbn_cli.training import checkpoint
from pbn_cli.training.config import TrainConfig
from pbn_cli.workspace import Workspace

KIND = "pbn-model"


@dataclass
class TrainedModel:
    name: str
    config: TrainConfig
    state: dict  # the network's weights
    calibration: dict  # threshold, platt_a, platt_b, ...
    image_size: int
    fit: str

    def network(self, device: torch.device) -> Embedder:
        model = Embedder(self.config.model, load_pretrained=False)
        model.load_state_dict(self.state)
        return model.to(device).eval()

    def embed_files(self, paths: list[Path], device: torch.device) -> np.ndarray:
        pixels = []
        for path in paths:
            try:
                pixels.append(imaging.load_rgb(str(path), self.image_size, self.fit))
            except imaging.ImageReadError as err:
                raise InputError(f"cannot read {path}: {err}") from None
        images = np.stack(pixels)
        return embed_images(self.network(device), lambda idx: images[idx], len(images), self.config.model.input_size,
                            self.config.view, self.config.model.normalize, device)

    def fingerprint(self) -> str:
        """A digest of the weights and the image geometry: what an embedding depends on."""
        h = hashlib.sha256(f"{self.image_size}:{self.fit}:{self.config.view}:{self.config.model.input_size}".encode())
        for key in sorted(self.state):
            h.update(key.encode())
            h.update(self.state[key].detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()[:16]

    def probability(self, distance: float) -> float:
        return float(calibration.probability(distance, self.calibration["platt_a"], self.calibration["platt_b"]))


def from_run(ws: Workspace, run_name: str | None, which: str = "best") -> TrainedModel:
    run = run_for(ws, run_name) if run_name else latest_run(ws)
    path = run.checkpoint(which)
    if not path.exists():
        raise InputError(f"run {run.name} has no {which} checkpoint; train it with `pbn train`")
    state = checkpoint.load(path)
    calib_path = run.folder / "calibration.json"
    calib = (read_json(calib_path, f"re-create it with `pbn eval --run {run.name}`") or {}).get(which)
    if not calib or calib.get("epoch") != state["epoch"]:
        raise InputError(
            f"run {run.name} has no calibration for its {which} checkpoint (epoch {state['epoch']}); "
            f"run `pbn eval --run {run.name}` first"
        )
    resize = ws.require("resize")
    checkpoint.check_cache(state, int(resize.params["size"]), run.name)
    return TrainedModel(run.name, TrainConfig.from_dict(state["config"]), state["model"], calib,
                        int(resize.params["size"]), resize.params.get("fit", "crop"))


def export(model: TrainedModel, path: Path) -> None:
    """One file with weights, configuration, calibration and image geometry (plain data)."""
    checkpoint.save(Path(path), {
        "kind": KIND, "name": model.name, "config": model.config.to_dict(), "model": model.state,
        "calibration": model.calibration, "image": {"size": model.image_size, "fit": model.fit},
    })


def from_file(path: Path) -> TrainedModel:
    state = checkpoint.load(Path(path))
    if state.get("kind") != KIND:
        raise PbnError(f"{path} is a training checkpoint, not an exported model; make one with `pbn export RUN FILE`")
    return TrainedModel(state["name"], TrainConfig.from_dict(state["config"]), state["model"], state["calibration"],
                        int(state["image"]["size"]), state["image"]["fit"])
