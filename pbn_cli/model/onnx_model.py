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
onnxruntime (model/engine.py), without importing torch. The onnx engine
embeds through the same graph, exported once per weights fingerprint into
the run (model/trained.py, ``attach_runtime``).

The antialiased shrink of the ``resize`` and ``mixed`` views is linear and
separable: the graph multiplies by the very weights ``F.interpolate``
applies, read off by shrinking the identity (``shrink_matrix``),
``M @ image @ M.T`` in two MatMuls that any runtime runs alike. Every export
is checked against PyTorch with onnxruntime before it is moved into place.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pbn_cli.core.atomic import atomic_path
from pbn_cli.core.version import VERSION
from pbn_cli.core.errors import PbnError
from pbn_cli.core.extras import require
from pbn_cli.networks.embed import embed_images
from pbn_cli.networks.embedder import Embedder
from pbn_cli.model.engine import (FORMAT, INPUT, KIND, MODULES, OUTPUT, TILE_INPUT, TILE_KIND, TOLERANCE, Runtime,
                                  first_line, open_runtime, open_tiles)
from pbn_cli.networks.views import grid_views, to_float, views_per_painting

OPSET = 18  # what torch's exporter writes natively (no version conversion); onnxruntime >= 1.14 runs it
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


class TileGraph(nn.Module):
    """The evidence's graph: float views in [0, 1] (B, 3, T, T) at the network's input size, each a painting of one
    view -> their embeddings (B, D) (model/engine.py's ``Tiles`` brings tiles to it)."""

    def __init__(self, network: Embedder):
        super().__init__()
        self.network = network

    def forward(self, views: torch.Tensor) -> torch.Tensor:
        return self.network.paintings(views, 1)


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


def metadata(model) -> dict[str, str]:
    """The ``pbn.*`` metadata_props: calibration (when fitted), image geometry, run and weights (strings; floats
    round-trip)."""
    c, cal, side = model.config.model, model.calibration, model.image_size
    meta = {
        "pbn.kind": KIND, "pbn.format": str(FORMAT), "pbn.version": VERSION,
        "pbn.run": model.name, "pbn.checkpoint": model.which, "pbn.epoch": str(model.epoch),
        "pbn.weights": model.fingerprint(), "pbn.backbone": c.backbone,
        "pbn.image_size": str(side), "pbn.fit": model.fit, "pbn.view": c.view, "pbn.input_size": str(c.input_size),
        "pbn.input": f"{INPUT}: uint8 RGB paintings (batch, {side}, {side}, 3), read at {side} px with fit {model.fit}",
        "pbn.output": f"{OUTPUT}: float32 painting embeddings (batch, D); same artist when the L2 distance <= "
                      "pbn.threshold; p(same) = 1 / (1 + exp(pbn.platt_a * distance + pbn.platt_b))",
        "pbn.config": json.dumps(model.config.to_dict()),
    }
    if cal:
        meta.update({"pbn.threshold": repr(float(cal["threshold"])), "pbn.platt_a": repr(float(cal["platt_a"])),
                     "pbn.platt_b": repr(float(cal["platt_b"])), "pbn.calibration": json.dumps(cal)})
    return meta


def _program(graph: nn.Module, probe: torch.Tensor, input_name: str, model, fallback: str):
    """``graph`` exported by torch's exporter (batch axis dynamic); one line when an operator is missing."""
    require("onnx", MODULES, "exporting to ONNX")
    try:
        with torch.no_grad():
            return torch.onnx.export(graph.eval(), (probe[:2],), dynamo=True, opset_version=OPSET,
                                     input_names=[input_name], output_names=[OUTPUT], verbose=False,
                                     dynamic_shapes={input_name: {0: "batch"}}, optimize=True)
    except Exception as err:  # an operator the exporter lacks
        raise PbnError(f"run {model.name}'s network ({model.config.model.backbone}) does not export to ONNX "
                       f"({first_line(err)}); {fallback}") from None


def export_onnx(model, path: Path) -> float:
    """Write ``model`` to ``path`` as ONNX, atomically, once onnxruntime agrees with PyTorch; the largest difference."""
    network = model.network(torch.device("cpu"))
    probe = np.random.default_rng(0).integers(0, 256, (PROBES, model.image_size, model.image_size, 3), np.uint8)
    program = _program(PaintingGraph(network, model.image_size), torch.from_numpy(probe), INPUT, model,
                       "export it as .pt instead")
    program.model.metadata_props.update(metadata(model))
    program.model.doc_string = f"pbn painter embedding of run {model.name} ({model.which})"
    with atomic_path(Path(path)) as tmp:
        program.save(str(tmp), external_data=False)
        return check(open_runtime(tmp), network, probe)


def export_tiles(model, path: Path) -> float:
    """The evidence's tile graph of ``model`` (``TileGraph``) to ``path``, atomically, once onnxruntime agrees with
    PyTorch; the largest difference."""
    network = model.network(torch.device("cpu"))
    size = network.config.input_size
    probe = torch.rand(PROBES, 3, size, size, generator=torch.Generator().manual_seed(0))
    program = _program(TileGraph(network), probe, TILE_INPUT, model, "use --engine torch")
    with torch.no_grad():
        expected = network.paintings(probe, 1).float().numpy()
    program.model.metadata_props.update({"pbn.kind": TILE_KIND, "pbn.format": str(FORMAT),
                                         "pbn.weights": model.fingerprint(), "pbn.input_size": str(size)})
    with atomic_path(Path(path)) as tmp:
        program.save(str(tmp), external_data=False)
        diff = float(np.abs(open_tiles(tmp).session.run([OUTPUT], {TILE_INPUT: probe.numpy()})[0] - expected).max())
        if not diff <= TOLERANCE:
            raise PbnError(f"the ONNX tile graph's embeddings differ from PyTorch's by {diff:.2g}; use --engine torch")
        return diff


def check(runtime: Runtime, network: Embedder, images: np.ndarray) -> float:
    """The largest difference between onnxruntime's and PyTorch's embeddings of ``images`` (batched and one alone)."""
    expected = embed_images(network, lambda idx: images[idx], len(images), torch.device("cpu"),
                            batch_size=len(images))
    diff = max(float(np.abs(runtime.session.run([OUTPUT], {INPUT: images})[0] - expected).max()),
               float(np.abs(runtime.embed(images[:1]) - expected[:1]).max()))
    if not diff <= TOLERANCE:
        raise PbnError(f"the ONNX graph's embeddings differ from PyTorch's by {diff:.2g} (more than {TOLERANCE:g}); "
                       "nothing written: export it as .pt instead")
    return diff
