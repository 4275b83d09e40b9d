"""The one door through which every image enters pbn.

``read_header`` reads only what a file says about itself (ingest).
``load_rgb`` decodes any supported image into a square RGB uint8 array
(resize, compare, search, predict), so a painting gives the same pixels
whichever command reads it:

- EXIF orientation applied;
- CMYK, palette (transparency included), LA/RGBA composited on white;
- 16-bit images scaled by 255/65535, 32-bit ones by their own range;
- JPEGs at least twice the target decoded at reduced scale (``draft``),
  other formats reduced before the final Lanczos resize;
- images past Pillow's decompression-bomb limit: JPEGs decode at reduced
  scale anyway; others are allowed up to ``max_pixels`` and decoded one at
  a time across workers (``big_image_lock``); beyond that they are refused.
"""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from pbn_cli.core.errors import InputError

ImageFile.LOAD_TRUNCATED_IMAGES = False
#: Pillow's own bomb limit; we check sizes ourselves against it
PILLOW_LIMIT = Image.MAX_IMAGE_PIXELS or 89_478_485
DEFAULT_MAX_PIXELS = 500_000_000
FITS = ("crop", "pad")

_big_image_lock = None


class ImageReadError(Exception):
    """A file that cannot become a painting; ``str()`` is the reason a person reads."""


def new_big_image_lock():
    """A lock worker processes can share (``set_big_image_lock``), or None where processes are not forked."""
    import multiprocessing as mp

    return mp.get_context("fork").Lock() if "fork" in mp.get_all_start_methods() else None


def set_big_image_lock(lock) -> None:
    """Share one lock across workers so huge non-JPEG images decode one at a time."""
    global _big_image_lock
    _big_image_lock = lock


_bomb_check_lock = threading.Lock()
_bomb_check_off = 0  # decodes in progress with Pillow's check off
_bomb_check_saved = None


@contextlib.contextmanager
def _no_bomb_check():
    """Pillow's global bomb check off while we decode (we check sizes ourselves).

    Counted under a lock, so threads decoding at once (`pbn serve`) put the
    global back as they found it; a plain save-and-restore per thread could
    restore another thread's None and leave the check off for good.
    """
    global _bomb_check_off, _bomb_check_saved
    with _bomb_check_lock:
        if _bomb_check_off == 0:
            _bomb_check_saved = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
        _bomb_check_off += 1
    try:
        yield
    finally:
        with _bomb_check_lock:
            _bomb_check_off -= 1
            if _bomb_check_off == 0:
                Image.MAX_IMAGE_PIXELS = _bomb_check_saved


def _reason(err: Exception) -> str:
    if isinstance(err, UnidentifiedImageError):
        return "not an image: cannot identify image file"
    text = str(err).split(" '/")[0]
    if "truncated" in text.lower() or isinstance(err, SyntaxError):
        return f"truncated or corrupt image: {text}"
    return f"unreadable image: {text}"


@dataclass
class Header:
    format: str
    width: int
    height: int
    mode: str


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_JPEG_MODES = {1: "L", 3: "RGB", 4: "CMYK"}
_PNG_MODES = {
    (1, 0): "1", (2, 0): "L", (4, 0): "L", (8, 0): "L", (16, 0): "I;16",
    (8, 2): "RGB", (16, 2): "RGB", (1, 3): "P", (2, 3): "P", (4, 3): "P", (8, 3): "P",
    (8, 4): "LA", (16, 4): "RGBA", (8, 6): "RGBA", (16, 6): "RGBA",
}


def _fast_header(head: bytes) -> Header | None:
    """JPEG and PNG headers parsed directly (Pillow's parser is much slower); None otherwise."""
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR" and len(head) >= 26:
        mode = _PNG_MODES.get((head[24], head[25]))
        if mode is None:
            return None
        return Header("PNG", int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big"), mode)
    if head[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 9 < len(head):
        if head[i] != 0xFF:
            return None
        marker = head[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _SOF:
            mode = _JPEG_MODES.get(head[i + 9])
            h, w = int.from_bytes(head[i + 5 : i + 7], "big"), int.from_bytes(head[i + 7 : i + 9], "big")
            return Header("JPEG", w, h, mode) if mode and w and h else None
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        i += 2 + int.from_bytes(head[i + 2 : i + 4], "big")
    return None


def read_header(path: str, nbytes: int | None = None) -> Header:
    """Format, size and mode of the image at ``path`` (of ``nbytes`` bytes), reading its header only."""
    if (os.path.getsize(path) if nbytes is None else nbytes) == 0:
        raise ImageReadError("empty file (0 bytes)")
    with open(path, "rb") as f:
        fast = _fast_header(f.read(65536))
    if fast is not None:
        return fast
    try:
        with _no_bomb_check(), Image.open(path) as im:
            return Header(im.format or "", im.width, im.height, im.mode)
    except Exception as err:  # Pillow raises many kinds for bad files
        raise ImageReadError(_reason(err)) from None


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode to RGB: alpha on white, high bit depths scaled, not clipped."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        mode = im.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        im = im.convert("RGBA")
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, im).convert("RGB")
    if mode.startswith("I;16") or mode in ("I", "F"):
        a = np.asarray(im, dtype=np.float64)
        if mode.startswith("I;16"):
            a = a * (255.0 / 65535.0)
        else:
            lo, hi = float(a.min()), float(a.max())
            a = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
        return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L").convert("RGB")
    return im.convert("RGB")


def _fit_box(w: int, h: int, size: int, fit: str) -> tuple[tuple[int, int], tuple[float, float, float, float]]:
    """Output size and source box for a centre crop (``crop``) or a letterbox (``pad``)."""
    if fit == "crop":
        side = min(w, h)
        left, top = (w - side) / 2, (h - side) / 2
        return (size, size), (left, top, left + side, top + side)
    scale = size / max(w, h)
    return (max(1, round(w * scale)), max(1, round(h * scale))), (0, 0, w, h)


def _decode(path: str, size: int, fit: str, max_pixels: int) -> Image.Image:
    im = Image.open(path)
    w, h = im.size
    if im.format == "JPEG":
        # scale so that the side we keep is still at least `size`
        keep = min(w, h) if fit == "crop" else max(w, h)
        scale = size / keep
        mode = "RGB" if im.mode in ("RGB", "YCbCr") else None
        im.draft(mode, (max(1, int(w * scale + 0.999)), max(1, int(h * scale + 0.999))))
    elif w * h > max_pixels:
        raise ImageReadError(
            f"image too large: {w}x{h} is {w * h / 1e6:.0f} megapixels, "
            f"over --max-pixels {max_pixels / 1e6:.0f}M"
        )
    im.load()
    return im


def _finish(im: Image.Image, size: int, fit: str) -> np.ndarray:
    im = ImageOps.exif_transpose(im)
    if im.mode != "L":  # grey stays one channel until it is small: a third of the memory
        im = _to_rgb(im)
    out_size, box = _fit_box(im.width, im.height, size, fit)
    im = im.resize(out_size, Image.Resampling.LANCZOS, box=box, reducing_gap=3.0)
    if im.mode != "RGB":
        im = im.convert("RGB")
    if fit == "pad":
        canvas = Image.new("RGB", (size, size), (0, 0, 0))
        canvas.paste(im, ((size - im.width) // 2, (size - im.height) // 2))
        im = canvas
    return np.asarray(im, dtype=np.uint8)


@dataclass(frozen=True)
class Placement:
    """Where a square read by ``load_rgb`` (side ``side``, ``fit``) lies in its file, upright (EXIF applied):
    ``box`` maps a square's region to the file's own pixels."""

    width: int
    height: int
    side: int
    fit: str

    def box(self, top: float, left: float, size: float) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) in the upright file's pixels of the square's region (``top``, ``left``, ``size``),
        clipped to the file (a padded square's border lies outside it)."""
        w, h = self.width, self.height
        if self.fit == "crop":
            scale = min(w, h) / self.side
            x0, y0 = (w - min(w, h)) / 2 + left * scale, (h - min(w, h)) / 2 + top * scale
        else:
            scale = max(w, h) / self.side
            inner_w, inner_h = max(1, round(w / scale)), max(1, round(h / scale))
            x0, y0 = (left - (self.side - inner_w) // 2) * scale, (top - (self.side - inner_h) // 2) * scale
        x1, y1 = x0 + size * scale, y0 + size * scale
        return (int(np.clip(round(x0), 0, w)), int(np.clip(round(y0), 0, h)), int(np.clip(round(x1), 0, w)),
                int(np.clip(round(y1), 0, h)))


def upright_size(path: str) -> tuple[int, int]:
    """(width, height) of the image at ``path`` upright (EXIF orientations 5-8 swap them), from its header."""
    try:
        with _no_bomb_check(), Image.open(path) as im:
            return im.size[::-1] if im.getexif().get(0x0112, 1) in (5, 6, 7, 8) else im.size
    except FileNotFoundError:
        raise ImageReadError("file missing") from None
    except Exception as err:  # Pillow raises many kinds for bad files
        raise ImageReadError(_reason(err)) from None


def read_upright(path: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """The whole file at its own resolution, upright (EXIF applied), as (H, W, 3) uint8; ``ImageReadError`` else."""
    try:
        with _no_bomb_check(), Image.open(path) as im:
            if im.width * im.height > max_pixels:
                raise ImageReadError(f"image too large: {im.width}x{im.height} is over --max-pixels "
                                     f"{max_pixels / 1e6:.0f}M")
            im.load()
            return np.asarray(_to_rgb(ImageOps.exif_transpose(im)).convert("RGB"), dtype=np.uint8)
    except ImageReadError:
        raise
    except FileNotFoundError:
        raise ImageReadError("file missing") from None
    except Exception as err:  # Pillow raises many kinds for bad files
        raise ImageReadError(_reason(err)) from None


def resized(pixels: np.ndarray, size: int) -> np.ndarray:
    """A square (S, S, 3) uint8 painting brought to (size, size, 3) as the image door brings a file (Lanczos)."""
    if pixels.shape[0] == size:
        return pixels
    return np.asarray(Image.fromarray(pixels).resize((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0))


def load_rgb(
    path: str, size: int = 256, fit: str = "crop", max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """The painting at ``path`` as a (size, size, 3) uint8 array, or ``ImageReadError``."""
    try:
        if os.path.getsize(path) == 0:
            raise ImageReadError("empty file (0 bytes)")
        with _no_bomb_check():
            with Image.open(path) as probe:
                big = probe.format != "JPEG" and probe.width * probe.height > PILLOW_LIMIT
            lock = _big_image_lock if big and _big_image_lock is not None else contextlib.nullcontext()
            with lock:
                im = _decode(path, size, fit, max_pixels)
                try:
                    return _finish(im, size, fit)
                finally:
                    im.close()
    except ImageReadError:
        raise
    except FileNotFoundError:
        raise ImageReadError("file missing") from None
    except MemoryError:
        raise ImageReadError("image too large to decode in memory") from None
    except Exception as err:  # Pillow raises many kinds for bad files
        raise ImageReadError(_reason(err)) from None


def is_file(image) -> bool:
    """Whether ``image`` names a file (a path), rather than holding a picture in memory."""
    return isinstance(image, (str, os.PathLike))


def image_name(image, n: int = 0) -> str:
    """How an answer names an image: a file by its name, a picture in memory by its place (image 1, image 2...)."""
    return os.path.basename(os.fspath(image)) if is_file(image) else f"image {n + 1}"


def read_image(image, size: int, fit: str, name: str | None = None) -> np.ndarray:
    """Any image a user gives, a path, a PIL image or a uint8 array, as a model sees it (``read_painting`` or
    ``picture``): (size, size, 3) uint8; ``InputError`` in one line when it cannot be."""
    if is_file(image):
        return read_painting(image, size, fit, name)
    return picture(image, size, fit, name or image_name(image))


def picture(image, size: int, fit: str, name: str = "the image") -> np.ndarray:
    """A painting already in memory, a PIL image or an (H, W[, 3 or 4]) uint8 array, as ``load_rgb`` brings a file:
    (size, size, 3) uint8, the same pixels as that image saved losslessly and read; ``InputError`` in one line else."""
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
            raise InputError(f"{name}: an array must be (height, width), (height, width, 3) or (height, width, 4) "
                             f"uint8, got {image.shape} {image.dtype}")
        image = Image.fromarray(image)
    if not isinstance(image, Image.Image):
        raise InputError(f"{name}: give a path, a PIL image or a uint8 array, not {type(image).__name__}")
    if min(image.size) < 1:
        raise InputError(f"{name} is empty ({image.width}x{image.height})")
    return _finish(image, size, fit)


def read_painting(path, size: int, fit: str, name: str | None = None) -> np.ndarray:
    """A painting a user names, as a model sees it (``load_rgb``); ``InputError`` in one line when it cannot be read."""
    if not os.path.isfile(path):
        raise InputError(f"{name or path} does not exist")
    try:
        return load_rgb(str(path), size, fit)
    except ImageReadError as err:
        raise InputError(f"cannot read {name or path}: {err}") from None
