"""Contact sheets: thumbnails of cached paintings with their artists."""

from __future__ import annotations

import importlib.util
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pbn_cli.core.atomic import write_bytes


def font(size: int = 12) -> ImageFont.ImageFont:
    """DejaVu Sans (shipped with matplotlib) when available: it covers accented and Cyrillic names."""
    spec = importlib.util.find_spec("matplotlib")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        try:
            return ImageFont.truetype(str(Path(folder) / "mpl-data/fonts/ttf/DejaVuSans.ttf"), size)
        except OSError:
            pass
    return ImageFont.load_default()


def contact_sheet(
    images: Sequence[np.ndarray], labels: Sequence[str], columns: int = 8, thumb: int = 128
) -> Image.Image:
    """A grid of ``images`` (H, W, 3 uint8) with a caption under each."""
    rows = max(1, -(-len(images) // columns))
    caption = 18
    sheet = Image.new("RGB", (columns * (thumb + 4) + 4, rows * (thumb + caption + 4) + 4), "white")
    draw = ImageDraw.Draw(sheet)
    f = font(11)
    for k, (pixels, label) in enumerate(zip(images, labels)):
        x = 4 + (k % columns) * (thumb + 4)
        y = 4 + (k // columns) * (thumb + caption + 4)
        im = Image.fromarray(np.asarray(pixels))
        factor = im.width // thumb
        small = im.reduce(factor) if factor * thumb == im.width else im.resize((thumb, thumb), Image.Resampling.LANCZOS)
        sheet.paste(small, (x, y))
        text = label
        while draw.textlength(text, font=f) > thumb and len(text) > 2:
            text = text[:-2] + "…"
        draw.text((x, y + thumb + 2), text, fill="black", font=f)
    return sheet


def save_png(image: Image.Image, path: Path) -> None:
    buf = io.BytesIO()
    image.save(buf, "PNG", compress_level=1)
    write_bytes(path, buf.getvalue())
