"""A trained model for Python: ``load`` one, then ``embed``, ``compare``, ``attribute`` and ``search``.

A model comes from a workspace run (its best checkpoint and the calibration
and attribution model ``evaluate`` fitted) or from one exported file
(``.pt`` or ``.onnx``). Images are paths, PIL images or (H, W, 3) uint8
arrays; each enters through the same image door as the workspace's
paintings, so it gets the same pixels, and the same embedding, as there.

Examples (``workspace`` is a trained and evaluated workspace, ``a`` and
``b`` two of its painting files):

>>> import pbn_cli as pbn
>>> model = pbn.load(workspace=workspace)
>>> model.embed([a, b]).shape[0]
2
>>> verdict = model.compare(a, b)
>>> verdict.words in ("same artist", "different artists")
True
>>> 0.0 <= verdict.same_artist_probability <= 1.0
True
>>> hands = model.attribute(a, k=3)
>>> len(hands.hands), hands.verdict in ("named", "probably", "unknown hand")
(3, True)
>>> near = model.search(a, k=5)
>>> list(near.columns[:3]), len(near)
(['image_id', 'artist', 'split'], 5)
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence, Union

import numpy as np

from pbn_cli.core.errors import InputError
from pbn_cli.core.progress import SILENT, Progress
from pbn_cli.api.workspace import folder
from pbn_cli.core.workspace import Workspace as Folder
from pbn_cli.data import imaging
from pbn_cli.inference.attribute import Attribution, Candidate
from pbn_cli.inference.compare import Verdict

if TYPE_CHECKING:
    import pandas as pd
    from PIL.Image import Image as PILImage

    from pbn_cli.inference.search import Gallery
    from pbn_cli.model.trained import TrainedModel

    Image = Union[str, os.PathLike, PILImage, np.ndarray]

__all__ = ["Attribution", "Candidate", "Model", "Verdict", "load"]


def load(source: str | os.PathLike | None = None, *, workspace=None, run: str | None = None, checkpoint: str = "best",
         engine: str = "auto", device: str = "auto", progress: Progress = SILENT) -> Model:
    """The model that answers: ``source``, an exported file (.pt or .onnx), or else a run of ``workspace`` (the
    latest trained one unless ``run`` names another; ``checkpoint``: best, last or start).

    ``engine`` (a run's): onnx (onnxruntime on the CPU, no PyTorch; needs ``pip install 'pbn[onnx]'``), torch, or
    auto (onnx on the CPU when installed); a file runs as what it is (.pt with torch, .onnx with onnxruntime). ``device``: auto, cpu, cuda, cuda:N or mps. A model loaded from a file
    attributes and searches only with a ``workspace`` that holds the paintings.
    """
    from pbn_cli.model import trained
    from pbn_cli.model.engine import choose

    ws = folder(workspace)
    if source is not None:
        _check_file_request(Path(source), run, checkpoint)
        model = trained.from_file(Path(source), ws)
    elif ws is None:
        raise InputError("load: give a model file or a workspace (pbn.load(workspace='workspace'))")
    else:
        model = trained.from_run(ws, run, checkpoint, engine_name=choose(engine, device), progress=progress)
    return Model(model, ws, device, from_run=source is None)


def _check_file_request(source: Path, run: str | None, checkpoint: str) -> None:
    """A model file is one network: a run or a checkpoint named beside it is refused, not ignored."""
    if run is not None or checkpoint != "best":
        raise InputError(f"load: {source.name} is a model file; run= and checkpoint= choose within a workspace")


def torch_device(name: str):
    """The torch device ``name`` stands for (importing torch)."""
    from pbn_cli.core.device import select_device

    return select_device(name)


@dataclass
class Model:
    """A trained model ready to answer (``load`` makes one): its network's engine, calibration and attribution
    model, and the workspace whose paintings ``attribute`` and ``search`` look among."""

    trained: TrainedModel = field(repr=False)
    workspace: Folder | None = None
    device_name: str = "auto"
    from_run: bool = True  # a workspace run (predict caches its images' embeddings in the run), not a file
    _device: object = field(default=None, repr=False)
    _galleries: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self.workspace = folder(self.workspace)  # a path or a pbn.Workspace becomes the folder the library takes
        if self.trained.runtime is None:  # the torch engine: its device, chosen once
            self._device = torch_device(self.device_name)

    def __repr__(self) -> str:
        where = f", workspace={str(self.workspace.root)!r}" if self.workspace is not None else ""
        return f"Model({self.name!r}, engine={self.engine!r}{where})"

    @property
    def name(self) -> str:
        """The run's name (or the exported file's)."""
        return self.trained.name

    @property
    def engine(self) -> str:
        """What embeds: onnx or torch."""
        return self.trained.engine

    @property
    def name_at(self) -> tuple[float, float]:
        """p(top hand) from which ``attribute`` names a hand: (for a hand the network did not train on, for one it
        did); named answers were that often right in evaluate's fitting (80%)."""
        if self.trained.attribution is None or self.trained.attribution.open_set is None:
            raise InputError(f"run {self.name} has no attribution model: run `pbn eval` (pbn.evaluate) first")
        new, known = self.trained.attribution.open_set.name_at
        return float(new), float(known)

    @property
    def checkpoint(self) -> str | None:
        """Which of the run's checkpoints answers (best, last or start); None for a model file."""
        return self.trained.which if self.from_run else None

    @property
    def device(self):
        """The torch device the network runs on; None when onnxruntime embeds."""
        return self._device

    def pixels(self, image: Image, name: str | None = None) -> np.ndarray:
        """A painting as the model sees it: (S, S, 3) uint8 at the workspace cache's size and fit."""
        return self.trained.read(image, name)

    def embed(self, images: Image | Sequence[Image]) -> np.ndarray:
        """The embeddings of ``images``: (n, d) for a list, (d,) for one image; each computed alone."""
        if _single(images):
            return self.trained.embed_one(self.pixels(images), self._device)
        images = list(images)
        if not images:
            raise InputError("embed: give at least one image")
        return self.trained.embed_files(images, self._device)

    def compare(self, a: Image, b: Image, *, sheet: str | os.PathLike | None = None) -> Verdict:
        """Were ``a`` and ``b`` painted by the same artist? The distance against the run's calibrated threshold,
        the probability of the same artist and the verdict in words; ``sheet``: a PNG of the two side by side."""
        from pbn_cli.inference.compare import compare, verdict_sheet

        found = compare(self.trained, a, b, device=self._device)
        if sheet is not None:
            verdict_sheet(self.trained, a, b, found, Path(sheet))
        return found

    def evidence(self, a: Image, b: Image, *, path: str | os.PathLike | None = None, details: int = 4,
                 title: str | None = None, names: tuple[str | None, str | None] = (None, None)) -> dict:
        """Which regions of each painting resemble the other, and the ``details`` most similar pairs of passages
        (boxes in the files' own pixels); ``path``: also draw it (PNG). ``names``: how the picture and the
        result name each painting (default: its file name, or "image 1", "image 2" for a picture in memory)."""
        from pbn_cli.inference.evidence import evidence, evidence_sheet, tiles

        # a picture that cannot be a painting stops here, in one line; read once, its whole embedding's input
        seen = [self.pixels(image, None if imaging.is_file(image) else imaging.image_name(image, n))
                for n, image in enumerate((a, b))]
        device = self.evidence_device()
        with _files([a, b]) as (fa, fb):
            found = evidence(tiles(self.trained, fa, device, names[0], seen[0]),
                             tiles(self.trained, fb, device, names[1], seen[1]), self.trained)
            if path is None:
                return found.to_dict(details)
            if title is None:
                v = self.compare(fa, fb)
                title = f"{fa.name} and {fb.name}: {v.words}, p(same) = {v.same_artist_probability:.2f}"
            return evidence_sheet(found, Path(path), title, details)

    def evidence_device(self):
        """The device the evidence's tiles are embedded on: none when the onnx engine's tile graph embeds them,
        else the network's."""
        if self._device is not None or self.trained.tiles is not None:
            return self._device
        return torch_device(self.device_name)

    def _workspace(self, what: str) -> Folder:
        if self.workspace is None:
            raise InputError(f"{what} looks among a workspace's paintings: load the model with workspace=...")
        return self.workspace

    def gallery(self, *, half: bool = False, progress: Progress = SILENT) -> Gallery:
        """The workspace's paintings with their embeddings (from the embedding store; only paintings not stored
        yet are embedded), kept for the next question while the workspace's manifests stay as they are."""
        from pbn_cli.inference.search import gallery

        ws = self._workspace("search")
        state = tuple(sorted((m.name, m.stat().st_mtime_ns) for m in ws.manifests.glob("*.parquet")))
        if self._galleries.get(half, (None, None))[0] != state:  # a stage rewrote a manifest: new paintings
            self._galleries[half] = (state, gallery(ws, self.trained, self._device, half=half, progress=progress))
        return self._galleries[half][1]

    def attribute(self, images: Image | Sequence[Image], *, among: str = "all", k: int = 5,
                  sheet: str | os.PathLike | None = None, progress: Progress = SILENT
                  ) -> Attribution | list[Attribution]:
        """Who painted it? Each image's ``k`` most likely hands among the workspace's artists (``among``: all, or
        one split), with p(hand), p(unknown hand) and the answer: the name, "probably X, uncertain" (or "perhaps
        …"), or "unknown hand". One image gives one ``Attribution``, a list gives a list. ``sheet``: a PNG of the
        answers."""
        from pbn_cli.inference.attribute import attribute, attribute_sheet, check_request

        ws = self._workspace("attribute")
        check_request(self.trained, among, k)  # before the gallery is embedded
        one = _single(images)
        images = [images] if one else list(images)
        # a file that is not an image stops here, before the gallery is embedded; each is decoded once
        read = [self.pixels(image, None if imaging.is_file(image) else imaging.image_name(image, n))
                for n, image in enumerate(images)]
        results = attribute(ws, self.trained, images, among=among, k=k, device=self._device,
                            g=self.gallery(progress=progress), progress=progress, pixels=read)
        if sheet is not None:
            attribute_sheet(ws, self.trained, images, results, Path(sheet), pixels=read)
        return results[0] if one else results

    def attribution_evidence(self, image: Image, result: Attribution, *, path: str | os.PathLike | None = None,
                             details: int = 4) -> dict:
        """The evidence of ``image`` against its top hand's closest painting, read from that painting's file."""
        from pbn_cli.data.paths import painting_file

        if not result.hands:
            raise InputError("attribution evidence: the answer names no hand to show")
        hand = result.hands[0]
        other = painting_file(self._workspace("attribute"), hand.closest["image_id"].iloc[0],
                              self.gallery().files or None)  # the files the answer's gallery read
        answer = "unknown hand (closest hand shown)" if result.unknown else f"{result.answer}, p = {hand.probability:.2f}"
        with _files([image]) as (query,):
            return self.evidence(query, other, path=path, details=details, title=f"{query.name}: {answer}",
                                 names=(None, f"{hand.artist}: {other.name}"))

    def search(self, image: Image, k: int = 10, *, split: str = "all", where: Sequence[str] | None = None,
               index: str = "auto", half: bool = False, sheet: str | os.PathLike | None = None,
               progress: Progress = SILENT) -> pd.DataFrame:
        """The ``k`` workspace paintings nearest to ``image`` (``split``: all, train, val, calib or test;
        ``where``: conditions such as "date>=1600" on the workspace's columns; ``index``: exact, faiss or auto),
        nearest first: image_id, artist, split, distance, same_artist_probability, same_painting (the query's own
        painting in another file, shown but not voting; its own file is left out). The vote of their artists is
        in ``.attrs["vote"]`` (most frequent first), the run in ``.attrs["run"]``."""
        from pbn_cli.inference import filters
        from pbn_cli.inference.index import KINDS, finder_for
        from pbn_cli.inference.search import check_request, search, search_sheet

        ws = self._workspace("search")
        check_request(k, split)
        if index not in KINDS:
            raise InputError(f"unknown index {index!r}; choose one of {', '.join(KINDS)}")
        where = [where] if isinstance(where, str) else list(where or [])
        pixels = self.pixels(image)  # a query that is not an image stops here, before the gallery is embedded
        g = self.gallery(half=half, progress=progress)
        finder = finder_for(index, g, self.trained.store(ws, half), progress=progress)
        result = search(ws, self.trained, image=image, k=k, split=split, where=filters.mask(g.table, where),
                        device=self._device, finder=finder, g=g, pixels=pixels)
        if sheet is not None:
            search_sheet(ws, self.trained, image, result, Path(sheet), pixels)
        near = result.neighbours.drop(columns=["cache_row"])
        near.attrs.update(vote=[(str(a), int(n)) for a, n in result.vote], run=self.name)
        return near

    def build_index(self, *, half: bool = False, progress: Progress = SILENT):
        """Build (or extend) the FAISS index of this model's embedding store (``pip install 'pbn[faiss]'``)."""
        from pbn_cli.inference import index

        return index.load_or_build(self.gallery(half=half, progress=progress),
                                   self.trained.store(self._workspace("index"), half), progress=progress)

    def predict(self, pairs_csv: str | os.PathLike, images: str | os.PathLike, output: str | os.PathLike, *,
                missing: str = "error", workers: int | None = None, progress: Progress = SILENT):
        """Same-artist probabilities for every pair of ``pairs_csv`` (index, image1, image2) written to ``output``
        (index,sameArtist, a Kaggle submission); a workspace run caches the images' embeddings."""
        from pbn_cli.inference.predict import predict, run_cache

        cache = run_cache(self.workspace, self.trained) if self.from_run and self.workspace is not None else None
        return predict(self.trained, Path(pairs_csv), Path(images), Path(output), device=self._device,
                       missing=missing, cache=cache, workers=workers, progress=progress)

    def export(self, file: str | os.PathLike) -> dict:
        """Write the model to one file: .pt (weights, configuration, calibration; plain data) or .onnx (a graph
        for onnxruntime, checked against PyTorch: ``largest_difference`` of their embeddings)."""
        from pbn_cli.model import trained

        if Path(file).suffix.lower() != ".onnx":
            trained.export(self.trained, Path(file))
            return {"file": str(file), "onnx_opset": None, "largest_difference": None}
        from pbn_cli.model.onnx_model import OPSET, export_onnx

        return {"file": str(file), "onnx_opset": OPSET, "largest_difference": float(export_onnx(self.trained, Path(file)))}


def _single(images) -> bool:
    return isinstance(images, (str, os.PathLike, np.ndarray)) or hasattr(images, "getbands")


@contextlib.contextmanager
def _files(images: Sequence) -> Iterator[list[Path]]:
    """Paths for the pictures that read files (sheets, evidence): a path as it is, an image or array written to a
    temporary PNG for the while."""
    with tempfile.TemporaryDirectory(prefix="pbn-") as tmp:
        out = []
        for n, image in enumerate(images):
            if imaging.is_file(image):
                out.append(Path(image))
                continue
            from PIL import Image as PILImage

            pic = image if hasattr(image, "getbands") else PILImage.fromarray(image)
            if pic.mode not in ("RGB", "RGBA", "L", "LA"):  # a PNG holds these; the image door reads them as any file
                pic = pic.convert("RGBA" if "A" in pic.getbands() else "RGB")
            out.append(Path(tmp) / f"image {n + 1}.png")
            pic.save(out[-1])
        yield out
