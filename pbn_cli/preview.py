"""Contact sheets: thumbnails of cached paintings with their artists."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pbn_cli.atomic import write_bytes


def font(size: int = 12) -> ImageFont.ImageFont:
    """DejaVu Sans (shipped with matplotlib) when available: it covers accented and Cyrillic names."""
    try:
        import matplotlib

        return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts/ttf/DejaVuSans.ttf"), size)
    except (ImportError, OSError):
        return ImageFont.load_default()


def contact_sheet(
    images: Sequence[np.ndarray], labels: Sequence[str], columns: int = 8, thumb: int = 160
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
        sheet.paste(Image.fromarray(np.asarray(pixels)).resize((thumb, thumb), Image.Resampling.LANCZOS), (x, y))
        text = label if draw.textlength(label, font=f) <= thumb else label[: max(1, thumb // 7)] + "…"
        draw.text((x, y + thumb + 2), text, fill="black", font=f)
    return sheet


def save_png(image: Image.Image, path: Path) -> None:
    buf = io.BytesIO()
    image.save(buf, "PNG", optimize=False)
    write_bytes(path, buf.getvalue())
