"""``transforms.verify``: the verification similarities, and ``FetchNodes`` +
``VerifyCandidates`` in a TestPipeline in every verification mode."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.util import assert_that, equal_to

from tests.transforms.conftest import (
    MAX_DOC_BYTES,
    add_dicts,
    expected_shingles,
    expected_signature,
    flat_edges,
    new_pipeline,
    write_json_lines,
)
from transforms.batches import NodeInfo, make_uid, partition_of
from transforms.minhash import normalised_text, tokenize
from transforms.read import ReadDocuments, ReadParams
from transforms.verify import (
    FetchNodes,
    FetchParams,
    NodeParams,
    VerifyCandidates,
    VerifyParams,
    jaccard,
    signature_similarity,
)

# --------------------------------------------------------------------------------------------
# Verification similarities
# --------------------------------------------------------------------------------------------


def test_jaccard_known_sets() -> None:
    def arr(values: list[int]) -> np.ndarray:
        return np.array(sorted(values), dtype=np.uint64)

    assert jaccard(arr([1, 2, 3]), arr([2, 3, 4])) == pytest.approx(0.5)
    assert jaccard(arr([1, 2, 3]), arr([1, 2, 3])) == 1.0
    assert jaccard(arr([1, 2]), arr([3, 4])) == 0.0
    assert jaccard(arr([1, 2]), arr([])) == 0.0
    assert jaccard(arr([]), arr([])) == 1.0
    assert jaccard(arr([1, 2, 3, 4]), arr([4])) == pytest.approx(0.25)
    big = np.array([2**64 - 1, 2**63], dtype=np.uint64)
    assert jaccard(np.sort(big), np.sort(big[:1])) == pytest.approx(0.5)
    rng = np.random.default_rng(4)
    for _ in range(20):
        left = np.unique(rng.integers(0, 60, 30).astype(np.uint64))
        right = np.unique(rng.integers(0, 60, 30).astype(np.uint64))
        ls, rs = set(left.tolist()), set(right.tolist())
        assert jaccard(left, right) == pytest.approx(len(ls & rs) / len(ls | rs))


def test_signature_similarity() -> None:
    left = np.array([1, 2, 3, 4], dtype=np.uint32)
    assert signature_similarity(left, np.array([1, 2, 0, 4], dtype=np.uint32)) == 0.75
    assert signature_similarity(left, left.copy()) == 1.0
    assert signature_similarity(left, left + np.uint32(1)) == 0.0


# --------------------------------------------------------------------------------------------
# FetchNodes + VerifyCandidates

VERIFY_BATCH, VERIFY_NGRAM, VERIFY_PERM, VERIFY_SEED, VERIFY_PARTS = 4, 2, 64, 3, 3
VERIFY_THRESHOLD = 0.5
# name: (file index, line, text)
VERIFY_DOCS = {
    "A": (0, 1, "the quick brown fox jumps over the lazy dog near the river bank"),
    "B": (0, 2, "the quick brown fox jumps over the lazy dog near the river side"),
    "E": (0, 3, "an unrelated document that takes part in no candidate edge at all"),
    "C": (0, 5, "completely different words appear in this one sentence only"),
    "D": (1, 1, "The quick brown fox jumps over the lazy CAT near the river bank!"),
}


def write_verify_files(tmp_path: Path) -> list[str]:
    """VERIFY_DOCS as JSON lines (ids = names), one file per file index; the read rejects the
    lines in between (FetchNodes re-reads the endpoints from these files)."""
    by_file: dict[int, dict[int, Any]] = {}
    for name, (file_index, line, text) in VERIFY_DOCS.items():
        by_file.setdefault(file_index, {})[line] = {"id": name, "text": text}
    return [write_json_lines(tmp_path / f"verify{fi}.json", by_file[fi])
            for fi in sorted(by_file)]


def close_edges(expected: list[tuple[int, int, float]]) -> Callable[[list[tuple]], None]:
    """Matcher: the same ``(member, centre)`` pairs, similarities within 1e-12."""

    def check(actual: list[tuple]) -> None:
        got = sorted(actual)
        want = sorted(expected)
        assert [e[:2] for e in got] == [e[:2] for e in want], (got, want)
        for g, w in zip(got, want):
            assert math.isclose(g[2], w[2], abs_tol=1e-12), (g, w)

    return check


def test_fetch_nodes_and_verify_candidates(tmp_path: Path) -> None:
    files = write_verify_files(tmp_path)
    read_params = ReadParams(tuple(files), MAX_DOC_BYTES, VERIFY_BATCH)
    uid = {n: make_uid(fi, line) for n, (fi, line, _) in VERIFY_DOCS.items()}
    shingles = {n: set(expected_shingles(t, VERIFY_NGRAM, VERIFY_SEED).tolist())
                for n, (_, _, t) in VERIFY_DOCS.items()}
    sigs = {n: expected_signature(t, VERIFY_NGRAM, VERIFY_SEED, VERIFY_PERM)
            for n, (_, _, t) in VERIFY_DOCS.items()}

    def jac(x: str, y: str) -> float:
        return len(shingles[x] & shingles[y]) / len(shingles[x] | shingles[y])

    def sig_sim(x: str, y: str) -> float:
        return float(np.mean(sigs[x] == sigs[y]))

    pairs = [("B", "A"), ("C", "A"), ("D", "A"), ("C", "B")]
    # The planted similarities straddle the threshold as intended.
    assert jac("B", "A") > 0.8 and jac("D", "A") > 0.7
    assert jac("C", "A") < 0.1 and jac("C", "B") < 0.1
    expected = {
        "exact": [(uid[m], uid[c], jac(m, c)) for m, c in pairs
                  if jac(m, c) >= VERIFY_THRESHOLD],
        "signature": [(uid[m], uid[c], sig_sim(m, c)) for m, c in pairs
                      if sig_sim(m, c) >= VERIFY_THRESHOLD],
        "none": [(uid[m], uid[c], sig_sim(m, c)) for m, c in pairs],
    }
    assert len(expected["exact"]) == len(expected["signature"]) == 2
    expected_nodes = sorted(
        (int(partition_of(np.array([uid[n]]), VERIFY_PARTS, VERIFY_SEED)[0]), uid[n], n,
         len(normalised_text(tokenize(VERIFY_DOCS[n][2])).encode()), tuple(sigs[n].tolist()),
         tuple(sorted(shingles[n])))
        for n in "ABCD")
    # (B, A) arrives twice, from two candidate elements: it must be verified once.
    edge_elements = [
        (np.array([uid["B"], uid["C"]]), np.array([uid["A"], uid["A"]])),
        (np.array([uid["D"], uid["B"]]), np.array([uid["A"], uid["A"]])),
        (np.array([uid["C"]]), np.array([uid["B"]])),
    ]

    def describe_nodes(element: tuple[int, list[NodeInfo]]) -> list[tuple]:
        part, nodes = element
        return [(part, n.uid, n.id, n.norm_length,
                 tuple(n.signature.tolist()) if n.signature is not None else None,
                 tuple(n.shingles.tolist()) if n.shingles is not None else None)
                for n in nodes]

    with new_pipeline() as p:
        read = p | "ReadDocuments" >> ReadDocuments(
            ReadParams(tuple(files), MAX_DOC_BYTES, VERIFY_BATCH))
        edges = p | "CreateCandidateEdges" >> beam.Create(edge_elements)
        for mode in ("exact", "signature", "none"):
            name = mode.title()
            params = NodeParams(VERIFY_NGRAM, VERIFY_PERM, VERIFY_SEED, "unicode", mode)
            # FetchNodes re-reads the endpoints (A, B, C, D; never E) from the input files.
            nodes = ({"edges": edges, "repeats": read.repeats}
                     | f"FetchNodes{name}" >> FetchNodes(
                         FetchParams(params, read_params, VERIFY_PARTS)))
            # Exact mode needs shingle sets only, the others signatures only.
            want_nodes = [(n[0], n[1], n[2], n[3], None if mode == "exact" else n[4],
                           n[5] if mode == "exact" else None) for n in expected_nodes]
            assert_that(nodes | f"DescribeNodes{name}" >> beam.FlatMap(describe_nodes),
                        equal_to(want_nodes), label=f"CheckNodes{name}")
            verified = ({"edges": edges, "nodes": nodes} | f"Verify{name}" >> VerifyCandidates(
                VerifyParams(mode, VERIFY_THRESHOLD, VERIFY_PARTS, VERIFY_SEED)))
            assert_that(verified.edges | f"FlattenVerified{name}" >> beam.FlatMap(flat_edges),
                        close_edges(expected[mode]), label=f"CheckEdges{name}")
            kept = len(expected[mode])
            assert_that(verified.stats | f"SumStats{name}" >> beam.CombineGlobally(add_dicts),
                        equal_to([{"edges_checked": 4, "edges_verified": kept,
                                   "edges_rejected": 4 - kept}]),
                        label=f"CheckStats{name}")
