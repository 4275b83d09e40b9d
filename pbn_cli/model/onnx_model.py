"""ONNX export, and a model that answers `compare` through onnxruntime alone.

``pbn export RUN model.onnx`` writes one ONNX file (opset ``OPSET``, torch's
``torch.export``-based exporter) whose graph starts where the image door
ends: uint8 RGB paintings at the cache's size and fit, ``(batch, S, S, 3)``,
exactly what ``TrainedModel.read`` returns. Inside the graph is everything
``embed.embed_images`` does with the network's own ``paintings``: the fixed
views of ``views.grid_views``, the input normalisation, each view's
embedding, their mean per painting, the L2 normalisation and, for models
with the untouched pretrained copy (``keep_pretrained > 0``), both networks
and ``Embedder.combine``. Out come the painting embeddings ``(batch, D)``.
The batch axis is dynamic. The calibration (threshold, Platt's a and b), the
image geometry, the run's name and the weights' fingerprint travel as
``metadata_props`` (``pbn.*``), so ``pbn compare --model model.onnx`` reads
both images through the same door and gives the run's verdicts with
onnxruntime, without building a torch network.

The antialiased shrink of the ``resize`` and ``mixed`` views is linear and
separable: the graph multiplies by the very weights ``F.interpolate``
applies, read off by shrinking the identity (``shrink_matrix``),
``M @ image @ M.T`` in two MatMuls that any runtime runs alike. Every export
is checked against PyTorch with onnxruntime before it is moved into place.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import pbn_cli
from pbn_cli.core.atomic import atomic_path
from pbn_cli.core.errors import InputError, PbnError
from pbn_cli.core.extras import require
from pbn_cli.data import imaging
from pbn_cli.model import calibration as calibrated
from pbn_cli.model.embed import embed_images
from pbn_cli.model.embedder import Embedder
from pbn_cli.model.recipe import TrainConfig
from pbn_cli.model.views import grid_views, to_float, views_per_painting

KIND = "pbn-onnx-model"
FORMAT = 1
OPSET = 18  # what torch's exporter writes natively (no version conversion); onnxruntime >= 1.14 runs it
TOLERANCE = 1e-4  # the largest difference from PyTorch's embeddings an export may show
INPUT, OUTPUT = "images", "embeddings"
INSTALL = "pip install 'pbn[onnx]'"
PROBES = 3  # random paintings each export is checked on


def shrink_matrix(side: int, size: int) -> torch.Tensor:
    """(size, side): the weights ``F.interpolate(bilinear, antialias)`` gives each pixel along one axis.

    Shrinking the identity's rows only (its width kept, which the separable kernel leaves as it is) gives M @ I = M.
    """
    unit = torch.eye(side)[None, None]
    return F.interpolate(unit, size=(size, side), mode="bilinear", antialias=True, align_corners=False)[0, 0]


def graph_views(x: torch.Tensor, size: int, view: str, shrink: torch.Tensor) -> torch.Tensor:
    """``views.grid_views`` with the antialiased shrink as the two matrix products it is (same views, exportable)."""
    side = x.shape[1]
    if view == "resize" or size >= side:
        return _whole(x, size, shrink)
    crops = grid_views(x, size, "crop")  # plain slices
    if view == "crop":
        return crops
    n = views_per_painting(side, size, "crop")
    whole = _whole(x, size, shrink)[:, None]
    return torch.cat([crops.reshape(-1, n, 3, size, size), whole], 1).reshape(-1, 3, size, size)


def _whole(x: torch.Tensor, size: int, shrink: torch.Tensor) -> torch.Tensor:
    img = to_float(x)
    return img if size == img.shape[-1] else torch.matmul(torch.matmul(shrink, img), shrink.T)


class PaintingGraph(nn.Module):
    """What is exported: uint8 paintings (B, S, S, 3) at the cache's size -> painting embeddings (B, D)."""

    def __init__(self, network: Embedder, cache_size: int):
        super().__init__()
        self.network = network
        c = network.config
        self.size, self.view = c.input_size, c.view
        self.views = views_per_painting(cache_size, c.input_size, c.view)
        self.register_buffer("shrink", shrink_matrix(cache_size, c.input_size), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network.paintings(graph_views(images, self.size, self.view, self.shrink), self.views)


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:200]


def metadata(model) -> dict[str, str]:
    """The ``pbn.*`` metadata_props: calibration, image geometry, run and weights (strings; floats round-trip)."""
    c, cal, side = model.config.model, model.calibration, model.image_size
    return {
        "pbn.kind": KIND, "pbn.format": str(FORMAT), "pbn.version": pbn_cli.__version__,
        "pbn.run": model.name, "pbn.checkpoint": model.which, "pbn.epoch": str(model.epoch),
        "pbn.weights": model.fingerprint(), "pbn.backbone": c.backbone,
        "pbn.image_size": str(side), "pbn.fit": model.fit, "pbn.view": c.view, "pbn.input_size": str(c.input_size),
        "pbn.threshold": repr(float(cal["threshold"])), "pbn.platt_a": repr(float(cal["platt_a"])),
        "pbn.platt_b": repr(float(cal["platt_b"])),
        "pbn.input": f"{INPUT}: uint8 RGB paintings (batch, {side}, {side}, 3), read at {side} px with fit {model.fit}",
        "pbn.output": f"{OUTPUT}: float32 painting embeddings (batch, D); same artist when the L2 distance <= "
                      "pbn.threshold; p(same) = 1 / (1 + exp(pbn.platt_a * distance + pbn.platt_b))",
        "pbn.calibration": json.dumps(cal), "pbn.config": json.dumps(model.config.to_dict()),
    }


def export_onnx(model, path: Path) -> float:
    """Write ``model`` to ``path`` as ONNX, atomically, once onnxruntime agrees with PyTorch; the largest difference."""
    require("onnx", ("onnx", "onnxscript", "onnxruntime"), "exporting to ONNX")
    network = model.network(torch.device("cpu"))
    graph = PaintingGraph(network, model.image_size).eval()
    probe = np.random.default_rng(0).integers(0, 256, (PROBES, model.image_size, model.image_size, 3), np.uint8)
    try:
        with torch.no_grad():
            program = torch.onnx.export(graph, (torch.from_numpy(probe[:2]),), dynamo=True, opset_version=OPSET,
                                        input_names=[INPUT], output_names=[OUTPUT], verbose=False,
                                        dynamic_shapes={INPUT: {0: "batch"}}, optimize=True)
    except Exception as err:  # an operator the exporter lacks: the .pt export still works
        raise PbnError(f"run {model.name}'s network ({model.config.model.backbone}) does not export to ONNX "
                       f"({_first_line(err)}); export it as .pt instead") from None
    program.model.metadata_props.update(metadata(model))
    program.model.doc_string = f"pbn painter embedding of run {model.name} ({model.which})"
    with atomic_path(Path(path)) as tmp:
        program.save(str(tmp), external_data=False)
        return check(load(tmp), network, probe)


def check(onnx_model: OnnxModel, network: Embedder, images: np.ndarray) -> float:
    """The largest difference between onnxruntime's and PyTorch's embeddings of ``images`` (batched and one alone)."""
    expected = embed_images(network, lambda idx: images[idx], len(images), torch.device("cpu"),
                            batch_size=len(images))
    diff = max(float(np.abs(onnx_model.embed_batch(images) - expected).max()),
               float(np.abs(onnx_model.embed_batch(images[:1]) - expected[:1]).max()))
    if not diff <= TOLERANCE:
        raise PbnError(f"the ONNX graph's embeddings differ from PyTorch's by {diff:.2g} (more than {TOLERANCE:g}); "
                       "nothing written: export it as .pt instead")
    return diff


@dataclass
class OnnxModel:
    """An exported ONNX model answering as a ``TrainedModel`` does for ``compare``: through onnxruntime alone.

    (``model/trained.py`` imports this module to load ``.onnx`` files, so this one names ``TrainedModel`` without
    importing it; both read paintings through ``imaging.read_painting``.)
    """

    path: Path
    session: object  # onnxruntime.InferenceSession
    name: str
    config: TrainConfig
    calibration: dict
    image_size: int
    fit: str
    weights: str  # the fingerprint of the run's weights and geometry
    which: str = "exported"
    epoch: int = 0
    attributor: None = None

    def read(self, path: Path, name: str | None = None) -> np.ndarray:
        """A painting file as the model sees it: the image door with the cache's size and fit (as ``TrainedModel.read``)."""
        return imaging.read_painting(path, self.image_size, self.fit, name)

    def embed_batch(self, images: np.ndarray) -> np.ndarray:
        """(B, D) float32 embeddings of uint8 (B, S, S, 3) paintings."""
        return self.session.run([OUTPUT], {INPUT: np.ascontiguousarray(images, dtype=np.uint8)})[0]

    def embed_one(self, pixels: np.ndarray, device: torch.device | None = None) -> np.ndarray:
        """The embedding of one painting read by ``read``, alone (onnxruntime on the CPU, whatever ``device``)."""
        return self.embed_batch(pixels[None])[0]

    def embed_files(self, paths: list[Path], device: torch.device | None = None) -> np.ndarray:
        images = [self.read(path) for path in paths]
        return np.stack([self.embed_one(pixels) for pixels in images])

    def probability(self, distance: float) -> float:
        return float(calibrated.probability(distance, self.calibration["platt_a"], self.calibration["platt_b"]))

    def fingerprint(self) -> str:
        return self.weights

    def network(self, *args, **kwargs):
        """What needs the torch network (evidence, search, predict, serve) asks for the run or a .pt export."""
        raise InputError(f"{self.path} is an ONNX model: it answers `pbn compare` (without --evidence) through "
                         "onnxruntime; for this, use the run (-w WORKSPACE --run NAME) or a .pt export "
                         "(`pbn export RUN model.pt`)")

    store = fill = embeddings = network


def _runtime():
    try:
        import onnxruntime
    except ImportError:
        raise InputError(f"reading an ONNX model needs onnxruntime: {INSTALL}") from None
    return onnxruntime


def _describe(args) -> str:
    return ", ".join(f"{a.name}: {a.type} {list(a.shape or [])}" for a in args) or "nothing"


def _check_signature(path: Path, session) -> int:
    """The side S of the uint8 (batch, S, S, 3) input of a pbn export; one line for any other ONNX model."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    shape = list(inputs[0].shape or []) if len(inputs) == 1 else []
    side = shape[1] if len(shape) == 4 and isinstance(shape[1], int) and shape[1:] == [shape[1], shape[1], 3] else None
    if side is None or inputs[0].type != "tensor(uint8)" or len(outputs) != 1 or outputs[0].type != "tensor(float)" \
            or len(outputs[0].shape or []) != 2:
        raise InputError(f"{path} is not a pbn painting model: it takes {_describe(inputs)} and gives "
                         f"{_describe(outputs)}, where a pbn export takes uint8 paintings (batch, S, S, 3) and gives "
                         "embeddings (batch, D); make one with `pbn export RUN FILE.onnx`")
    return side


def load(path: Path) -> OnnxModel:
    """An ONNX file written by ``export_onnx``, ready to answer; one line for anything else."""
    ort = _runtime()
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} does not exist")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: a refused file is our one line, not the runtime's log
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:
        raise InputError(f"{path} cannot be loaded as an ONNX model ({_first_line(err)}); "
                         "make one with `pbn export RUN FILE.onnx`") from None
    side = _check_signature(path, session)
    meta = session.get_modelmeta().custom_metadata_map
    if meta.get("pbn.kind") != KIND:
        raise InputError(f"{path} is an ONNX model but not a pbn export (no pbn metadata); "
                         "make one with `pbn export RUN FILE.onnx`")
    try:
        if int(meta["pbn.format"]) > FORMAT:
            raise PbnError(f"{path} was written by a newer pbn (format {meta['pbn.format']}); upgrade pbn to read it")
        model = OnnxModel(path, session, meta["pbn.run"], TrainConfig.from_dict(json.loads(meta["pbn.config"])),
                          json.loads(meta["pbn.calibration"]), int(meta["pbn.image_size"]), meta["pbn.fit"],
                          meta["pbn.weights"], meta.get("pbn.checkpoint", "exported"), int(meta.get("pbn.epoch", 0)))
    except (KeyError, ValueError, TypeError) as err:
        raise PbnError(f"{path}: its pbn metadata is damaged ({type(err).__name__}: {_first_line(err)}); "
                       "export the run again") from None
    if model.image_size != side or not {"threshold", "platt_a", "platt_b"} <= set(model.calibration):
        raise PbnError(f"{path}: its pbn metadata does not match its graph; export the run again")
    return model
