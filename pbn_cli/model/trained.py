"""A trained model ready to answer: network, image geometry and verdict calibration.

It comes from a run in a workspace (``from_run``) or from one exported file
(``from_file``), so ``compare --model`` works on a machine without the
workspace. Images enter through ``imaging.load_rgb`` with the cache's size
and fit, so a painting gets the same pixels, and the same embedding, as in
the workspace.

Whatever is derived from a model (its calibration, the search and predict
caches of embeddings) is keyed by ``fingerprint()``, a digest of the
weights and image geometry, never by an epoch number: Ctrl-C mid-epoch saves
new weights under the epoch reached before.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pbn_cli.core.atomic import read_json
from pbn_cli.core.distributed import Dist
from pbn_cli.core.errors import InputError, PbnError
from pbn_cli.core.progress import SILENT, Progress
from pbn_cli.core.runs import Run, find_run
from pbn_cli.core.workspace import Workspace
from pbn_cli.data import imaging
from pbn_cli.data.cache import CacheData, SplitRows
from pbn_cli.model import calibration, checkpoint
from pbn_cli.model.attribution import Attributor, load_attributor
from pbn_cli.model.embed import embed_images
from pbn_cli.model.paintings import fill_store, model_store
from pbn_cli.model.store import CHUNK, Store
from pbn_cli.model.embedder import Embedder
from pbn_cli.model.recipe import TrainConfig

KIND = "pbn-model"


@dataclass
class TrainedModel:
    name: str
    config: TrainConfig
    state: dict  # the network's weights
    calibration: dict  # threshold, platt_a, platt_b, ...; {} before `pbn eval`
    image_size: int
    fit: str
    which: str = "best"  # the run's checkpoint it came from
    epoch: int = 0
    attributor: Attributor | None = None  # who painted it: fitted by `pbn eval` (model/attribution.py)
    _fingerprint: str | None = field(default=None, repr=False)
    _networks: dict = field(default_factory=dict, repr=False)

    def network(self, device: torch.device) -> Embedder:
        """The network in eval mode on ``device``, built once per device and shared (inference only)."""
        key = str(device)
        if key not in self._networks:
            model = Embedder(self.config.model, load_pretrained=False)
            model.load_state_dict(self.state)
            self._networks[key] = model.to(device).eval()
        return self._networks[key]

    def read(self, path: Path, name: str | None = None) -> np.ndarray:
        """A painting file as the model sees it (the image door, with the cache's size and fit); one line if unreadable."""
        return imaging.read_painting(path, self.image_size, self.fit, name)

    def embed_one(self, pixels: np.ndarray, device: torch.device) -> np.ndarray:
        """The embedding of one painting read by ``read``, computed alone (so it never depends on its neighbours in a batch)."""
        return embed_images(self.network(device), lambda idx: pixels[None][idx], 1, device)[0]

    def embed_files(self, paths: list[Path], device: torch.device) -> np.ndarray:
        images = [self.read(path) for path in paths]
        return np.stack([self.embed_one(pixels, device) for pixels in images])

    def store(self, ws: Workspace, half: bool = False) -> Store:
        """This model's embedding store in the workspace."""
        return model_store(ws, self.fingerprint(), half)

    def fill(self, ws: Workspace, data: CacheData, rows: SplitRows, device: torch.device, *, half: bool = False,
             progress: Progress = SILENT, dist: Dist = Dist(), chunk: int = CHUNK) -> int:
        """Embed the ``rows`` this model's store lacks; how many this pass embedded."""
        about = {"model": f"run {self.name}, {self.which} checkpoint (epoch {self.epoch})", "backbone":
                 self.config.model.backbone, "fingerprint": self.fingerprint()}
        return fill_store(ws, self.network(device), self.fingerprint(), data, rows, device, half=half, about=about,
                          progress=progress, dist=dist, chunk=chunk)[1]

    def embeddings(self, ws: Workspace, data: CacheData, rows: SplitRows, device: torch.device, *, half: bool = False,
                   progress: Progress = SILENT) -> np.ndarray:
        """The workspace paintings' embeddings from this model's store, embedding only those not stored yet."""
        self.fill(ws, data, rows, device, half=half, progress=progress)
        return self.store(ws, half).read(rows)

    def fingerprint(self) -> str:
        """A digest of the weights and the image geometry: what an embedding depends on."""
        if self._fingerprint is None:
            geometry = f"{self.image_size}:{self.fit}:{self.config.model.view}:{self.config.model.input_size}"
            self._fingerprint = checkpoint.weights_digest(self.state, geometry)
        return self._fingerprint

    def probability(self, distance: float) -> float:
        return float(calibration.probability(distance, self.calibration["platt_a"], self.calibration["platt_b"]))


def from_checkpoint(ws: Workspace, run: Run, which: str = "best") -> TrainedModel:
    """A run's checkpoint with the workspace's image geometry, before any calibration."""
    path = run.checkpoint(which)
    if not path.exists():
        raise InputError(f"run {run.name} has no {which} checkpoint ({path}); train it with `pbn train`")
    state = checkpoint.load(path)
    resize = ws.require("resize")
    checkpoint.check_cache(state, int(resize.params["size"]), run.name)
    return TrainedModel(run.name, TrainConfig.from_dict(state["config"]), state["model"], {},
                        int(resize.params["size"]), resize.params.get("fit", "crop"), which, int(state["epoch"]))


def read_calibrations(run: Run) -> dict:
    """calibration.json of a run: {checkpoint: entry}; {} when eval has not written it yet."""
    return read_json(run.calibration, f"re-create it with `pbn eval --run {run.name}`") or {}


def from_run(ws: Workspace, run_name: str | None, which: str = "best") -> TrainedModel:
    """A run's checkpoint with the calibration `pbn eval` fitted for exactly these weights."""
    run = find_run(ws, run_name)
    model = from_checkpoint(ws, run, which)
    calib = read_calibrations(run).get(which)
    if not calib or calib.get("weights") != model.fingerprint():
        again = "" if which == "best" else f" --checkpoint {which}"
        raise InputError(
            f"run {run.name} has no calibration for the weights of its {which} checkpoint "
            f"(epoch {model.epoch}{', changed since the last eval' if calib else ''}); "
            f"run `pbn eval --run {run.name}{again}` first"
        )
    model.calibration = calib
    if calib.get("attribution") and (run.folder / calib["attribution"]).exists():
        model.attributor = load_attributor(run.folder / calib["attribution"])
    return model


def export(model: TrainedModel, path: Path) -> None:
    """One file with weights, configuration, calibration, attribution and image geometry (plain data)."""
    attribution = {}
    if model.attributor is not None:  # tensors and text: what a weights_only load accepts
        state = model.attributor.to_state()
        attribution = {k: (v.tolist() if v.dtype.kind in "UO" else torch.from_numpy(np.ascontiguousarray(v)))
                       for k, v in state.items()}
        attribution["fitted_on"] = str(state["fitted_on"])
    checkpoint.save(Path(path), {
        "kind": KIND, "name": model.name, "config": model.config.to_dict(), "model": model.state,
        "calibration": model.calibration, "image": {"size": model.image_size, "fit": model.fit},
        "attribution": attribution,
    })


def from_file(path: Path) -> TrainedModel:
    if Path(path).suffix.lower() == ".onnx":  # an ONNX export answers through onnxruntime (model/onnx_model.py)
        from pbn_cli.model.onnx_model import load

        return load(Path(path))
    state = checkpoint.load(Path(path))
    if state.get("kind") != KIND:
        raise PbnError(f"{path} is a training checkpoint, not an exported model; make one with `pbn export RUN FILE`")
    attribution = state.get("attribution") or {}
    attributor = Attributor.from_state({k: v.numpy() if isinstance(v, torch.Tensor) else v
                                        for k, v in attribution.items()}) if attribution else None
    return TrainedModel(state["name"], TrainConfig.from_dict(state["config"]), state["model"], state["calibration"],
                        int(state["image"]["size"]), state["image"]["fit"], "exported", attributor=attributor)
