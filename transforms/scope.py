"""Dedup scopes for the CL→ND ordering: each feature batch gets its documents' clusters.

CL→ND removes near-duplicates only inside a cluster (``cluster_A``, or ``cluster_B`` within it
with ``--dedup-scope cluster_B``). The scope is mixed into the exact-duplicate key and into
every band key (``FeatureBatch.with_scopes``, ``transforms.lsh``), so documents of different
clusters never share a bucket and are never compared. The labels and the feature batches are
both keyed by batch, so one join attaches them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import apache_beam as beam
import numpy as np

from transforms.batches import FeatureBatch, JoinByKey, stage_counter, timed_process

SCOPES = ("cluster_A", "cluster_B")


def scope_ids(labels_a: np.ndarray, labels_b: np.ndarray, scope: str) -> np.ndarray:
    """One integer per document: its level-1 cluster, or its (level-1, level-2) pair."""
    if scope == "cluster_A":
        return labels_a.astype(np.int64)
    return labels_a.astype(np.int64) * (1 << 32) + labels_b.astype(np.int64)


class AttachScopesFn(beam.DoFn):
    timer = stage_counter("scope")

    def __init__(self, scope: str, seed: int) -> None:
        self.scope = scope
        self.seed = seed

    @timed_process
    def process(self, element: tuple[int, dict]) -> Iterator[tuple[int, FeatureBatch]]:
        key, grouped = element
        labels: dict[int, int] = {}
        for uids, labels_a, labels_b in grouped["labels"]:
            labels.update(zip(uids.tolist(), scope_ids(labels_a, labels_b, self.scope).tolist()))
        for features in grouped["features"]:
            missing = [u for u in features.uids.tolist() if u not in labels]
            if missing:
                raise RuntimeError(f"batch {key:#x}: {len(missing)} documents without a cluster "
                                   f"to scope their dedup (first uid {missing[0]})")
            scopes = np.array([labels[u] for u in features.uids.tolist()], dtype=np.int64)
            yield key, features.with_scopes(scopes, self.seed)


@dataclass(frozen=True)
class ScopeParams:
    scope: str  # "cluster_A" | "cluster_B": the level whose clusters bound the comparisons
    seed: int


class ScopeByCluster(beam.PTransform):
    """``{"features": (batch_key, FeatureBatch), "labels": (batch_key, (uids, cluster_A,
    cluster_B))}`` → the same feature batches with dedup scopes (:class:`ScopeParams`)."""

    def __init__(self, params: ScopeParams) -> None:
        super().__init__()
        if params.scope not in SCOPES:
            raise ValueError(f"dedup scope must be one of {SCOPES}, got {params.scope!r}")
        self.scope = params.scope
        self.seed = params.seed

    def expand(self, inputs: dict[str, beam.PCollection]) -> beam.PCollection:
        return (
            {"features": inputs["features"], "labels": inputs["labels"]}
            | "JoinClusterLabels" >> JoinByKey()
            | "AttachScopes" >> beam.ParDo(AttachScopesFn(self.scope, self.seed))
            .with_output_types(tuple[int, FeatureBatch])
        )
