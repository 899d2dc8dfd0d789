"""Shared by the K-Means tests: float32 blobs."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import make_blobs


def blobs(n: int | list[int], d: int, centers: int | None, seed: int, std: float = 1.0):
    x, _ = make_blobs(
        n_samples=n, n_features=d, centers=centers, cluster_std=std, random_state=seed
    )
    return x.astype(np.float32)
