"""What `pbn serve` answers, apart from the web: one model loaded once, uploads embedded once.

The page asks the same functions as the commands: an upload enters through
the image door (``TrainedModel.read``) from a private temporary folder,
never the workspace, and is embedded as ``pbn compare`` embeds a file;
verdicts come from ``inference.compare.verdict``, neighbours from
``inference.search.nearest`` over the run's search embeddings (the cache
``pbn search`` keeps). Requests from several tabs share the model; an
image's embedding is computed once, however many requests ask for it at once.
"""

from __future__ import annotations

import hashlib
import io
import re
import tempfile
import threading
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from pbn_cli.core.errors import InputError, PbnError
from pbn_cli.core.progress import Progress
from pbn_cli.core.runs import run_for, trained_runs
from pbn_cli.evaluation.summary import summarize
from pbn_cli.core.workspace import Workspace
from pbn_cli.data.cache import CacheData
from pbn_cli.evaluation.plots import distance_histograms
from pbn_cli.inference.attribute import Attribution, attribute_one, check_request, known_hands
from pbn_cli.inference.compare import Verdict, verdict
from pbn_cli.inference.evidence import evidence, evidence_sheet, tiles
from pbn_cli.inference.search import Gallery, SearchResult, gallery, nearest, same_picture
from pbn_cli.answers import metrics
from pbn_cli.model.trained import TrainedModel

MAX_UPLOAD_BYTES = 50 * 2**20  # larger files are refused before decoding; pixels are limited by the image door
DETAIL_SIDE = 1024  # a matched detail is sent at its own resolution up to this side (the page enlarges it)
KEEP_UPLOADS = 256  # embeddings of recent uploads kept in memory (never on disk)
HISTOGRAM_PAINTINGS = 2000  # val paintings whose pairs draw the distance histogram (seeded sample above this)
_PICTURE = re.compile(r"^[A-Za-z0-9_.-]+\.png$")


@dataclass(frozen=True)
class Upload:
    digest: str  # sha256 of the bytes: the key of its embedding
    name: str
    pixels: np.ndarray  # (S, S, 3) uint8: the painting as the model sees it
    embedding: np.ndarray


def png(pixels: np.ndarray, side: int | None = None) -> bytes:
    from PIL import Image

    im = Image.fromarray(pixels)
    if side and max(im.size) > side:
        im.thumbnail((side, side))
    buf = io.BytesIO()
    im.save(buf, format="PNG", compress_level=1)  # a few ms, not tens: pictures for a page on this machine
    return buf.getvalue()


class Service:
    def __init__(self, model: TrainedModel, device: torch.device | None, ws: Workspace | None = None):
        """``device``: the torch engine's (None when the model embeds through onnxruntime)."""
        self.model, self.device, self.ws = model, device, ws
        if model.runtime is None:
            model.network(device)  # built once here; the model keeps it for every request
        self._folder = tempfile.TemporaryDirectory(prefix="pbn-serve-")
        self._lock = threading.Lock()
        self._uploads: OrderedDict[str, Future] = OrderedDict()
        self._thumbs: OrderedDict[str, Future] = OrderedDict()
        self._derived: dict[str, Future] = {}
        self.embedded = 0  # uploads embedded so far (each distinct image once)
        self._closing = threading.Event()
        self._warming: threading.Thread | None = None

    # -- computed once, whoever asks first -------------------------------------------------------------------------
    def _once(self, table: OrderedDict | dict, key: str, compute):
        with self._lock:
            future = table.get(key)
            mine = future is None
            if mine:
                future = table[key] = Future()
                if isinstance(table, OrderedDict):
                    while len(table) > KEEP_UPLOADS:
                        table.popitem(last=False)
            elif isinstance(table, OrderedDict):
                table.move_to_end(key)
        if mine:
            try:
                future.set_result(compute())
            except BaseException as err:
                future.set_exception(err)
                with self._lock:
                    table.pop(key, None)  # a failure is answered, not remembered
        return future.result()

    def upload(self, data: bytes, name: str) -> Upload:
        """An uploaded image, read through the image door and embedded; one line of InputError otherwise."""
        if not data:
            raise InputError(f"{name}: empty file")
        if len(data) > MAX_UPLOAD_BYTES:
            raise InputError(f"{name}: {len(data) / 2**20:.0f} MB is more than the {MAX_UPLOAD_BYTES // 2**20} MB allowed")
        digest = hashlib.sha256(data).hexdigest()
        return replace(self._once(self._uploads, digest, lambda: self._embed(digest, data, name)), name=name)

    def _embed(self, digest: str, data: bytes, name: str) -> Upload:
        path = Path(self._folder.name) / digest
        path.write_bytes(data)
        try:
            pixels = self.model.read(path, name)
            embedding = self.model.embed_one(pixels, self.device)
        finally:
            path.unlink(missing_ok=True)
        with self._lock:
            self.embedded += 1
        return Upload(digest, name, pixels, embedding)

    def _workspace(self) -> Workspace:
        if self.ws is None:
            raise InputError("this page serves an exported model without a workspace: search and runs need `pbn serve -w WS`")
        return self.ws

    def paintings(self) -> Gallery:
        """The workspace's paintings with this model's embeddings (from its embedding store, as `pbn search` reads them)."""
        ws = self._workspace()
        return self._once(self._derived, "paintings",
                          lambda: gallery(ws, self.model, self.device, progress=_Stoppable(self._closing)))

    def warm(self) -> None:
        """Compute what the first search needs, in the background (a failure is reported by that search)."""
        if self.ws is not None:
            self._warming = threading.Thread(target=self._quietly, args=(self.paintings,), name="pbn-warm")
            self._warming.start()

    @staticmethod
    def _quietly(fn) -> None:
        try:
            fn()
        except Exception:
            pass

    # -- answers ---------------------------------------------------------------------------------------------------
    def compare(self, a: Upload, b: Upload) -> Verdict:
        return verdict(self.model, a.embedding, b.embedding)

    def search(self, query: Upload, k: int = 10, split: str = "all") -> SearchResult:
        g = self.paintings()
        return nearest(g, self.model, query.embedding, k=k, split=split,
                       copies=same_picture(g, query.pixels))

    def thumbnail(self, cache_row: int, side: int = 160) -> bytes:
        data = self._once(self._derived, "cache", lambda: CacheData(self._workspace()))
        if not 0 <= cache_row < len(data.images):
            raise InputError(f"no painting {cache_row} in the cache")
        return self._once(self._thumbs, f"{cache_row}:{side}", lambda: png(np.asarray(data.images[cache_row]), side))

    def val_distances(self) -> tuple[np.ndarray, np.ndarray]:
        """Distances and same-artist flags of the val split's pairs (a seeded sample of paintings when many)."""
        def compute():
            g = self.paintings()
            val = np.flatnonzero((g.table["split"] == "val").to_numpy())
            if len(val) > HISTOGRAM_PAINTINGS:
                val = np.sort(np.random.default_rng(0).choice(val, HISTOGRAM_PAINTINGS, replace=False))
            emb = g.emb[val].astype(np.float64)
            i, j = np.triu_indices(len(val), 1)
            artists = g.table["artist"].to_numpy()[val]
            # one matrix of distances (2000 paintings: 32 MB), never a copy of the embeddings per pair
            return metrics.distances(emb, emb)[i, j], artists[i] == artists[j]
        return self._once(self._derived, "val", compute)

    def histogram(self) -> tuple[bytes, dict] | None:
        """The val pairs' distances (same / different artists) and the threshold, drawn once: PNG and axes geometry.

        The page draws each pair's distance over it (``distance_histograms``
        says where the axes lie), so a compare costs no drawing.
        """
        if self.ws is None:
            return None

        def draw():
            d, same = self.val_distances()
            if len(d) == 0 or same.all() or not same.any():
                return None
            path = Path(self._folder.name) / "histogram.png"
            geometry = distance_histograms(d, same, float(self.model.calibration["threshold"]), path,
                                           title="the run's val pairs, and this pair",
                                           margins=dict(left=0.1, right=0.97, bottom=0.15, top=0.9))
            picture = path.read_bytes()
            path.unlink()
            return picture, geometry

        return self._once(self._derived, "histogram", draw)

    def attribute(self, query: Upload, among: str = "all", k: int = 5) -> Attribution:
        """Who painted the upload: the known hands of the workspace ranked, as `pbn attribute` ranks them."""
        check_request(self.model, among, k)
        hands = self._once(self._derived, f"hands:{among}", lambda: known_hands(self.paintings(), self.model, among))
        g = self.paintings()
        return attribute_one(g, hands, self.model, query.name, query.embedding, k,
                             same_picture(g, query.pixels))

    def evidence(self, a: tuple[bytes, str], b: tuple[bytes, str] | Path, title: str) -> dict:
        """The evidence of two paintings (uploads, or an upload and a workspace painting's file): its picture (PNG),
        its data (``Evidence.to_dict``) and each matched pair's two details (PNGs cut from the files)."""
        def draw() -> dict:
            with tempfile.TemporaryDirectory(dir=self._folder.name) as folder:
                paths = []
                for n, item in enumerate((a, b)):
                    if isinstance(item, Path):
                        paths.append((item, item.name))
                        continue
                    path = Path(folder) / f"{n}-{hashlib.sha256(item[0]).hexdigest()}"
                    path.write_bytes(item[0])
                    paths.append((path, item[1]))
                device = self.device if self.device is not None or self.model.tiles is not None else torch.device("cpu")
                first, second = (tiles(self.model, path, device, name) for path, name in paths)
                found = evidence(first, second, self.model)
                picture = Path(folder) / "evidence.png"
                data = evidence_sheet(found, picture, title)
                details = [(png(first.detail(i), DETAIL_SIDE), png(second.detail(j), DETAIL_SIDE))
                           for i, j, _ in found.strongest()]
                return {"picture": picture.read_bytes(), "data": data, "details": details}

        key = "evidence:" + hashlib.sha256(repr((_key(a), _key(b), title)).encode()).hexdigest()
        return self._once(self._thumbs, key, draw)

    def painting_file(self, image_id: str) -> Path:
        """The original file of a workspace painting (through the workspace's image folder)."""
        from pbn_cli.data.paths import painting_file, painting_files

        ws = self._workspace()
        return painting_file(ws, image_id, self._once(self._derived, "files", lambda: painting_files(ws)))

    # -- runs ------------------------------------------------------------------------------------------------------
    def runs(self) -> list[dict]:
        ws = self._workspace()
        out = []
        for run in reversed(trained_runs(ws)):
            row = summarize(run)
            row["reports"] = self.reports(run.name)
            row["serving"] = run.name == self.model.name
            out.append(row)
        return out

    def reports(self, run_name: str) -> list[str]:
        """The run's eval folders that hold a report (test, test-last, val, ...)."""
        folder = run_for(self._workspace(), run_name).folder / "eval"
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if (p / "report.md").is_file())

    def report_html(self, run_name: str, report: str) -> str:
        """An eval report as HTML, its pictures pointed at ``picture``'s address."""
        from markdown_it import MarkdownIt

        if report not in self.reports(run_name):
            raise InputError(f"run {run_name} has no report {report!r}")
        text = (run_for(self._workspace(), run_name).folder / "eval" / report / "report.md").read_text()
        text = re.sub(r"\]\(([A-Za-z0-9_.-]+\.png)\)", lambda m: f"](api/runs/{run_name}/reports/{report}/{m.group(1)})", text)
        return MarkdownIt("commonmark", {"html": False}).enable("table").render(text)

    def picture(self, run_name: str, report: str, name: str) -> Path:
        if report not in self.reports(run_name) or not _PICTURE.match(name):
            raise InputError(f"no picture {name!r} in run {run_name}'s report {report!r}")
        path = run_for(self._workspace(), run_name).folder / "eval" / report / name
        if not path.is_file():
            raise InputError(f"no picture {name!r} in run {run_name}'s report {report!r}")
        return path

    def describe(self) -> dict:
        return {"run": self.model.name, "checkpoint": self.model.which, "epoch": self.model.epoch,
                "threshold": float(self.model.calibration["threshold"]), "workspace": self.ws is not None,
                "config": self.model.config.to_dict()}

    def close(self) -> None:
        """Stop the background work at its next batch (no thread may be inside torch at exit), remove the temporary folder."""
        self._closing.set()
        if self._warming is not None:
            self._warming.join()
        self._folder.cleanup()


def _key(item) -> str:
    return str(item) if isinstance(item, Path) else hashlib.sha256(item[0]).hexdigest()


class Stopped(PbnError):
    """The server is stopping: work in progress is abandoned (nothing half-written: writes are atomic)."""


class _Stoppable(Progress):
    def __init__(self, closing: threading.Event):
        self.closing = closing

    def advance(self, n: int = 1) -> None:
        if self.closing.is_set():
            raise Stopped("the server is stopping")
