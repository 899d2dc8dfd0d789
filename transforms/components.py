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
edges it rewired (``changed``); both steps' counts are a side input of the next round, which
passes its edges straight through once a round changed nothing. A round with no change proves
convergence: large-star changes nothing only if every node with a larger neighbour is the
minimum of its neighbourhood, small-star only if every node has at most one smaller
neighbour; together that is a forest of stars centred on each component's minimum.

If the last round still changed edges (a chain of more than a few dozen documents needs more
rounds: a path of n nodes takes about 2·log2(n) of them), the remaining edges are gathered on
one worker and finished exactly there with scipy's ``connected_components``. So the result is
always exact, whatever ``cc_max_rounds`` is; ``cc_max_rounds`` only decides how much of the
work is spread over workers. Why the default is low (3 locally): every unrolled round adds
operators to the graph, and each one costs fixed time whether or not it has work (on Flink,
16 rounds cost 7 s more than 4 on the demo corpus; in the in-process runner each round is two
to three stages of about 10 ms each: 6 rounds cost about 0.05 s more than 3 there), while real
corpora converge in two or three rounds (the 184 k blog posts: the third round changes
nothing, so 3 still proves convergence; locally the one worker is the same machine anyway).
The gathered edges are uids only (16 bytes an
edge, about one edge per duplicate), and ``cc_finished_locally_edges`` in the stats says when
it happened; raise ``cc_max_rounds`` (the Dataflow preset has 24) to keep it from happening.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

import apache_beam as beam
import numpy as np

from transforms.batches import (
    partition_of,
    rows_by_part,
    sorted_runs,
    stage_counter,
    timed,
    timed_process,
)
from transforms.lsh import unique_pairs

STATS_TAG = "stats"
UNCONVERGED_TAG = "unconverged"

def large_star(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Large-star over directed pairs (both directions of each edge present).

    Returns the new undirected edges ``(v, m(u))`` and how many of them were rewired.
    """
    if len(src) == 0:
        return src, dst, 0
    src, dst = unique_pairs(src, dst)
    starts, _, group = sorted_runs(src)
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
    starts, sizes, group = sorted_runs(src)
    group_min = np.minimum.reduceat(dst, starts)
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


def components_of(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact ``(node, label)`` of every node of the undirected edges ``a``–``b`` on one worker,
    the label being the component's smallest uid (as the star rounds give)."""
    if len(a) == 0:
        return a, b
    # Imported here: scipy.sparse costs ~0.25 s to import, which every run would pay at
    # start-up, and most runs never finish a component locally.
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    nodes, index = np.unique(np.concatenate([a, b]), return_inverse=True)
    n = len(nodes)
    graph = coo_matrix((np.ones(len(a), dtype=np.int8), (index[:len(a)], index[len(a):])),
                       shape=(n, n))
    _, component = connected_components(graph, directed=False)
    # nodes is sorted, so the first node of each component is its smallest uid.
    first = np.full(component.max() + 1, n, dtype=np.int64)
    np.minimum.at(first, component, np.arange(n))
    return nodes, nodes[first[component]]


def changes_of(sides: tuple[list[tuple[int, int]], ...]) -> int:
    """Total edges rewired, from side inputs of ``(round, changed)`` counts."""
    return sum(n for side in sides for _, n in side)


def keyed_for(step: str, a: np.ndarray, b: np.ndarray, num_partitions: int, seed: int
              ) -> Iterator[tuple[int, tuple[np.ndarray, np.ndarray]]]:
    """Undirected edges → ``(partition(src), (src, dst))`` as the next step wants them:
    both directions for large-star, ``(larger, smaller)`` for small-star."""
    if step == "large":
        src, dst = np.concatenate([a, b]), np.concatenate([b, a])
    else:
        src, dst = np.maximum(a, b), np.minimum(a, b)
    parts = partition_of(src, num_partitions, seed)
    for part, rows in rows_by_part(parts):
        yield part, (src[rows], dst[rows])


class KeyEdgesForLargeStarFn(beam.DoFn):
    """Undirected edge arrays → keyed directed pairs for the first large-star step."""

    timer = stage_counter("components")

    def __init__(self, num_partitions: int, seed: int) -> None:
        self.num_partitions = num_partitions
        self.seed = seed

    def process(self, edges: tuple) -> Iterator[tuple[int, tuple]]:
        return timed(keyed_for("large", edges[0], edges[1], self.num_partitions, self.seed),
                     self.timer)


class StarStepFn(beam.DoFn):
    """One large- or small-star step on a partition. Its edges come out already keyed for the
    next step (``next_step``, or plain undirected edges when ``None``). Once the previous
    round changed nothing, edges pass straight through."""

    timer = stage_counter("components")

    def __init__(self, round_index: int, step: str, next_step: str | None, num_partitions: int,
                 seed: int) -> None:
        self.round_index = round_index
        self.step = step
        self.next_step = next_step
        self.num_partitions = num_partitions
        self.seed = seed

    @timed_process
    def process(self, element: tuple[int, Iterable[tuple]],
                *previous_changes: list[tuple[int, int]]) -> Iterator[object]:
        _, chunks = element
        chunks = list(chunks)
        src = np.concatenate([c[0] for c in chunks])
        dst = np.concatenate([c[1] for c in chunks])
        if changes_of(previous_changes) == 0:
            # Converged: the star forest is a fixed point, so skip the work.
            keep = src > dst if self.step == "large" else np.ones(len(src), dtype=bool)
            out_v, out_m, changed = src[keep], dst[keep], 0
        else:
            step = large_star if self.step == "large" else small_star
            out_v, out_m, changed = step(src, dst)
        yield beam.pvalue.TaggedOutput(STATS_TAG, (self.round_index, changed))
        if not len(out_v):
            return
        if self.next_step is None:
            yield out_v, out_m
        else:
            yield from keyed_for(self.next_step, out_v, out_m, self.num_partitions, self.seed)


class RouteUnconvergedFn(beam.DoFn):
    """After the last round: edges of a converged forest go on to be labelled where they are;
    if the last round still changed edges, all of them go to one key to be finished there."""

    def process(self, edges: tuple, *last_changes: list[tuple[int, int]]) -> Iterator[object]:
        if changes_of(last_changes) == 0:
            yield edges
        else:
            yield beam.pvalue.TaggedOutput(UNCONVERGED_TAG, (0, edges))


class FinishComponentsFn(beam.DoFn):
    """All edges left unconverged by the rounds → exact labels, computed on this worker."""

    timer = stage_counter("components")

    @timed_process
    def process(self, element: tuple[int, Iterable[tuple]]) -> Iterator[object]:
        chunks = list(element[1])
        a = np.concatenate([c[0] for c in chunks])
        b = np.concatenate([c[1] for c in chunks])
        yield beam.pvalue.TaggedOutput(STATS_TAG, {"cc_finished_locally_edges": len(a)})
        yield components_of(a, b)


class ReportConvergenceFn(beam.DoFn):
    def process(self, _: int, *last_changes: list[tuple[int, int]]) -> Iterator[dict]:
        yield {"cc_converged": int(changes_of(last_changes) == 0)}


def round_stat(change: tuple[int, int]) -> dict[str, int]:
    return {f"cc_changed_round_{change[0]:02d}": change[1]}


@dataclass(frozen=True)
class ComponentsParams:
    max_rounds: int  # unrolled rounds; what is left unconverged is finished on one worker
    num_partitions: int
    seed: int


class Components(NamedTuple):
    """``labels``: ``(nodes, labels)`` arrays (label = the component's smallest uid);
    ``stats``: the change count of every round, convergence, edges finished locally."""

    labels: beam.PCollection
    stats: beam.PCollection


class ConnectedComponents(beam.PTransform):
    """Undirected edge arrays → :class:`Components`."""

    def __init__(self, params: ComponentsParams) -> None:
        super().__init__()
        self.max_rounds = params.max_rounds
        self.num_partitions = params.num_partitions
        self.seed = params.seed

    def _step(self, keyed: beam.PCollection, round_index: int, step: str,
              next_step: str | None, previous: tuple[beam.PCollection, ...]
              ) -> beam.pvalue.DoOutputsTuple:
        name = f"{step.capitalize()}Star{round_index}"
        fn = StarStepFn(round_index, step, next_step, self.num_partitions, self.seed)
        sides = [beam.pvalue.AsList(p) for p in previous]
        return (
            keyed
            | f"Group{name}" >> beam.GroupByKey()
            | f"Run{name}" >> beam.ParDo(fn, *sides).with_outputs(STATS_TAG, main="edges")
        )

    def expand(self, edges: beam.PCollection) -> Components:
        pipeline = edges.pipeline
        # Round 1 must run, whatever the side input says: seed it with "not converged".
        changes = (pipeline | "StartRounds" >> beam.Create([(0, -1)]),)
        keyed = edges | "KeyForLargeStar1" >> beam.ParDo(
            KeyEdgesForLargeStarFn(self.num_partitions, self.seed))
        round_changes = []
        for i in range(1, self.max_rounds + 1):
            last = i == self.max_rounds
            large = self._step(keyed, i, "large", "small", changes)
            small = self._step(large.edges, i, "small", None if last else "large", changes)
            # One flattened side input, not the two tagged outputs as two side inputs: Beam's
            # bundle-based DirectRunner then sometimes hands a step main-output elements in
            # its side input (seen with a retried bundle, tests/end_to_end/test_reliability.py).
            round_change = ((large[STATS_TAG], small[STATS_TAG])
                            | f"FlattenChanges{i}" >> beam.Flatten())
            changes = (round_change,)
            round_changes.append(round_change)
            keyed = small.edges
        last_changes = [beam.pvalue.AsList(p) for p in changes]
        routed = keyed | "RouteUnconverged" >> beam.ParDo(
            RouteUnconvergedFn(), *last_changes).with_outputs(UNCONVERGED_TAG, main="stars")
        finished = (routed[UNCONVERGED_TAG]
                    | "GatherUnconverged" >> beam.GroupByKey()
                    | "FinishComponents" >> beam.ParDo(FinishComponentsFn()).with_outputs(
                        STATS_TAG, main="labels"))
        star_labels_ = routed.stars | "LabelStars" >> beam.Map(lambda e: star_labels(e[0], e[1]))
        labels = (star_labels_, finished.labels) | "FlattenLabels" >> beam.Flatten()
        converged = pipeline | "CheckConvergence" >> beam.Create([0]) | "ReportConvergence" >> (
            beam.ParDo(ReportConvergenceFn(), *last_changes))
        per_round = (round_changes | "FlattenRoundChanges" >> beam.Flatten()
                     | "ReportRounds" >> beam.Map(round_stat))
        stats = ((per_round, converged, finished[STATS_TAG])
                 | "FlattenComponentStats" >> beam.Flatten())
        return Components(labels, stats)
