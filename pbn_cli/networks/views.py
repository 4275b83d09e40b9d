"""Augmentation of a whole batch on the device, with per-sample random parameters.

One affine resampling (``affine_grid`` + ``grid_sample``) does the crop,
shift, zoom, rotation and flips of every image at once. Parameters are drawn
on the CPU from a seeded generator, so a batch is augmented the same way on
any device and a resumed run repeats it exactly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def to_float(x: torch.Tensor) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float in [0, 1] (the network normalises as its weights expect)."""
    return x.permute(0, 3, 1, 2).float().div_(255.0)


def random_views(
    x: torch.Tensor,
    size: int,
    view: str,
    generator: torch.Generator,
    hflip: float = 0.0,
    vflip: float = 0.0,
    rotation: float = 0.0,
    translate: float = 0.0,
    zoom: float = 1.0,
) -> torch.Tensor:
    """Augmented (B, 3, size, size) views of uint8 (B, S, S, 3) images.

    ``view="crop"``: a random size x size window at the cache's resolution;
    ``view="resize"``: the whole painting, shrunk (antialiased) to ``size``;
    ``view="mixed"``: each painting one or the other, with equal chance.
    """
    if view == "mixed":
        whole = torch.rand(x.shape[0], generator=generator) < 0.5
        args = (generator, hflip, vflip, rotation, translate, zoom)
        crops, shrunk = random_views(x, size, "crop", *args), random_views(x, size, "resize", *args)
        return torch.where(whole.to(crops.device)[:, None, None, None], shrunk, crops)
    b, s = x.shape[0], x.shape[1]
    img = to_float(x)
    if view == "resize" and size != s:
        img = F.interpolate(img, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        s = size
    frac = size / s  # share of the source the window covers
    u = torch.rand(b, 7, generator=generator)
    angle = torch.deg2rad(u[:, 0] * rotation)
    sx = torch.where(u[:, 1] < hflip, -1.0, 1.0)
    sy = torch.where(u[:, 2] < vflip, -1.0, 1.0)
    room = 1.0 - frac  # crop offsets keep the window inside the painting
    tx = (u[:, 3] * 2 - 1) * room + (u[:, 5] * 2 - 1) * translate * 2
    ty = (u[:, 4] * 2 - 1) * room + (u[:, 6] * 2 - 1) * translate * 2
    scale = frac / zoom
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack(
        [
            torch.stack([cos * scale * sx, -sin * scale * sy, tx], 1),
            torch.stack([sin * scale * sx, cos * scale * sy, ty], 1),
        ],
        1,
    ).to(img.device)
    if rotation == 0 and hflip == 0 and vflip == 0 and translate == 0 and zoom == 1 and view == "crop":
        # pure crops: slice instead of resampling (exact pixels, and faster)
        off_x = ((tx + room) / 2 * s).round().long().clamp(0, s - size).tolist()
        off_y = ((ty + room) / 2 * s).round().long().clamp(0, s - size).tolist()
        return torch.stack([img[i, :, oy : oy + size, ox : ox + size] for i, (ox, oy) in enumerate(zip(off_x, off_y))])
    grid = F.affine_grid(theta, [b, 3, size, size], align_corners=False)
    return F.grid_sample(img, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def grid_views(x: torch.Tensor, size: int, view: str) -> torch.Tensor:
    """Fixed views for embedding: the whole painting (resize), a grid of crops covering it (crop), or both (mixed).

    Returns (B * V, 3, size, size), V views per painting in a fixed order.
    """
    if view == "mixed":
        if size >= x.shape[1]:
            return grid_views(x, size, "resize")
        crops = grid_views(x, size, "crop").reshape(x.shape[0], -1, 3, size, size)
        whole = grid_views(x, size, "resize")[:, None]
        return torch.cat([crops, whole], 1).reshape(-1, 3, size, size)
    img = to_float(x)
    s = img.shape[-1]
    if view == "resize" or size >= s:
        if size != s:
            img = F.interpolate(img, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        return img
    n = math.ceil(s / size)
    starts = [round(i * (s - size) / (n - 1)) for i in range(n)] if n > 1 else [0]
    crops = [img[:, :, y : y + size, x : x + size] for y in starts for x in starts]
    return torch.stack(crops, 1).reshape(-1, 3, size, size)


def views_per_painting(cache_size: int, size: int, view: str) -> int:
    if view == "resize" or size >= cache_size:
        return 1
    return math.ceil(cache_size / size) ** 2 + (view == "mixed")
