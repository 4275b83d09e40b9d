"""Descriptors that learn nothing, so users see what training adds.

``color-hist``: a joint RGB colour histogram (4 bins a channel) plus
gradient statistics (a histogram of gradient orientations weighted by
magnitude, and the mean magnitude), each part L2-normalised.
"""

from __future__ import annotations

import numpy as np

BASELINES = ("color-hist",)


def color_histogram(images: np.ndarray, bins: int = 4) -> np.ndarray:
    """Joint RGB histograms of uint8 images (N, S, S, 3), as frequencies (N, bins**3)."""
    q = (images.astype(np.int32) * bins) // 256
    codes = (q[..., 0] * bins + q[..., 1]) * bins + q[..., 2]
    n = len(images)
    flat = codes.reshape(n, -1) + (np.arange(n) * bins**3)[:, None]
    hist = np.bincount(flat.ravel(), minlength=n * bins**3).reshape(n, bins**3).astype(np.float32)
    return hist / hist.sum(1, keepdims=True)


def gradient_statistics(images: np.ndarray, bins: int = 8) -> np.ndarray:
    """Orientation histograms of grey-level gradients weighted by magnitude, plus mean magnitude."""
    grey = images.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    gx = grey[:, 1:-1, 2:] - grey[:, 1:-1, :-2]
    gy = grey[:, 2:, 1:-1] - grey[:, :-2, 1:-1]
    mag = np.hypot(gx, gy)
    angle = (np.arctan2(gy, gx) % np.pi) / np.pi * bins
    idx = np.minimum(angle.astype(np.int32), bins - 1)
    n = len(images)
    flat = idx.reshape(n, -1) + (np.arange(n) * bins)[:, None]
    hist = np.bincount(flat.ravel(), weights=mag.reshape(n, -1).ravel(), minlength=n * bins).reshape(n, bins)
    hist /= np.maximum(hist.sum(1, keepdims=True), 1e-9)
    return np.concatenate([hist, mag.reshape(n, -1).mean(1, keepdims=True) / 255.0], 1).astype(np.float32)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-9)


def describe(images: np.ndarray, name: str = "color-hist") -> np.ndarray:
    """The baseline descriptor of each image, one row each (float32)."""
    if name != "color-hist":
        raise ValueError(f"unknown baseline {name!r}")
    return np.concatenate([_unit(color_histogram(images)), _unit(gradient_statistics(images))], 1)
