"""K-Means for clustering: the pure JAX implementation shared by the Ray service and the local
backend (:mod:`runners.kmeans.jax_kmeans`).

The names below are loaded on first use, so importing ``runners.kmeans.service`` (the Ray
driver side) does not import JAX; the process that fits is the one that initialises it.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "KMeansConfig",
    "KMeansModel",
    "balance_bounds",
    "balanced_assign",
    "balanced_lloyd",
    "fit",
    "fit_predict",
    "kmeans_plus_plus",
    "lloyd",
    "minibatch",
    "predict",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("runners.kmeans.jax_kmeans"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
