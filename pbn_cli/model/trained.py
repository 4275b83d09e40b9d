"""A trained model ready to answer: network, image geometry and verdict calibration.

It comes from a run in a workspace (``from_run``) or from one exported file
(``from_file``), so ``compare --model`` works on a machine without the
workspace. Images enter through ``imaging.load_rgb`` with the cache's size
and fit, so a painting gets the same pixels, and the same embedding, as in
the workspace.

It embeds with one of two engines (model/engine.py): its torch network, or
``runtime``, the same network exported to ONNX and run by onnxruntime on
the CPU. A run's export is made once per weights fingerprint and kept in
the run (``Run.engine_file``), with a stamp of the checkpoint file it was
made from (``Run.engine_stamp``): while that file is unchanged, ``from_run``
answers from the export and the calibration alone, without importing torch
or reading the checkpoint; the network is loaded from ``source`` only when
something asks for it (evidence, export).

Whatever is derived from a model (its calibration, the search and predict
caches of embeddings) is keyed by ``fingerprint()``, a digest of the
weights and image geometry, never by an epoch number: Ctrl-C mid-epoch saves
new weights under the epoch reached before.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pbn_cli.core.atomic import read_json, write_text
from pbn_cli.core.distributed import Dist
from pbn_cli.core.errors import InputError, PbnError
from pbn_cli.core.progress import SILENT, Progress
from pbn_cli.core.runs import CHECKPOINTS, NAME, Run, find_run
from pbn_cli.core.workspace import Workspace
from pbn_cli.data import imaging
from pbn_cli.data.cache import CacheData, SplitRows
from pbn_cli.answers import calibration
from pbn_cli.model import engine
from pbn_cli.answers.attribution import AttributionModel, load_attribution
from pbn_cli.networks.recipe import TrainConfig

if TYPE_CHECKING:
    import torch

    from pbn_cli.networks.embedder import Embedder
    from pbn_cli.model.store import Store

KIND = "pbn-model"


@dataclass
class TrainedModel:
    name: str
    config: TrainConfig
    state: dict | None  # the network's weights; None until needed when the model answers through ``runtime``
    calibration: dict  # threshold, platt_a, platt_b, ...; {} before `pbn eval`
    image_size: int
    fit: str
    which: str = "best"  # the run's checkpoint it came from
    epoch: int = 0
    attribution: AttributionModel | None = None  # who painted it: fitted by `pbn eval` (answers/attribution.py)
    runtime: engine.Runtime | None = None  # the onnx engine: the exported network in onnxruntime (model/engine.py)
    tiles: engine.Tiles | None = None  # the onnx engine's graph for the evidence's tiles
    source: Path | None = None  # the checkpoint ``state`` is read from when it is needed
    _fingerprint: str | None = field(default=None, repr=False)
    _networks: dict = field(default_factory=dict, repr=False)

    @property
    def engine(self) -> str:
        """The engine its embeddings come from: onnx or torch."""
        return "onnx" if self.runtime is not None else "torch"

    def weights(self) -> dict:
        """The network's weights (read from the run's checkpoint the first time, for a model answering by onnx)."""
        if self.state is None:
            if self.source is None:
                raise InputError(f"{self.runtime.path} is an ONNX model: it answers `pbn compare` (without --evidence),"
                                 " `attribute`, `search` and `predict` through onnxruntime; for this, use the run "
                                 "(-w WORKSPACE --run NAME) or a .pt export (`pbn export RUN model.pt`)")
            from pbn_cli.model import checkpoint

            self.state = checkpoint.load(self.source)["model"]
        return self.state

    def network(self, device: torch.device) -> Embedder:
        """The network in eval mode on ``device``, built once per device and shared (inference only)."""
        key = str(device)
        if key not in self._networks:
            from pbn_cli.networks.embedder import Embedder

            weights = self.weights()
            model = Embedder(self.config.model, load_pretrained=False)
            model.load_state_dict(weights)
            self._networks[key] = model.to(device).eval()
        return self._networks[key]

    def read(self, image, name: str | None = None) -> np.ndarray:
        """A painting as the model sees it (the image door, with the cache's size and fit): a file, a PIL image or a
        uint8 array; one line if unreadable."""
        return imaging.read_image(image, self.image_size, self.fit, name)

    def embed_one(self, pixels: np.ndarray, device: torch.device | None = None) -> np.ndarray:
        """The embedding of one painting read by ``read``, computed alone (so it never depends on its neighbours in a
        batch); ``device`` is the torch engine's (the onnx engine runs on the CPU)."""
        if self.runtime is not None:
            return self.runtime.embed(pixels[None])[0]
        from pbn_cli.networks.embed import embed_images

        return embed_images(self.network(device), lambda idx: pixels[None][idx], 1, device)[0]

    def embed_files(self, images: list, device: torch.device | None = None) -> np.ndarray:
        """The embeddings of paintings (files, PIL images or arrays), each computed alone; every one read first."""
        images = [self.read(image, None if imaging.is_file(image) else imaging.image_name(image, n))
                  for n, image in enumerate(images)]
        return np.stack([self.embed_one(pixels, device) for pixels in images])

    def store(self, ws: Workspace, half: bool = False) -> Store:
        """This model's embedding store in the workspace."""
        from pbn_cli.model.store import model_store  # pandas and pyarrow: not for an answer without a workspace

        return model_store(ws, self.fingerprint(), half)

    def fill(self, ws: Workspace, data: CacheData, rows: SplitRows, device: torch.device | None, *, half: bool = False,
             progress: Progress = SILENT, dist: Dist = Dist(), chunk: int | None = None) -> int:
        """Embed the ``rows`` this model's store lacks (with its engine), ``chunk`` paintings a file (default
        ``store.CHUNK``); how many this pass embedded."""
        from pbn_cli.model.store import CHUNK

        chunk = chunk or CHUNK
        about = {"model": f"run {self.name}, {self.which} checkpoint (epoch {self.epoch})", "backbone":
                 self.config.model.backbone, "fingerprint": self.fingerprint()}
        if self.runtime is None:
            from pbn_cli.model.paintings import fill_store

            return fill_store(ws, self.network(device), self.fingerprint(), data, rows, device, half=half,
                              about=about, progress=progress, dist=dist, chunk=chunk)[1]
        store = self.store(ws, half)
        store.describe(about)
        return store.fill(rows, lambda part: self.runtime.embed(data.gather(part.rows)), chunk=chunk, dist=dist,
                          progress=progress, description="the run's network (onnxruntime)", engine="onnx")

    def embeddings(self, ws: Workspace, data: CacheData, rows: SplitRows, device: torch.device | None, *,
                   half: bool = False, progress: Progress = SILENT) -> np.ndarray:
        """The workspace paintings' embeddings from this model's store, embedding only those not stored yet."""
        self.fill(ws, data, rows, device, half=half, progress=progress)
        return self.store(ws, half).read(rows)

    def fingerprint(self) -> str:
        """A digest of the weights and the image geometry: what an embedding depends on."""
        if self._fingerprint is None:
            from pbn_cli.model import checkpoint

            geometry = f"{self.image_size}:{self.fit}:{self.config.model.view}:{self.config.model.input_size}"
            self._fingerprint = checkpoint.weights_digest(self.weights(), geometry)
        return self._fingerprint

    def probability(self, distance: float) -> float:
        return float(calibration.probability(distance, self.calibration["platt_a"], self.calibration["platt_b"]))


def from_checkpoint(ws: Workspace, run: Run, which: str = "best") -> TrainedModel:
    """A run's checkpoint with the workspace's image geometry, before any calibration."""
    from pbn_cli.model import checkpoint

    path = run.checkpoint(which)
    if not path.exists():
        raise InputError(f"run {run.name} has no {which} checkpoint ({path}); train it with `pbn train`")
    state = checkpoint.load(path)
    resize = ws.require("resize")
    checkpoint.check_cache(state, int(resize.params["size"]), run.name)
    return TrainedModel(run.name, TrainConfig.from_dict(state["config"]), state["model"], {},
                        int(resize.params["size"]), resize.params.get("fit", "crop"), which, int(state["epoch"]),
                        source=path)


def read_calibrations(run: Run) -> dict:
    """calibration.json of a run: {checkpoint: entry}; {} when eval has not written it yet."""
    return read_json(run.calibration, f"re-create it with `pbn eval --run {run.name}`") or {}


def from_run(ws: Workspace, run_name: str | None, which: str = "best", *, engine_name: str = "torch",
             progress: Progress = SILENT) -> TrainedModel:
    """A run's checkpoint with the calibration `pbn eval` fitted for exactly these weights, embedding with
    ``engine_name`` (torch or onnx: ``engine.choose``)."""
    run = find_run(ws, run_name)
    calib = read_calibrations(run).get(which)
    model = _from_export(ws, run, which, calib) if engine_name == "onnx" and calib else None
    if model is None:
        model = from_checkpoint(ws, run, which)
        if not calib or calib.get("weights") != model.fingerprint():
            again = "" if which == "best" else f" --checkpoint {which}"
            raise InputError(
                f"run {run.name} has no calibration for the weights of its {which} checkpoint "
                f"(epoch {model.epoch}{', changed since the last eval' if calib else ''}); "
                f"run `pbn eval --run {run.name}{again}` first"
            )
        if engine_name == "onnx":
            attach_runtime(run, model, progress)
    model.calibration = calib
    if calib.get("attribution") and (run.folder / calib["attribution"]).exists():
        model.attribution = load_attribution(run.folder / calib["attribution"])
    return model


def _stamp(path: Path) -> dict:
    """What identifies a checkpoint file's present contents without reading it: its size and modification time."""
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _from_export(ws: Workspace, run: Run, which: str, calib: dict) -> TrainedModel | None:
    """The run answering through its ONNX export, when the export is of the calibrated weights and the checkpoint
    file is the one it was made from (torch is not imported); None otherwise."""
    checkpoint_file, stamp = run.checkpoint(which), read_json(run.engine_stamp(which), "") if \
        run.engine_stamp(which).exists() else None
    path, tiles_file = run.engine_file(str(calib.get("weights"))), run.engine_file(str(calib.get("weights")), "tiles")
    if not stamp or not checkpoint_file.exists() or not path.exists() or not tiles_file.exists() or \
            stamp != {"weights": calib.get("weights"), **_stamp(checkpoint_file)}:
        return None
    runtime = engine.open_runtime(path)
    resize = ws.require("resize")
    meta = runtime.metadata
    if runtime.side != int(resize.params["size"]) or meta.get("pbn.fit") != resize.params.get("fit", "crop"):
        return None  # the cache was remade since: the checkpoint's own check says what to do
    return TrainedModel(run.name, TrainConfig.from_dict(json.loads(meta["pbn.config"])), None, calib, runtime.side,
                        meta["pbn.fit"], which, int(meta.get("pbn.epoch", 0)), runtime=runtime,
                        tiles=engine.open_tiles(tiles_file),
                        source=checkpoint_file, _fingerprint=str(calib["weights"]))


def attach_runtime(run: Run, model: TrainedModel, progress: Progress = SILENT) -> TrainedModel:
    """Let ``model`` embed through onnxruntime: its network exported once per fingerprint into the run (checked
    against PyTorch), and the checkpoint file stamped so that later answers skip torch."""
    path, tiles = run.engine_file(model.fingerprint()), run.engine_file(model.fingerprint(), "tiles")
    if not path.exists() or not tiles.exists():
        from pbn_cli.model.onnx_model import export_onnx, export_tiles

        progress.message(f"exporting run {run.name}'s network to ONNX for onnxruntime, once for these weights "
                         f"(into {path.parent})")
        if not path.exists():
            export_onnx(model, path)
        export_tiles(model, tiles)
    model.runtime, model.tiles = engine.open_runtime(path), engine.open_tiles(tiles)
    if model.source is not None and model.source.exists():
        write_text(run.engine_stamp(model.which), json.dumps({"weights": model.fingerprint(), **_stamp(model.source)}))
    return model


def export(model: TrainedModel, path: Path) -> None:
    """One file with weights, configuration, calibration, attribution and image geometry (plain data)."""
    import torch

    from pbn_cli.model import checkpoint

    attribution = {}
    if model.attribution is not None:  # tensors and text: what a weights_only load accepts
        state = model.attribution.to_state()
        attribution = {k: (v.tolist() if v.dtype.kind in "UO" else torch.from_numpy(np.ascontiguousarray(v)))
                       for k, v in state.items()}
        attribution["fitted_on"] = str(state["fitted_on"])
    checkpoint.save(Path(path), {
        "kind": KIND, "name": model.name, "config": model.config.to_dict(), "model": model.weights(),
        "calibration": model.calibration, "image": {"size": model.image_size, "fit": model.fit},
        "attribution": attribution,
    })


def from_file(path: Path, ws: Workspace | None = None) -> TrainedModel:
    """An exported model: a .pt (torch) or an .onnx (onnxruntime, without torch). An ONNX export carries no
    attribution model: with ``ws``, that of its run in the workspace, when fitted for the same weights."""
    if Path(path).suffix.lower() == ".onnx":
        return _from_onnx(Path(path), ws)
    import torch

    from pbn_cli.model import checkpoint

    state = checkpoint.load(Path(path))
    if state.get("kind") != KIND:
        raise PbnError(f"{path} is a training checkpoint, not an exported model; make one with `pbn export RUN FILE`")
    attribution = state.get("attribution") or {}
    attribution = AttributionModel.from_state({k: v.numpy() if isinstance(v, torch.Tensor) else v
                                        for k, v in attribution.items()}) if attribution else None
    return TrainedModel(state["name"], TrainConfig.from_dict(state["config"]), state["model"], state["calibration"],
                        int(state["image"]["size"]), state["image"]["fit"], "exported", attribution=attribution)


def _from_onnx(path: Path, ws: Workspace | None) -> TrainedModel:
    runtime = engine.open_runtime(path)
    meta = runtime.metadata
    try:
        model = TrainedModel(meta["pbn.run"], TrainConfig.from_dict(json.loads(meta["pbn.config"])), None,
                             json.loads(meta["pbn.calibration"]), int(meta["pbn.image_size"]), meta["pbn.fit"],
                             meta.get("pbn.checkpoint", "exported"), int(meta.get("pbn.epoch", 0)), runtime=runtime,
                             _fingerprint=meta["pbn.weights"])
    except (KeyError, ValueError, TypeError) as err:
        raise PbnError(f"{path}: its pbn metadata is damaged ({type(err).__name__}: {engine.first_line(err)}); "
                       "export the run again") from None
    if model.image_size != runtime.side or not {"threshold", "platt_a", "platt_b"} <= set(model.calibration):
        raise PbnError(f"{path}: its pbn metadata does not match its graph; export the run again")
    if ws is not None and model.which in CHECKPOINTS and NAME.match(model.name) and (ws.runs / model.name).is_dir():
        run = Run(ws.runs / model.name)
        calib = read_calibrations(run).get(model.which) or {}
        if calib.get("weights") == model.fingerprint() and calib.get("attribution") and \
                (run.folder / calib["attribution"]).exists():
            model.attribution = load_attribution(run.folder / calib["attribution"])
    return model
