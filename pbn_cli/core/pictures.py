"""Pictures: matplotlib on the Agg backend, PNGs written atomically, labels kept short."""

from __future__ import annotations

import io
from pathlib import Path

from pbn_cli.core.atomic import write_bytes


def pyplot():
    """matplotlib.pyplot on Agg, with fonts that cover the artists' names where installed."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # CJK and other scripts render where such fonts are installed; elsewhere a box, not a warning
    matplotlib.rcParams["font.sans-serif"] = ["DejaVu Sans", "Noto Sans CJK JP", "Noto Sans CJK SC", "WenQuanYi Zen Hei", "Arial Unicode MS"]
    warnings.filterwarnings("ignore", message="Glyph .* missing from font")
    return plt


def save_figure(fig, path: Path, tight: bool = True) -> None:
    """The figure as a PNG (cropped to what is drawn unless ``tight`` is False), written atomically."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight" if tight else None)
    pyplot().close(fig)
    write_bytes(path, buf.getvalue())


def short(name: str, n: int = 24) -> str:
    return name if len(name) <= n else name[: n - 1] + "…"
