"""Exact distributed connected components: alternating large-star / small-star rounds.

The algorithm of Kiveris et al., "Connected Components in MapReduce and Beyond" (SoCC 2014):
- large-star: every node ``u`` links each neighbour ``v > u`` to ``m(u)``, the smallest of
  ``u`` and its neighbours;
- small-star: every node ``u`` links itself and each neighbour ``v < u`` to the smallest of
  them.
Both keep connectivity; repeating the pair turns every component into a star around its
smallest node in O(log^2 n) rounds (far fewer in practice, and long chains still shrink
geometrically, unlike label propagation which needs one round per hop).

Beam has no loops, so ``max_rounds`` rounds are unrolled in the graph. Each step is a
GroupByKey on a shuffle partition of the node, carrying numpy edge arrays. A round counts the
edges it rewired (``changed``); that count is a singleton side input of the next round, which
passes its edges straight through once a round changed nothing. A round with no change proves
convergence: large-star changes nothing only if every node with a larger neighbour is the
minimum of its neighbourhood, small-star only if every node has at most one smaller
neighbour; together that is a forest of stars centred on each component's minimum. If the
last round still changed edges the job fails with a message naming ``cc_max_rounds``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import apache_beam as beam
import numpy as np

from transforms.batches import partition_of
from transforms.lsh import unique_pairs

STATS_TAG = "stats"


class ConvergenceError(RuntimeError):
    """Connected components did not converge within the unrolled rounds."""


def _groups(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start index and group index of each element of a sorted key array."""
    new_group = np.ones(len(keys), dtype=bool)
    new_group[1:] = keys[1:] != keys[:-1]
    starts = np.flatnonzero(new_group)
    return starts, np.cumsum(new_group) - 1


def large_star(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Large-star over directed pairs (both directions of each edge present).

    Returns the new undirected edges ``(v, m(u))`` and how many of them were rewired.
    """
    if len(src) == 0:
        return src, dst, 0
    src, dst = unique_pairs(src, dst)
    starts, group = _groups(src)
    group_min = np.minimum(np.minimum.reduceat(dst, starts), src[starts])
    mins = group_min[group]
    larger = dst > src
    changed = int(np.count_nonzero(larger & (mins != src)))
    out_v, out_m = unique_pairs(dst[larger], mins[larger])
    return out_v, out_m, changed


def small_star(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Small-star over pairs oriented ``(larger, smaller)``.

    Returns the new edges ``(v, m)`` and how many were rewired (each node with ``k > 1`` smaller
    neighbours rewires ``k - 1`` of them).
    """
    if len(src) == 0:
        return src, dst, 0
    src, dst = unique_pairs(src, dst)
    starts, group = _groups(src)
    group_min = np.minimum.reduceat(dst, starts)
    sizes = np.diff(np.append(starts, len(src)))
    changed = int((sizes - 1).sum())
    mins = group_min[group]
    not_min = dst != mins
    out_v = np.concatenate([dst[not_min], src[starts]])
    out_m = np.concatenate([mins[not_min], group_min])
    out_v, out_m = unique_pairs(out_v, out_m)
    return out_v, out_m, changed


def star_labels(leaves: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(node, label)`` for every node of a converged star forest (centres label themselves)."""
    nodes = np.concatenate([leaves, centres])
    labels = np.concatenate([centres, centres])
    return unique_pairs(nodes, labels)


class KeyDirectedFn(beam.DoFn):
    """Undirected edge arrays → ``(partition(src), (src, dst))`` for a large or small step."""

    def __init__(self, step: str, num_partitions: int, seed: int) -> None:
        self.step = step
        self.num_partitions = num_partitions
        self.seed = seed

    def process(self, edges: tuple[np.ndarray, np.ndarray]) -> Iterator[tuple[int, tuple]]:
        a, b = edges[0], edges[1]
        if self.step == "large":
            src, dst = np.concatenate([a, b]), np.concatenate([b, a])
        else:
            src, dst = np.maximum(a, b), np.minimum(a, b)
        parts = partition_of(src, self.num_partitions, self.seed)
        for part in np.unique(parts).tolist():
            mask = parts == part
            yield part, (src[mask], dst[mask])


class StarStepFn(beam.DoFn):
    """One large- or small-star step on a partition; passes edges through once converged."""

    def __init__(self, step: str) -> None:
        self.step = step

    def process(self, element: tuple[int, Iterable[tuple]], previous_changed: int
                ) -> Iterator[object]:
        _, chunks = element
        chunks = list(chunks)
        src = np.concatenate([c[0] for c in chunks])
        dst = np.concatenate([c[1] for c in chunks])
        if previous_changed == 0:
            # Converged: the star forest is a fixed point, so skip the work.
            if self.step == "large":
                # Both directions of every edge came in; send each edge on once.
                keep = src > dst
                src, dst = src[keep], dst[keep]
            if len(src):
                yield src, dst
            yield beam.pvalue.TaggedOutput(STATS_TAG, 0)
            return
        step = large_star if self.step == "large" else small_star
        out_v, out_m, changed = step(src, dst)
        if len(out_v):
            yield out_v, out_m
        yield beam.pvalue.TaggedOutput(STATS_TAG, changed)


class FailIfNotConvergedFn(beam.DoFn):
    def __init__(self, max_rounds: int) -> None:
        self.max_rounds = max_rounds

    def process(self, changed: int) -> Iterator[dict]:
        if changed:
            raise ConvergenceError(
                f"connected components did not converge within cc_max_rounds="
                f"{self.max_rounds} rounds ({changed} edges still changing in the last round); "
                f"rerun with a larger --cc-max-rounds")
        yield {"cc_converged": 1}


class StarRound(beam.PTransform):
    """One large-star + small-star round; outputs new edges and the round's change count."""

    def __init__(self, index: int, previous_changed: beam.PCollection, num_partitions: int,
                 seed: int) -> None:
        super().__init__()
        self.index = index
        self.previous = beam.pvalue.AsSingleton(previous_changed)
        self.num_partitions = num_partitions
        self.seed = seed

    def _step(self, edges: beam.PCollection, step: str) -> beam.pvalue.DoOutputsTuple:
        name = f"{step.capitalize()}Star{self.index}"
        return (
            edges
            | f"Key{name}" >> beam.ParDo(KeyDirectedFn(step, self.num_partitions, self.seed))
            | f"Group{name}" >> beam.GroupByKey()
            | f"Run{name}" >> beam.ParDo(StarStepFn(step), self.previous)
            .with_outputs(STATS_TAG, main="edges")
        )

    def expand(self, edges: beam.PCollection) -> tuple[beam.PCollection, beam.PCollection]:
        large = self._step(edges, "large")
        small = self._step(large.edges, "small")
        changed = (
            (large[STATS_TAG], small[STATS_TAG])
            | f"FlattenChanges{self.index}" >> beam.Flatten()
            | f"CountChanges{self.index}" >> beam.CombineGlobally(sum)
        )
        return small.edges, changed


class ConnectedComponents(beam.PTransform):
    """Undirected edge arrays → ``(nodes, labels)`` arrays (label = component's smallest uid)
    and a stats output with the change count of every round."""

    def __init__(self, max_rounds: int, num_partitions: int, seed: int) -> None:
        super().__init__()
        self.max_rounds = max_rounds
        self.num_partitions = num_partitions
        self.seed = seed

    def expand(self, edges: beam.PCollection) -> dict[str, beam.PCollection]:
        # Round 1 must run, whatever the side input says: seed it with "not converged".
        changed = edges.pipeline | "StartRounds" >> beam.Create([-1])
        round_stats = []
        for index in range(1, self.max_rounds + 1):
            edges, changed = edges | f"StarRound{index}" >> StarRound(
                index, changed, self.num_partitions, self.seed)
            round_stats.append(changed | f"ReportRound{index}" >> beam.Map(
                lambda n, i=index: {f"cc_changed_round_{i:02d}": n}))
        converged = changed | "CheckConvergence" >> beam.ParDo(
            FailIfNotConvergedFn(self.max_rounds))
        labels = edges | "LabelStars" >> beam.Map(lambda e: star_labels(e[0], e[1]))
        stats = (*round_stats, converged) | "FlattenComponentStats" >> beam.Flatten()
        return {"labels": labels, STATS_TAG: stats}
