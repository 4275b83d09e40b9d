"""A synthetic painting set in the Kaggle layout, for tests, benchmarks and the demo.

Each artist is a *hand*: a stroke kind, stroke width and length, an
orientation habit, a density, edge softness, a surface texture and colour
habits (saturation and value, how far strokes stray from the painting's
palette). Composition and hue change from painting to painting, so only the
hand tells artists apart, not the colours.

``quirks`` adds what real dumps contain (see ``QUIRKS``), each a row of
``train_info.csv`` that a stage must reject or convert correctly.

Longer than most modules (about 350 lines) on purpose: the hand, the
painter and the set's writer are one recipe read top to bottom, and
splitting them would scatter the parameters a reader compares.
"""

from __future__ import annotations

import csv
import io
import math
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from pbn_cli.core.atomic import write_bytes
from pbn_cli.core.errors import InputError
from pbn_cli.core.parallel import chunks, default_workers, map_chunks, worker_pool
from pbn_cli.core.progress import SILENT, Progress

STROKES = ("line", "dab", "dot", "arc", "cross", "rect", "zigzag")
TEXTURES = ("none", "grain", "weave")
STYLES = ("Impressionism", "Realism", "Romanticism", "Expressionism", "Baroque", "Cubism")
GENRES = ("landscape", "portrait", "still life", "genre painting", "abstract")
_SYLLABLES = ("ma", "ri", "lo", "ven", "te", "sa", "kor", "di", "an", "bel", "ru", "mi", "sto", "gra", "pel", "ni")
_NON_ASCII = ("Zoë Ångström", "Александр Ивáнов", "葛飾 北斎", "Françoise Lévêque", "Jiří Dvořák", "Søren Æbelø")

#: quirk name -> what a stage must do with it
QUIRKS = {
    "title-artist": "clean drops single-painting 'artists' named like titles",
    "truncated-jpeg": "resize rejects a JPEG cut short",
    "not-an-image": "ingest rejects a text file named .jpg",
    "cmyk-jpeg": "resize converts a CMYK JPEG",
    "palette-png": "resize composites a palette PNG with transparency on white",
    "gray16-png": "resize scales a 16-bit greyscale PNG by 255/65535",
    "exif-rotated": "resize applies EXIF orientation 6",
    "bomb-png": "resize decodes a PNG over Pillow's decompression-bomb limit",
    "missing-file": "ingest rejects a row whose file is missing",
    "escaping-path": "ingest rejects a ../ filename",
    "duplicate-row": "ingest rejects a repeated filename row",
    "duplicate-file": "clean keeps one of two identical files of one artist",
    "conflicting-duplicate": "clean drops identical files given to two artists",
}


@dataclass
class Hand:
    """An artist's habits, in units of the painting's shorter side."""

    stroke: str
    width: float
    length: float
    angle: float
    angle_spread: float
    density: float
    softness: float
    texture: str
    texture_amount: float
    texture_period: float
    saturation: float
    value: float
    palette_spread: float
    jitter: float


def make_hand(rng: np.random.Generator) -> Hand:
    stroke = STROKES[rng.integers(len(STROKES))]
    width = float(rng.uniform(0.017, 0.04) if stroke == "dot" else rng.uniform(0.008, 0.035))
    length = width if stroke == "dot" else max(float(rng.uniform(0.02, 0.14)), 3e-4 / width)
    return Hand(
        stroke=stroke,
        width=width,
        length=length,
        angle=float(rng.uniform(0, math.pi)),
        angle_spread=float(rng.choice([0.08, 0.3, 0.8, math.pi])),
        density=float(rng.uniform(0.5, 2.0)),
        softness=float(rng.choice([0.0, 0.0015, 0.004])),
        texture=TEXTURES[rng.integers(len(TEXTURES))],
        texture_amount=float(rng.uniform(6, 22)),
        texture_period=float(rng.uniform(0.006, 0.02)),
        saturation=float(rng.uniform(0.4, 0.7)),
        value=float(rng.uniform(0.5, 0.75)),
        palette_spread=float(rng.uniform(0.05, 0.2)),
        jitter=float(rng.uniform(0.03, 0.2)),
    )


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV (all in [0, 1]) to RGB uint8, shape (..., 3)."""
    h = (h % 1.0) * 6
    i = np.floor(h).astype(int) % 6
    f = h - np.floor(h)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    table = np.stack(
        [np.stack(c, -1) for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))]
    )
    rgb = np.take_along_axis(table, i[None, ..., None].repeat(3, -1), 0)[0]
    return np.clip(rgb * 255 + 0.5, 0, 255).astype(np.uint8)


def _stroke_shapes(hand: Hand, xy: np.ndarray, ang: np.ndarray, w: float, ln: float, rng) -> list:
    """Point lists for each stroke of the hand's kind (polylines or polygons)."""
    c, s = np.cos(ang)[:, None], np.sin(ang)[:, None]
    if hand.stroke in ("line", "cross"):
        t = np.array([-0.5, 0.5]) * ln
        pts = [np.stack([xy[:, 0:1] + c * t, xy[:, 1:2] + s * t], -1)]
        if hand.stroke == "cross":
            pts.append(np.stack([xy[:, 0:1] - s * t * 0.6, xy[:, 1:2] + c * t * 0.6], -1))
        return pts
    if hand.stroke == "arc":
        t = np.linspace(-0.5, 0.5, 5) * ln
        bend = (t**2 - (ln / 2) ** 2) / (ln * 0.8)
        return [np.stack([xy[:, 0:1] + c * t - s * bend, xy[:, 1:2] + s * t + c * bend], -1)]
    if hand.stroke == "zigzag":
        t = np.linspace(-0.5, 0.5, 5) * ln
        off = np.array([0, 1, -1, 1, 0]) * w * 1.2
        return [np.stack([xy[:, 0:1] + c * t - s * off, xy[:, 1:2] + s * t + c * off], -1)]
    # closed shapes: dab (ellipse), dot (circle), rect (flat brush block)
    k = np.linspace(0, 2 * math.pi, 9)[:-1] if hand.stroke != "rect" else np.array([0.25, 0.75, 1.25, 1.75]) * math.pi
    rx, ry = (ln / 2, w / 2) if hand.stroke != "dot" else (w / 2, w / 2)
    if hand.stroke == "rect":
        rx, ry = ln / 2 * math.sqrt(2), w / 2 * math.sqrt(2)
    ex, ey = rx * np.cos(k), ry * np.sin(k)
    return [np.stack([xy[:, 0:1] + c * ex - s * ey, xy[:, 1:2] + s * ex + c * ey], -1)]


def paint(hand: Hand, width: int, height: int, rng: np.random.Generator) -> Image.Image:
    """One painting by ``hand``: a composition of this painting's own hues, then strokes."""
    short = min(width, height)
    base = rng.uniform()
    # this painting's mood: colour habits vary around the artist's own
    saturation = float(np.clip(hand.saturation + rng.normal(0, 0.15), 0.1, 0.95))
    value = float(np.clip(hand.value + rng.normal(0, 0.12), 0.2, 0.95))
    spread = hand.palette_spread * float(rng.uniform(0.5, 2.0))
    gh, gw = rng.integers(2, 5), rng.integers(2, 5)
    hue = base + rng.normal(0, spread, (gh, gw))
    sat = np.clip(rng.normal(saturation, 0.12, (gh, gw)), 0, 1)
    val = np.clip(rng.normal(value, 0.15, (gh, gw)), 0.05, 1)
    field = Image.fromarray(_hsv_to_rgb(hue, sat, val)).resize((width, height), Image.Resampling.BICUBIC)
    canvas = field.copy()
    draw = ImageDraw.Draw(canvas)
    w, ln = max(1.0, hand.width * short), max(1.0, hand.length * short)
    n = int(min(12000, hand.density * width * height / (w * max(ln, w))))
    xy = rng.uniform([0, 0], [width, height], (n, 2))
    ang = hand.angle + rng.uniform(-hand.angle_spread, hand.angle_spread, n) / 2
    under = np.asarray(field)[xy[:, 1].astype(int), xy[:, 0].astype(int)].astype(np.float64) / 255
    mx = under.max(1)
    hsv_h = base + rng.normal(0, spread, n)
    hsv_s = np.clip(rng.normal(saturation, hand.jitter, n), 0, 1)
    hsv_v = np.clip(0.5 * mx + 0.5 * rng.normal(value, hand.jitter, n), 0, 1)
    colours = _hsv_to_rgb(hsv_h, hsv_s, hsv_v)
    lw = max(1, int(round(w)))
    for shape_set in _stroke_shapes(hand, xy, ang, w, ln, rng):
        closed = hand.stroke in ("dab", "dot", "rect")
        for pts, col in zip(shape_set, colours):
            flat = [tuple(p) for p in pts]
            if closed:
                draw.polygon(flat, fill=tuple(int(v) for v in col))
            else:
                draw.line(flat, fill=tuple(int(v) for v in col), width=lw, joint="curve")
    if hand.softness:
        canvas = canvas.filter(ImageFilter.GaussianBlur(hand.softness * short))
    if hand.texture != "none":
        a = np.asarray(canvas, dtype=np.int16)
        if hand.texture == "grain":
            noise = rng.normal(0, hand.texture_amount, (height, width, 1))
        else:
            period = max(2.0, hand.texture_period * short)
            yy, xx = np.mgrid[0:height, 0:width]
            noise = (np.sin(2 * math.pi * xx / period) * np.sin(2 * math.pi * yy / period))[..., None] * hand.texture_amount
        canvas = Image.fromarray(np.clip(a + noise, 0, 255).astype(np.uint8))
    return canvas


@dataclass
class _Job:
    path: str
    hand: dict
    seed: tuple
    width: int
    height: int
    fmt: str


def _render(jobs: list[_Job]) -> int:
    for job in jobs:
        rng = np.random.default_rng(list(job.seed))
        im = paint(Hand(**job.hand), job.width, job.height, rng)
        buf = io.BytesIO()
        if job.fmt == "JPEG":
            im.save(buf, "JPEG", quality=90)
        else:
            im.save(buf, "PNG", compress_level=1)
        write_bytes(Path(job.path), buf.getvalue())
    return len(jobs)


def _artist_names(n: int, rng: np.random.Generator) -> list[str]:
    names: list[str] = []
    seen = set()
    for i in range(n):
        if i % 7 == 3 and i // 7 < len(_NON_ASCII):
            name = _NON_ASCII[i // 7]
        else:
            while True:
                first = "".join(rng.choice(_SYLLABLES, 2)).capitalize()
                last = "".join(rng.choice(_SYLLABLES, 3)).capitalize()
                name = f"{first} {last}"
                if name not in seen:
                    break
        seen.add(name)
        names.append(name)
    return names


def _title(rng: np.random.Generator, k: int) -> str:
    kind = rng.integers(4)
    if kind == 0:
        return f"Study, No. {k}"
    if kind == 1:
        return f'The "{rng.choice(["Harbour", "Garden", "Window"])}" at Dusk'
    if kind == 2:
        return f"Composition {k}"
    return f"Untitled ({rng.choice(['blue', 'red', 'ochre'])}, {1850 + k % 100})"


def synth(
    out: Path,
    *,
    artists: int = 40,
    paintings: int = 12,
    seed: int = 0,
    quirks: bool = False,
    min_size: int = 300,
    max_size: int = 1600,
    workers: int | None = None,
    progress: Progress = SILENT,
) -> dict:
    """Write ``out/train/`` and ``out/train_info.csv``; returns counts for the summary."""
    if artists < 1 or paintings < 1:
        raise InputError("--artists and --paintings must be at least 1")
    if not 16 <= min_size <= max_size:
        raise InputError("sizes must satisfy 16 <= --min-size <= --max-size")
    out = Path(out)
    images = out / "train"
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = _artist_names(artists, rng)
    hands = [make_hand(np.random.default_rng([seed, 1, a])) for a in range(artists)]
    rows: list[dict] = []
    jobs: list[_Job] = []
    k = 0
    for a, (name, hand) in enumerate(zip(names, hands)):
        for p in range(paintings):
            prng = np.random.default_rng([seed, 2, a, p])
            long_side = int(prng.integers(min_size, max_size + 1))
            aspect = float(prng.uniform(1.0, 1.6))
            short_side = max(min_size // 2, int(long_side / aspect))
            w, h = (long_side, short_side) if prng.uniform() < 0.5 else (short_side, long_side)
            fmt = "PNG" if prng.uniform() < 0.2 else "JPEG"
            filename = f"{k:06d}.{'png' if fmt == 'PNG' else 'jpg'}"
            jobs.append(_Job(str(images / filename), asdict(hand), (seed, 3, a, p), w, h, fmt))
            rows.append(_row(filename, name, prng, k))
            k += 1
    n_workers = workers or default_workers()
    with worker_pool(n_workers if len(jobs) > 8 else 1) as pool:
        progress.start(len(jobs))
        map_chunks(pool, _render, chunks(jobs, 4), lambda i, n: progress.advance(n))
    if quirks:
        rows += _add_quirks(images, rows, names, hands, seed)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, ["filename", "artist", "title", "style", "genre", "date"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_bytes(out / "train_info.csv", buf.getvalue().encode("utf-8"))
    return {"artists": artists, "paintings": len(jobs), "rows": len(rows), "images": str(images)}


def _row(filename: str, artist: str, rng: np.random.Generator, k: int) -> dict:
    return {
        "filename": filename,
        "artist": artist,
        "title": _title(rng, k),
        "style": STYLES[k % len(STYLES)],
        "genre": GENRES[k % len(GENRES)],
        "date": str(1800 + k % 200),
    }


def _save(path: Path, im: Image.Image, fmt: str, **kw) -> None:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    write_bytes(path, buf.getvalue())


def _add_quirks(images: Path, rows: list[dict], names: list[str], hands: list[Hand], seed: int) -> list[dict]:
    """The odd files real dumps contain, each as a CSV row (see ``QUIRKS``)."""
    rng = np.random.default_rng([seed, 9])
    extra: list[dict] = []

    def painting(a: int, w: int = 480, h: int = 360) -> Image.Image:
        return paint(hands[a], w, h, np.random.default_rng([seed, 4, a, len(extra)]))

    def add(filename: str, artist: str) -> None:
        extra.append(_row(filename, artist, rng, len(rows) + len(extra)))

    a0, a1 = 0, 1 % len(names)
    for title in ("Still Life with Apples", "Portrait of a Lady, 1650"):
        fn = f"q_title_{len(extra)}.jpg"
        _save(images / fn, painting(a0), "JPEG", quality=90)
        add(fn, title)
    buf = io.BytesIO()
    painting(a0).save(buf, "JPEG", quality=90)
    write_bytes(images / "q_truncated.jpg", buf.getvalue()[: len(buf.getvalue()) * 6 // 10])
    add("q_truncated.jpg", names[a0])
    write_bytes(images / "q_not_an_image.jpg", b"This is a README, not a painting.\n" * 20)
    add("q_not_an_image.jpg", names[a0])
    _save(images / "q_cmyk.jpg", painting(a0).convert("CMYK"), "JPEG", quality=92)
    add("q_cmyk.jpg", names[a0])
    pal = painting(a1).convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    _save(images / "q_palette.png", pal, "PNG", transparency=0)
    add("q_palette.png", names[a1])
    grey = np.asarray(painting(a1).convert("L"), dtype=np.uint16) * 257
    _save(images / "q_gray16.png", Image.fromarray(grey), "PNG")
    add("q_gray16.png", names[a1])
    upright = painting(a1, 300, 480)  # portrait; stored on its side, EXIF says rotate
    exif = Image.Exif()
    exif[0x0112] = 6
    _save(images / "q_exif6.jpg", upright.transpose(Image.Transpose.ROTATE_90), "JPEG", quality=92, exif=exif)
    add("q_exif6.jpg", names[a1])
    side = 9500  # 90.25 MP: just over Pillow's 89.5 MP bomb limit
    big = painting(a0, 950, 950).resize((side, side), Image.Resampling.NEAREST)
    _save(images / "q_bomb.png", big, "PNG", compress_level=1)
    add("q_bomb.png", names[a0])
    add("q_missing.jpg", names[a0])
    add("../q_escape.jpg", names[a0])
    extra.append(dict(rows[0]))  # the same filename listed twice
    shutil.copyfile(images / rows[1]["filename"], images / "q_dup_same.jpg" if rows[1]["filename"].endswith("jpg") else images / "q_dup_same.png")
    add("q_dup_same.jpg" if rows[1]["filename"].endswith("jpg") else "q_dup_same.png", rows[1]["artist"])
    conflict = next(r for r in rows if r["artist"] != rows[2]["artist"])
    ext = os.path.splitext(rows[2]["filename"])[1]
    shutil.copyfile(images / rows[2]["filename"], images / f"q_dup_other{ext}")
    add(f"q_dup_other{ext}", conflict["artist"])
    return extra
