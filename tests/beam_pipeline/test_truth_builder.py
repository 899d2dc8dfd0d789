"""`ndcl truth` (``beam_pipeline.truth_builder``): the candidates' parameters, connected
clusters and built truth against brute-force oracles, and the command on planted and demo data."""

from __future__ import annotations

import itertools
import json
import random
import re
from pathlib import Path

import pytest

from beam_pipeline.cli import main
from beam_pipeline.metrics import miss_probability
from beam_pipeline.truth import load_truth
from beam_pipeline.truth_builder import build_truth, connected_clusters, lsh_parameters
from tests.beam_pipeline.conftest import DEMO_TRUTH
from tests.conftest import DEMO_CORPUS
from tests.fixtures import planted_records, write_corpus

# --------------------------------------------------------------------------- truth building


def test_lsh_parameters_reach_the_target_recall() -> None:
    bands, rows = lsh_parameters(0.7, 256)
    # 64 bands of 4 rows: (1 - 0.7^4)^64 = 0.7599^64 ≈ 2.3e-8; 5 rows (51 bands) give 8e-5.
    assert (bands, rows) == (64, 4)
    assert miss_probability(0.7, bands, rows) == pytest.approx(2.3357e-8, rel=1e-3)
    assert miss_probability(0.7, 51, 5) > 1e-6


def union_find_oracle(n: int, edges: list[tuple[int, int]]) -> list[list[int]]:
    """The single-process union-find that ``connected_clusters`` (scipy) replaced."""
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]  # path halving
            x = parent[x]
        return x

    for i, j in edges:
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    groups: dict[int, list[int]] = {}
    for x in range(n):
        groups.setdefault(find(x), []).append(x)
    return sorted(groups.values())


def test_connected_clusters() -> None:
    assert connected_clusters(6, [(4, 1), (1, 0), (3, 5)]) == [[0, 1, 4], [2], [3, 5]]
    assert connected_clusters(3, []) == [[0], [1], [2]]
    assert connected_clusters(0, []) == []


def test_connected_clusters_match_a_union_find_oracle() -> None:
    rng = random.Random(11)
    for _ in range(200):
        n = rng.randint(1, 60)
        # Sparse to dense graphs, with repeated and self edges now and then.
        edges = [(rng.randrange(n), rng.randrange(n)) for _ in range(rng.randint(0, 2 * n))]
        assert connected_clusters(n, edges) == union_find_oracle(n, edges)


def oracle_clusters(paths: list[Path], threshold: float) -> list[list[str]]:
    """All-pairs exact Jaccard over string shingles, independent of the pipeline's hashing."""
    from tests.reference import UnionFind, read_docs

    docs = []
    for doc in read_docs(paths):
        tokens = re.findall(r"[^\W_]+", doc.text.lower())
        if tokens:
            n = min(5, len(tokens))
            docs.append((doc.uid, doc.id,
                         {" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}))
    uf = UnionFind()
    for (u, _, a), (v, _, b) in itertools.combinations(docs, 2):
        if len(a & b) / len(a | b) >= threshold:
            uf.union(u, v)
    id_of = {uid: doc_id for uid, doc_id, _ in docs}
    # Input order (uid) within and across clusters, as truth files list them.
    return [[id_of[u] for u in c] for c in sorted(uf.components()) if len(c) >= 2]


@pytest.mark.parametrize("threshold", [0.5, 0.7])
def test_build_truth_equals_all_pairs_oracle(tmp_path: Path, threshold: float) -> None:
    paths = write_corpus(tmp_path, planted_records(), files=3)
    expected = oracle_clusters(paths, threshold)
    assert len(expected) >= 20
    for candidates in ("lsh", "index"):
        truth = build_truth([str(tmp_path / "*")], threshold=threshold, candidates=candidates)
        assert truth["clusters"] == expected, candidates
        assert truth["metadata"]["untokenized"] == 2
    assert truth["docs"] == len(planted_records())


def oracle_pairs(paths: list[Path], floor: float) -> dict[tuple[str, str], float]:
    """Every pair of documents with exact Jaccard >= ``floor`` (string shingles, all pairs)."""
    from tests.reference import read_docs

    docs = []
    for doc in read_docs(paths):
        tokens = re.findall(r"[^\W_]+", doc.text.lower())
        if tokens:
            n = min(5, len(tokens))
            docs.append((doc.id, {" ".join(tokens[i : i + n])
                                  for i in range(len(tokens) - n + 1)}))
    found = {}
    for (u, a), (v, b) in itertools.combinations(docs, 2):
        score = len(a & b) / len(a | b)
        if score >= floor:
            found[tuple(sorted((u, v)))] = score
    return found


def test_truth_pairs_are_written_and_read_back(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    paths = write_corpus(tmp_path / "corpus", planted_records(), files=3)
    out = tmp_path / "truth.json"
    assert main(["-q", "truth", str(tmp_path / "corpus" / "*"), "--output", str(out),
                 "--pairs-min", "0.3", "--candidates", "index"]) == 0
    assert "scored pairs of Jaccard >= 0.3" in capsys.readouterr().out
    text = out.read_text()
    truth = load_truth(str(out))
    assert truth.pairs is not None and truth.pairs_min == 0.3 and truth.identical
    # Compact: one pair per line.
    listed = text.split(' "pairs": [\n', 1)[1].split("\n ]", 1)[0].splitlines()
    assert len(listed) == len(truth.pairs) and listed[0].startswith('  ["')
    expanded: dict[tuple[str, str], float] = {}
    members = {g[0]: g for g in truth.identical}
    for a, b, score in truth.pairs:
        assert score == round(score, 4) and score >= 0.3
        for u in members.get(a, [a]):
            for v in members.get(b, [b]):
                expanded[tuple(sorted((u, v)))] = score
    for group in truth.identical:
        for u, v in itertools.combinations(group, 2):
            expanded[tuple(sorted((u, v)))] = 1.0
    expected = oracle_pairs(paths, 0.3)
    # The chain and the edited copies give pairs well below the threshold as well.
    assert sum(0.3 <= s < 0.7 for s in expected.values()) >= 10
    assert expanded.keys() == expected.keys()
    assert all(0 <= expected[k] - expanded[k] < 1e-4 for k in expected)  # cut, not rounded
    meta = json.loads(text)["metadata"]
    assert meta["candidates"]["recall_at_pairs_min"] == 1.0
    assert meta["scored_pairs"] == len(truth.pairs)
    # Clusters depend on the pairs >= threshold only: the same as without pairs.
    plain = tmp_path / "plain.json"
    assert main(["-q", "truth", str(tmp_path / "corpus" / "*"), "--output", str(plain),
                 "--no-pairs"]) == 0
    without = json.loads(plain.read_text())
    assert without["clusters"] == [c for c in truth.clusters]
    assert "pairs" not in without and "identical" not in without
    # Above the threshold: fewer pairs listed, the same clusters.
    assert main(["-q", "truth", str(tmp_path / "corpus" / "*"), "--output", str(plain),
                 "--pairs-min", "0.8"]) == 0
    high = load_truth(str(plain))
    assert high.clusters == truth.clusters and high.pairs is not None
    assert sorted(high.pairs) == sorted(p for p in truth.pairs if p[2] >= 0.8)
    assert main(["-q", "truth", str(tmp_path / "corpus" / "*"), "--output", str(plain),
                 "--pairs-min", "0"]) == 2
    assert "--pairs-min must be in (0, 1]" in capsys.readouterr().err


def test_truth_cli_reproduces_the_demo_truth(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "truth.json"
    assert main(["-q", "truth", str(DEMO_CORPUS), "--output", str(out), "--threshold", "0.7"]) == 0
    made = json.loads(out.read_text())
    shipped = json.loads(DEMO_TRUTH.read_text())
    assert made["clusters"] == shipped["clusters"]
    assert (made["threshold"], made["ngram"], made["docs"]) == (0.7, 5, 1308)
    candidates = made["metadata"]["candidates"]
    assert candidates["recall_at_threshold"] >= 1 - 1e-6
    assert candidates["s_curve"]["0.70"] == candidates["recall_at_threshold"]
    assert candidates["recall_at_pairs_min"] == pytest.approx(1 - miss_probability(0.5, 64, 4))
    assert "144 clusters" in capsys.readouterr().out
    # The shipped file has the scored pairs too (all 448 document pairs >= 0.5 of the demo).
    assert (made["pairs"], made["identical"]) == (shipped["pairs"], shipped["identical"])


def test_truth_cli_refuses_large_corpora(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "truth.json"
    assert main(["-q", "truth", str(DEMO_CORPUS), "--output", str(out),
                 "--max-docs", "1000"]) == 2
    assert "more than 1,000 documents (--max-docs)" in capsys.readouterr().err
    assert not out.exists()
    assert main(["-q", "truth", str(DEMO_CORPUS), "--output", str(out), "--thresold=0.5"]) == 2
    assert "unknown option --thresold; did you mean --threshold?" in capsys.readouterr().err
