"""Perceptual hashes of cached paintings and groups of near-identical ones.

A 64-bit DCT hash (pHash) of each 256-px painting survives re-encoding and
rescaling, which exact file hashes miss. Pairs within ``max_distance`` bits
are found without comparing all pairs: split the hash into
``max_distance + 1`` blocks; two hashes that close agree exactly on at least
one block (pigeonhole), so only paintings sharing a block value are compared.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

_N = 32
_DCT = np.array(
    [[math.cos(math.pi * (2 * x + 1) * u / (2 * _N)) for x in range(_N)] for u in range(_N)]
)
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
NEAR_BITS = 4  # hashes this close (of 64 bits) are the same painting: re-encoded, rescaled, another file


def phash(pixels: np.ndarray) -> int:
    """The 64-bit perceptual hash of an (H, W, 3) uint8 painting, as a signed int64 value."""
    grey = Image.fromarray(pixels).convert("L").resize((_N, _N), Image.Resampling.BOX)
    coeffs = _DCT @ np.asarray(grey, dtype=np.float64) @ _DCT.T
    low = coeffs[:8, :8].ravel()
    bits = low > np.median(low[1:])
    value = int("".join("1" if b else "0" for b in bits), 2)
    return value - (1 << 64) if value >= 1 << 63 else value


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bit differences between two arrays of int64 hashes, elementwise."""
    x = np.bitwise_xor(a.astype(np.int64), b.astype(np.int64)).view(np.uint8).reshape(-1, 8)
    return _POPCOUNT[x].sum(axis=1)


def near_duplicate_groups(hashes: np.ndarray, max_distance: int = NEAR_BITS, max_bucket: int = 5000) -> np.ndarray:
    """A group number per painting (-1 when it has no near-duplicate)."""
    n = len(hashes)
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    h = hashes.astype(np.int64).view(np.uint64)
    blocks = max_distance + 1
    width = math.ceil(64 / blocks)
    for b in range(blocks):
        key = (h >> np.uint64(b * width)) & np.uint64((1 << width) - 1)
        order = np.argsort(key, kind="stable")
        sorted_keys = key[order]
        starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
        ends = np.r_[starts[1:], n]
        for s, e in zip(starts, ends):
            if e - s < 2 or e - s > max_bucket:
                continue
            members = order[s:e]
            i, j = np.triu_indices(len(members), 1)
            close = hamming(hashes[members[i]], hashes[members[j]]) <= max_distance
            for a, c in zip(members[i[close]], members[j[close]]):
                ra, rc = find(a), find(c)
                if ra != rc:
                    parent[max(ra, rc)] = min(ra, rc)
    roots = np.array([find(i) for i in range(n)])
    sizes = np.bincount(roots, minlength=n)
    groups = np.full(n, -1, dtype=np.int64)
    grouped = sizes[roots] > 1
    _, groups[grouped] = np.unique(roots[grouped], return_inverse=True)
    return groups
