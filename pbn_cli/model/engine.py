"""Which engine embeds paintings, and the onnxruntime one: an exported graph that answers without torch.

Two engines give the same embeddings, within ``TOLERANCE`` of each other:

- ``torch``: the run's network (networks/embedder.py) on any device;
- ``onnx``: the same network exported once to ONNX (model/onnx_model.py)
  and run by onnxruntime on the CPU, 1.7-3.6x faster there than PyTorch
  (docs/benchmarks.md), with a start-up that imports neither torch nor
  timm.

``choose`` turns ``--engine auto|torch|onnx`` and ``--device`` into one
engine: auto takes onnx when the ``onnx`` extra is installed and the work
is on the CPU, torch otherwise. Whether a GPU may be present is judged
without importing torch (``gpu_visible``); where it may be, torch decides.

``Runtime`` is one exported graph in an onnxruntime session: uint8
paintings (batch, S, S, 3) at the cache's size in, painting embeddings
out, with pbn's metadata. A run's network is exported once per weights
fingerprint into the run's folder (``Run.engine_file``; model/trained.py
attaches it). Nothing here imports torch or onnxruntime when imported.
"""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

import numpy as np

from pbn_cli.core.errors import InputError

ENGINES = ("auto", "torch", "onnx")
MODULES = ("onnx", "onnxscript", "onnxruntime")  # what exporting (and running) a graph needs
INSTALL = "pip install 'pbn[onnx]'"
KIND = "pbn-onnx-model"
TILE_KIND = "pbn-onnx-tiles"  # the evidence's graph: tiles seen as paintings of one view
FORMAT = 1
INPUT, OUTPUT = "images", "embeddings"
TILE_INPUT = "views"
TOLERANCE = 1e-4  # the largest difference between the engines' embeddings (checked at every export)
BATCH = 1  # paintings a call: onnxruntime on two cores embeds one painting at a time fastest (docs/benchmarks.md)


def installed() -> bool:
    """Whether the onnx extra is installed (exporting needs onnx and onnxscript, answering onnxruntime)."""
    return all(find_spec(m) is not None for m in MODULES)


def gpu_visible() -> bool:
    """Whether a GPU may be here, judged without importing torch: an NVIDIA device node, or Apple silicon (MPS)."""
    if sys.platform == "darwin":
        return platform.machine() == "arm64"
    if os.environ.get("CUDA_VISIBLE_DEVICES") in ("", "-1"):
        return False
    return any(Path("/dev").glob("nvidia[0-9]*"))


def on_cpu(device: str) -> bool:
    """Whether ``--device`` means the CPU: cpu itself, or auto where no GPU can be present."""
    return device == "cpu" or (device == "auto" and not gpu_visible())


def choose(engine: str, device: str = "auto") -> str:
    """``torch`` or ``onnx`` for ``--engine`` and ``--device``; one line when the choice cannot be honoured."""
    if engine not in ENGINES:
        raise InputError(f"--engine must be {', '.join(ENGINES[:-1])} or {ENGINES[-1]}, got {engine!r}")
    if engine == "auto":
        return "onnx" if on_cpu(device) and installed() else "torch"
    if engine == "onnx":
        if not installed():
            raise InputError(f"--engine onnx needs the onnx extra: {INSTALL}")
        if not on_cpu(device):
            raise InputError(f"--engine onnx embeds on the CPU; with --device {device} use --engine torch (or auto)")
    return engine


@dataclass
class Runtime:
    """An exported painting graph in an onnxruntime session on the CPU."""

    path: Path
    session: object  # onnxruntime.InferenceSession
    metadata: dict  # the graph's pbn.* metadata_props
    side: int  # the S of its (batch, S, S, 3) input

    def embed(self, images: np.ndarray) -> np.ndarray:
        """(B, D) float32 embeddings of uint8 (B, S, S, 3) paintings, ``BATCH`` paintings a call."""
        images = np.ascontiguousarray(images, dtype=np.uint8)
        out = [self.session.run([OUTPUT], {INPUT: images[i : i + BATCH]})[0] for i in range(0, len(images), BATCH)]
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise InputError(f"reading an ONNX model needs onnxruntime: {INSTALL}") from None
    return onnxruntime


def first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:200]


def _describe(args) -> str:
    return ", ".join(f"{a.name}: {a.type} {list(a.shape or [])}" for a in args) or "nothing"


def _side(path: Path, session) -> int:
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


def _session(path: Path):
    """An onnxruntime session of the graph at ``path`` on the CPU; one line when it cannot be loaded."""
    ort = _onnxruntime()
    if not Path(path).is_file():
        raise InputError(f"{path} does not exist")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: a refused file is our one line, not the runtime's log
    # no memory pattern planned ahead for each batch size: the same speed here, 100 MB less at one painting a call
    options.enable_mem_pattern = False
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:
        raise InputError(f"{path} cannot be loaded as an ONNX model ({first_line(err)}); "
                         "make one with `pbn export RUN FILE.onnx`") from None


def open_runtime(path: Path) -> Runtime:
    """A graph written by ``onnx_model.export_onnx``, in a CPU session; one line for anything else."""
    path = Path(path)
    session = _session(path)
    side = _side(path, session)
    meta = dict(session.get_modelmeta().custom_metadata_map)
    if meta.get("pbn.kind") != KIND:
        raise InputError(f"{path} is an ONNX model but not a pbn export (no pbn metadata); "
                         "make one with `pbn export RUN FILE.onnx`")
    if not meta.get("pbn.format", "").isdigit() or int(meta["pbn.format"]) > FORMAT:
        raise InputError(f"{path} was written by a newer pbn (format {meta.get('pbn.format')}); upgrade pbn to read it")
    return Runtime(path, session, meta, side)


@dataclass
class Tiles:
    """The evidence's tile graph in an onnxruntime session: square tiles, each a painting of one view."""

    path: Path
    session: object
    size: int  # the network's input size, which tiles are brought to

    def embed(self, tiles: np.ndarray) -> np.ndarray:
        """(N, D) embeddings of uint8 tiles (N, t, t, 3): as floats in [0, 1], channels first, brought to the input
        size as ``F.interpolate(bilinear)`` brings a smaller one (``upsample_matrix``), one tile a call."""
        views = np.ascontiguousarray(tiles, np.float32).transpose(0, 3, 1, 2) / np.float32(255)
        if views.shape[-1] != self.size:
            m = upsample_matrix(views.shape[-1], self.size)
            views = np.matmul(np.matmul(m, views), m.T)
        views = np.ascontiguousarray(views, np.float32)
        out = [self.session.run([OUTPUT], {TILE_INPUT: views[i : i + 1]})[0] for i in range(len(views))]
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def upsample_matrix(side: int, size: int) -> np.ndarray:
    """(size, side): bilinear enlargement along one axis with half-pixel centres (what ``F.interpolate`` does with
    ``align_corners=False``; antialiasing changes nothing when enlarging)."""
    src = np.maximum((np.arange(size) + 0.5) * side / size - 0.5, 0)
    low = np.minimum(np.floor(src).astype(int), side - 1)
    high = np.minimum(low + 1, side - 1)
    frac = src - low
    m = np.zeros((size, side), np.float64)
    m[np.arange(size), low] += 1 - frac
    m[np.arange(size), high] += frac
    return m.astype(np.float32)


def open_tiles(path: Path) -> Tiles:
    """A tile graph written by ``onnx_model.export_tiles``."""
    session = _session(path)
    meta = dict(session.get_modelmeta().custom_metadata_map)
    if meta.get("pbn.kind") != TILE_KIND:
        raise InputError(f"{path} is not a pbn tile graph")
    return Tiles(Path(path), session, int(meta["pbn.input_size"]))
