"""Training batches from the cache: samplers that plan an epoch, and the loader.

A batch is a gather of uint8 rows from the memory-mapped cache (no
decoding), pinned when a GPU is used and copied asynchronously. Samplers
plan a whole epoch from (seed, epoch), so an epoch is reproducible and a
resumed run sees the very batches it would have seen.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from pbn_cli.core.errors import InputError
from pbn_cli.data.cache import CacheData


def by_artist(labels: np.ndarray) -> dict[int, np.ndarray]:
    return {int(a): np.flatnonzero(labels == a) for a in np.unique(labels)}


@dataclass
class Batch:
    """Indices into the split's rows: ``images`` flattened; for pairs/triplets, columns of ``images``."""

    images: np.ndarray  # (M,) split-row indices of the images to embed
    labels: np.ndarray  # (M,) artist codes
    different: np.ndarray | None = None  # pairs: 1 for different artists


class Sampler:
    """Plans an epoch of batches; every rank plans the same and takes its share."""

    def __init__(self, labels: np.ndarray, mode: str, batch_size: int, seed: int, k: int = 4):
        self.labels, self.mode, self.batch_size, self.seed, self.k = labels, mode, batch_size, seed, k
        self.groups = by_artist(labels)
        self.eligible = np.array([a for a, m in self.groups.items() if len(m) >= 2])
        if len(self.eligible) < 1 or len(self.groups) < 2:
            raise InputError("training needs at least two artists, one of them with two paintings in train")

    def epoch(self, epoch: int, rank: int = 0, world: int = 1) -> list[Batch]:
        rng = np.random.default_rng([self.seed, epoch, 7])
        batches = self._plan(rng)
        # every rank takes the same number of steps (DDP synchronises each one)
        usable = max(world, len(batches) // world * world)
        batches = (batches * world)[:usable] if len(batches) < world else batches[:usable]
        return batches[rank::world]

    def _plan(self, rng: np.random.Generator) -> list[Batch]:
        raise NotImplementedError


class RandomSampler(Sampler):
    """The reference's draw: as many triplets (or pairs) per epoch as training paintings."""

    def _pick(self, rng, artists: np.ndarray) -> np.ndarray:
        return np.array([self.groups[int(a)][rng.integers(len(self.groups[int(a)]))] for a in artists])

    def _plan(self, rng) -> list[Batch]:
        n = len(self.labels)
        names = np.array(sorted(self.groups))
        a_art = self.eligible[rng.integers(len(self.eligible), size=n)]
        o = rng.integers(len(names) - 1, size=n)
        other = names[o + (o >= np.searchsorted(names, a_art))]  # uniform among the other artists
        anchors, positives = [], []
        for a in a_art:
            members = self.groups[int(a)]
            i, j = rng.choice(len(members), 2, replace=False)
            anchors.append(members[i])
            positives.append(members[j])
        anchors, positives = np.array(anchors), np.array(positives)
        negatives = self._pick(rng, other)
        if self.mode == "triplet":
            cols = np.stack([anchors, positives, negatives], 1)
            different = None
        else:  # same or different with probability 1/2
            diff = rng.uniform(size=n) < 0.5
            cols = np.stack([anchors, np.where(diff, negatives, positives)], 1)
            different = diff.astype(np.float32)
        out = []
        for s in range(0, n, self.batch_size):
            c = cols[s : s + self.batch_size]
            imgs = c.T.reshape(-1)  # branch-major: all anchors, then all positives, ...
            out.append(Batch(imgs, self.labels[imgs], None if different is None else different[s : s + self.batch_size]))
        return out


class PKSampler(Sampler):
    """P artists x K paintings per batch; ceil(N / (P*K)) batches an epoch."""

    def _plan(self, rng) -> list[Batch]:
        k = self.k
        p = min(max(2, self.batch_size // k), len(self.groups))
        steps = -(-len(self.labels) // (p * k))
        names = np.array(sorted(self.groups))
        out = []
        for _ in range(steps):
            # artists with two or more paintings make positives; pad with others if too few
            pool = self.eligible if len(self.eligible) >= p else names
            chosen = rng.choice(pool, p, replace=False)
            imgs = []
            for a in chosen:
                members = self.groups[int(a)]
                imgs.append(rng.choice(members, k, replace=len(members) < k))
            imgs = np.concatenate(imgs)
            out.append(Batch(imgs, self.labels[imgs]))
        return out


def make_sampler(kind: str, labels: np.ndarray, mode: str, batch_size: int, seed: int, k: int) -> Sampler:
    return (RandomSampler if kind == "random" else PKSampler)(labels, mode, batch_size, seed, k)


class Loader:
    """Batches of uint8 images on the device, the next one gathered in a background thread."""

    def __init__(self, data: CacheData, rows: np.ndarray, device: torch.device):
        self.data, self.rows, self.device = data, rows, device
        self.pin = device.type == "cuda"

    def _host(self, batch: Batch) -> torch.Tensor:
        x = torch.from_numpy(self.data.gather(self.rows[batch.images]))
        return x.pin_memory() if self.pin else x

    def __call__(self, batches: list[Batch]) -> Iterator[tuple[Batch, torch.Tensor]]:
        result: dict = {}

        def fetch(i: int) -> None:
            try:
                result[i] = self._host(batches[i])
            except BaseException as err:  # re-raised in the training thread
                result[i] = err

        thread = None
        if batches:
            fetch(0)
        for i, batch in enumerate(batches):
            if thread is not None:
                thread.join()
            host = result.pop(i)
            if isinstance(host, BaseException):
                raise host
            if i + 1 < len(batches):
                thread = threading.Thread(target=fetch, args=(i + 1,), daemon=True)
                thread.start()
            yield batch, host.to(self.device, non_blocking=True)


class FeatureLoader:
    """--freeze-backbone: each batch's cached features (B, V, F) on the device, in place of its images."""

    def __init__(self, features: torch.Tensor, device: torch.device):
        self.features, self.device = features, device

    def __call__(self, batches: list[Batch]) -> Iterator[tuple[Batch, torch.Tensor]]:
        for batch in batches:
            yield batch, self.features[torch.from_numpy(batch.images)].to(self.device).float()
