"""``transforms.components``: the large-star / small-star steps against a union-find oracle,
and ``ConnectedComponents`` in a TestPipeline."""

from __future__ import annotations

import random
from collections.abc import Callable

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.util import assert_that, equal_to

from tests.reference import UnionFind
from tests.transforms.conftest import add_dicts, flat_edges, new_pipeline
from transforms.batches import make_uid
from transforms.components import (
    ComponentsParams,
    ConnectedComponents,
    components_of,
    large_star,
    small_star,
    star_labels,
)


def oracle_labels(a: np.ndarray, b: np.ndarray) -> dict[int, int]:
    uf = UnionFind()
    for x, y in zip(a.tolist(), b.tolist()):
        uf.union(x, y)
    return uf.min_labels()


def is_star_forest(leaves: np.ndarray, centres: np.ndarray) -> bool:
    """Every edge goes leaf → smaller centre, each leaf has one centre, no centre is a leaf."""
    if not np.all(centres < leaves):
        return False
    if len(np.unique(leaves)) != len(leaves):
        return False
    return not set(centres.tolist()) & set(leaves.tolist())


def run_components(a: np.ndarray, b: np.ndarray, max_rounds: int = 64
                   ) -> tuple[np.ndarray, np.ndarray, int]:
    """The module's driver loop: large-star over both directions, then small-star over
    ``(max, min)``, until a round changes nothing. Returns the final edges and the rounds run
    (the last, change-free round included)."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    for rounds in range(1, max_rounds + 1):
        v, m, changed_large = large_star(np.concatenate([a, b]), np.concatenate([b, a]))
        a, b, changed_small = small_star(np.maximum(v, m), np.minimum(v, m))
        if changed_large == 0 and changed_small == 0:
            assert is_star_forest(a, b), "zero changes but the edges are not a star forest"
            return a, b, rounds
    raise AssertionError(f"no convergence within {max_rounds} rounds")


def check_components(a: np.ndarray, b: np.ndarray) -> int:
    """Run the driver loop and compare labels with the union-find oracle; returns rounds."""
    leaves, centres, rounds = run_components(a, b)
    nodes, labels = star_labels(leaves, centres)
    got = dict(zip(nodes.tolist(), labels.tolist()))
    assert len(nodes) == len(got), "star_labels gave a node two labels"
    assert got == oracle_labels(np.asarray(a), np.asarray(b))
    return rounds


# --------------------------------------------------------------------------------------------
# Connected components
# --------------------------------------------------------------------------------------------


def test_large_star_and_small_star_by_hand() -> None:
    # Path 1 - 3 - 2: large-star links 3 → 1 and 3 → 2 (nothing rewired) ...
    a, b = np.array([1, 3]), np.array([3, 2])
    v, m, changed = large_star(np.concatenate([a, b]), np.concatenate([b, a]))
    assert list(zip(v.tolist(), m.tolist())) == [(3, 1), (3, 2)]
    assert changed == 0
    # ... and small-star moves 2 under 1 (node 3 had two smaller neighbours).
    v, m, changed = small_star(np.maximum(v, m), np.minimum(v, m))
    assert list(zip(v.tolist(), m.tolist())) == [(2, 1), (3, 1)]
    assert changed == 1
    # Large-star: node 2 with neighbours {1, 4, 5} links 4 and 5 to 1 (two rewired edges).
    a, b = np.array([2, 2, 2]), np.array([1, 4, 5])
    v, m, changed = large_star(np.concatenate([a, b]), np.concatenate([b, a]))
    assert list(zip(v.tolist(), m.tolist())) == [(2, 1), (4, 1), (5, 1)]
    assert changed == 2
    empty = np.zeros(0, dtype=np.int64)
    assert large_star(empty, empty)[2] == 0 and small_star(empty, empty)[2] == 0


def random_graph(rng: np.random.Generator, nodes: int, edges: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    ids = rng.choice(2**40, size=nodes, replace=False).astype(np.int64)
    a = ids[rng.integers(0, nodes, edges)]
    b = ids[rng.integers(0, nodes, edges)]
    keep = a != b
    return a[keep], b[keep]


def chain(rng: np.random.Generator, nodes: int) -> tuple[np.ndarray, np.ndarray]:
    ids = rng.choice(2**40, size=nodes, replace=False).astype(np.int64)
    return ids[:-1], ids[1:]


def star(rng: np.random.Generator, leaves: int) -> tuple[np.ndarray, np.ndarray]:
    ids = rng.choice(2**40, size=leaves + 1, replace=False).astype(np.int64)
    centre = ids[int(rng.integers(0, leaves + 1))]  # not necessarily the smallest
    others = ids[ids != centre]
    return np.full(leaves, centre), others


def clique(rng: np.random.Generator, nodes: int) -> tuple[np.ndarray, np.ndarray]:
    ids = rng.choice(2**40, size=nodes, replace=False).astype(np.int64)
    i, j = np.triu_indices(nodes, 1)
    return ids[i], ids[j]


@pytest.mark.parametrize("seed", range(6))
def test_components_random_graphs(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a, b = random_graph(rng, 400, int(rng.integers(100, 600)))
    check_components(a, b)


@pytest.mark.parametrize("seed", range(3))
def test_components_long_chain_shuffled_ids(seed: int) -> None:
    rng = np.random.default_rng(50 + seed)
    a, b = chain(rng, 1500)
    # Mixed orientation and a few repeated edges.
    flip = rng.random(len(a)) < 0.5
    a, b = np.where(flip, b, a), np.where(flip, a, b)
    a, b = np.concatenate([a, b[:20]]), np.concatenate([b, a[:20]])
    rounds = check_components(a, b)
    # Star rounds alone need at most 16 rounds here (beyond cc_max_rounds the pipeline
    # finishes on one worker).
    assert rounds <= 16


@pytest.mark.parametrize("seed", range(3))
def test_components_of_finishes_exactly_on_one_worker(seed: int) -> None:
    # The finisher after the unrolled rounds: any graph, one call, the oracle's labels.
    rng = np.random.default_rng(70 + seed)
    parts = [chain(rng, 400), star(rng, 50), clique(rng, 12), random_graph(rng, 100, 80)]
    a = np.concatenate([p[0] for p in parts])
    b = np.concatenate([p[1] for p in parts])
    nodes, labels = components_of(a, b)
    assert len(np.unique(nodes)) == len(nodes)
    assert dict(zip(nodes.tolist(), labels.tolist())) == oracle_labels(a, b)
    empty = np.array([], dtype=np.int64)
    assert [len(x) for x in components_of(empty, empty)] == [0, 0]


def test_components_mixture() -> None:
    rng = np.random.default_rng(99)
    parts = [chain(rng, 300), star(rng, 200), clique(rng, 30), random_graph(rng, 200, 150)]
    pairs = rng.choice(2**40, size=(40, 2), replace=False).astype(np.int64)
    parts.append((pairs[:, 0], pairs[:, 1]))  # isolated pairs
    a = np.concatenate([p[0] for p in parts])
    b = np.concatenate([p[1] for p in parts])
    order = rng.permutation(len(a))
    check_components(a[order], b[order])


@pytest.mark.parametrize("shape", ["star", "clique", "pairs", "single_edge"])
def test_components_shapes(shape: str) -> None:
    rng = np.random.default_rng(7)
    if shape == "star":
        a, b = star(rng, 500)
    elif shape == "clique":
        a, b = clique(rng, 40)
    elif shape == "pairs":
        ids = rng.choice(2**40, size=(200, 2), replace=False).astype(np.int64)
        a, b = ids[:, 0], ids[:, 1]
    else:
        a, b = np.array([9]), np.array([4])
    check_components(a, b)


def test_converged_star_forest_is_a_fixed_point() -> None:
    rng = np.random.default_rng(8)
    leaves, centres, _ = run_components(*random_graph(rng, 300, 250))
    v, m, changed_large = large_star(np.concatenate([leaves, centres]),
                                     np.concatenate([centres, leaves]))
    v2, m2, changed_small = small_star(np.maximum(v, m), np.minimum(v, m))
    assert changed_large == 0 and changed_small == 0
    assert v2.tolist() == leaves.tolist() and m2.tolist() == centres.tolist()


def test_star_labels() -> None:
    nodes, labels = star_labels(np.array([5, 9, 7]), np.array([1, 1, 2]))
    assert dict(zip(nodes.tolist(), labels.tolist())) == {1: 1, 2: 2, 5: 1, 7: 2, 9: 1}
    assert nodes.tolist() == sorted(nodes.tolist())


# --------------------------------------------------------------------------------------------
# ConnectedComponents

CC_PARTS, CC_SEED = 4, 9


def chain_edges(first: int, count: int, seed: int) -> list[tuple[int, int]]:
    """A path through ``count`` nodes from ``first`` on, visited in shuffled order, with its
    edges shuffled and randomly oriented."""
    rng = random.Random(seed)
    order = list(range(first, first + count))
    rng.shuffle(order)
    edges = [(order[i], order[i + 1]) if rng.random() < 0.5 else (order[i + 1], order[i])
             for i in range(count - 1)]
    rng.shuffle(edges)
    return edges


def edge_elements(edges: list[tuple[int, int]], pieces: int) -> list[tuple]:
    """Split edges into ``pieces`` array-valued elements ``(left, right)``."""
    chunks = [edges[i::pieces] for i in range(pieces)]
    return [(np.array([e[0] for e in c], dtype=np.int64),
             np.array([e[1] for e in c], dtype=np.int64)) for c in chunks if c]


def label_matcher(expected: dict[int, int]) -> Callable[[list[tuple[int, int]]], None]:
    """Matcher: every node has one label, and the labels are ``expected``."""

    def check(actual: list[tuple[int, int]]) -> None:
        labels: dict[int, int] = {}
        for node, label in actual:
            assert labels.setdefault(node, label) == label, f"node {node}: two labels"
        assert labels == expected

    return check


def test_connected_components_labels_are_component_minimum() -> None:
    big = [make_uid(3, 1), make_uid(2, 7), make_uid(2, 9)]  # uids beyond 32 bits
    edges = [(50, 20), (20, 0), (420, 400), (400, 420), (big[0], big[1]), (big[2], big[0])]
    edges += chain_edges(1000, 200, seed=1)
    expected = {n: 0 for n in (0, 20, 50)} | {400: 400, 420: 400}
    expected |= {n: make_uid(2, 7) for n in big}
    expected |= {n: 1000 for n in range(1000, 1200)}
    with new_pipeline() as p:
        cc = (p | "CreateEdges" >> beam.Create(edge_elements(edges, 5))
              | "ConnectedComponents" >> ConnectedComponents(
                  ComponentsParams(16, CC_PARTS, CC_SEED)))
        pairs = cc.labels | "FlattenLabels" >> beam.FlatMap(flat_edges)
        assert_that(pairs, label_matcher(expected), label="CheckLabels")
        stats = cc.stats | "SumStats" >> beam.CombineGlobally(add_dicts)
        assert_that(stats | "SummariseRounds" >> beam.Map(
            lambda s: (s["cc_converged"], s["cc_changed_round_01"] > 0,
                       s["cc_changed_round_16"])),
            equal_to([(1, True, 0)]), label="CheckStats")

        empty = (p | "CreateNoEdges" >> beam.Create([]).with_output_types(tuple)
                 | "ComponentsOfEmptyGraph" >> ConnectedComponents(
                  ComponentsParams(2, CC_PARTS, CC_SEED)))
        assert_that(empty.labels, equal_to([]), label="CheckEmptyLabels")
        assert_that(empty.stats, equal_to([{"cc_converged": 1}]),
                    label="CheckEmptyStats")


def test_connected_components_finish_exactly_when_rounds_run_out() -> None:
    # A 200-node chain needs about 15 rounds; with one, the rest is finished on one worker.
    edges = [*chain_edges(0, 200, 2), (900, 901), (902, 901)]
    expected = {n: 0 for n in range(200)} | {900: 900, 901: 900, 902: 900}
    with new_pipeline() as p:
        cc = (p | "CreateChain" >> beam.Create(edge_elements(edges, 3))
              | "ConnectedComponents" >> ConnectedComponents(
                  ComponentsParams(1, CC_PARTS, CC_SEED)))
        pairs = cc.labels | "FlattenLabels" >> beam.FlatMap(flat_edges)
        assert_that(pairs, label_matcher(expected), label="CheckLabels")
        stats = cc.stats | "SumStats" >> beam.CombineGlobally(add_dicts)
        assert_that(stats | "SummariseFinish" >> beam.Map(
            lambda s: (s["cc_converged"], s["cc_changed_round_01"] > 0,
                       s["cc_finished_locally_edges"] > 0)),
            equal_to([(0, True, True)]), label="CheckStats")
