"""`ndcl evaluate` and `ndcl truth`: the metrics on planted clusters with hand-computed counts,
truth files (parsing, building against a brute-force oracle), and end to end through the CLI
on the demo corpus (one recorded `ndcl dedup` run shared by the module)."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import random
import re
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from beam_pipeline.cli import main
from beam_pipeline.db import AccuracyMetric, database_url, open_engine
from beam_pipeline.evaluate import evaluate
from beam_pipeline.metrics import (
    Counts,
    cluster_labels,
    document_counts,
    miss_probability,
    pair_counts,
    predicted_labels,
    similarity_bins,
)
from beam_pipeline.run_outputs import RunOutput, read_output
from beam_pipeline.truth import EvaluationError, TruthFileError, load_truth, parse_truth
from beam_pipeline.truth_builder import build_truth, connected_clusters, lsh_parameters
from tests.conftest import DEMO_CORPUS, REPO
from tests.fixtures import planted_records, write_corpus

DEMO_TRUTH = REPO / "data" / "demo" / "truth.json"

# Truth {a,b,c}, {d,e}; the run keeps a and d and removes b (→ a) and e, f (→ d).
TRUTH = [["a", "b", "c"], ["d", "e"]]
ROWS = {"b": "a", "e": "d", "f": "d"}


def run_of(rows: dict[str, str], others: tuple[str, ...] = ("c", "g")) -> RunOutput:
    ids = frozenset(rows) | frozenset(rows.values()) | frozenset(others)
    return RunOutput(path="mem", duplicate_of=dict(rows), doc_ids=ids)


# --------------------------------------------------------------------------- pure metrics


def test_pair_counts_by_hand() -> None:
    counts = pair_counts(predicted_labels(ROWS), cluster_labels(TRUTH))
    # Predicted pairs: {a,b} → ab; {d,e,f} → de, df, ef: 4. Truth pairs: ab, ac, bc, de: 4.
    # Both: ab (n_11 = |{a,b}| = 2 → C(2,2) = 1) and de (n_22 = 2 → 1): TP = 2.
    # FP = 4 - 2 = 2 (df, ef); FN = 4 - 2 = 2 (ac, bc). P = R = 2/4, F1 = 4 / (4 + 2 + 2).
    assert counts == Counts(tp=2, fp=2, fn=2)
    assert (counts.precision, counts.recall, counts.f1) == (0.5, 0.5, 0.5)


def test_document_counts_by_hand() -> None:
    counts = document_counts(ROWS.keys(), cluster_labels(TRUTH))
    # Removed R = {b, e, f}. Truth wants |T| - 1 removed: 2 from {a,b,c}, 1 from {d,e}: 3.
    # TP = min(|R ∩ {a,b,c}| = 1, 2) + min(|R ∩ {d,e}| = 1, 1) = 2.
    # FP = |R| - TP = 1 (f is in no truth cluster); FN = 3 - 2 = 1 (a and c both kept).
    assert counts == Counts(tp=2, fp=1, fn=1)
    assert counts.precision == counts.recall == counts.f1 == pytest.approx(2 / 3)


def test_counts_do_not_depend_on_which_member_is_kept() -> None:
    truth = cluster_labels(TRUTH)
    results = set()
    # Every choice of kept document: 2 for {a,b} times 3 for {d,e,f}.
    for kept_1, kept_2 in itertools.product("ab", "def"):
        rows = {m: kept_1 for m in "ab" if m != kept_1}
        rows |= {m: kept_2 for m in "def" if m != kept_2}
        results.add((pair_counts(predicted_labels(rows), truth),
                     document_counts(rows.keys(), truth)))
    assert results == {(Counts(2, 2, 2), Counts(2, 1, 1))}
    # The truth's own clusters with any kept member score perfectly on both levels.
    for kept_1, kept_2 in itertools.product("abc", "de"):
        rows = {m: kept_1 for m in "abc" if m != kept_1}
        rows |= {m: kept_2 for m in "de" if m != kept_2}
        result = evaluate(run_of(rows), truth)
        assert result["pair"]["f1"] == result["document"]["f1"] == 1.0


def test_over_removal_and_merges_are_document_errors() -> None:
    # One predicted cluster {a,b,c,d,e} keeping a: all of {d,e} is removed, so that family
    # lost every copy. R = {b,c,d,e}: TP = min(2, 2) + min(2, 1) = 3, FP = 4 - 3 = 1, FN = 0.
    # Pairs: predicted C(5,2) = 10, truth 4, TP = C(3,2) + C(2,2) = 4 → FP 6, FN 0.
    rows = {m: "a" for m in "bcde"}
    truth = cluster_labels(TRUTH)
    assert document_counts(rows.keys(), truth) == Counts(3, 1, 0)
    assert pair_counts(predicted_labels(rows), truth) == Counts(4, 6, 0)


def test_undefined_ratios_are_none_not_invented() -> None:
    nothing = Counts(0, 0, 3)  # truth has duplicates, the run removed none
    assert (nothing.precision, nothing.recall, nothing.f1) == (None, 0.0, 0.0)
    empty = Counts(0, 0, 0)
    assert (empty.precision, empty.recall, empty.f1) == (None, None, None)


def test_evaluate_lists_split_and_impure_clusters_and_unknown_ids() -> None:
    result = evaluate(run_of(ROWS), cluster_labels([*TRUTH, ["x", "y"]]), examples=1)
    # {a,b,c}: c is apart from a; {x,y}: neither is a document of the run.
    assert result["split_reference_clusters"] == {"count": 2, "examples": [["a", "c"]]}
    # {d,e,f}: f is in no truth cluster.
    assert result["impure_predicted_clusters"] == {"count": 1, "examples": [["d", "f"]]}
    assert result["unknown_reference_ids"] == {"count": 2, "examples": ["x"]}
    assert result["reference_duplicates"] == 4 and result["predicted_duplicates"] == 3
    with pytest.raises(EvaluationError, match="another corpus"):
        evaluate(run_of(ROWS), cluster_labels([["x", "y"]]))


def test_agreement_between_two_runs() -> None:
    # Run A: {k1: d1, d2} and {k2: d3}. Run B splits d2 off and keeps d1 instead of k1.
    a_rows = {"d1": "k1", "d2": "k1", "d3": "k2"}
    b_rows = {"k1": "d1", "d3": "k2"}
    b = run_of(b_rows, others=("d2",))
    result = evaluate(b, predicted_labels(a_rows), a_rows)
    # A's pairs: k1d1, k1d2, d1d2, k2d3 = 4; B's: k1d1, k2d3 = 2, both in A: P = 1, R = 2/4.
    assert result["pair"] == {"tp": 2, "fp": 0, "fn": 2, "precision": 1.0,
                                   "recall": 0.5, "f1": pytest.approx(2 / 3)}
    # Documents: A wants 2 removed from {k1,d1,d2} and 1 from {k2,d3}; B removed k1 and d3.
    assert (result["document"]["tp"], result["document"]["fp"], result["document"]["fn"]) == (
        2, 0, 1)
    # d2 → k1 of A is not inside one cluster of B (d2 is alone there).
    assert result["missing_duplicates"] == {"count": 1, "examples": [["d2", "k1"]]}
    assert result["extra_duplicates"] == {"count": 0, "examples": []}


# --------------------------------------------------------------------------- truth files


@pytest.mark.parametrize(("obj", "message"), [
    ([["a", "b"]], "expected a JSON object"),
    ({"threshold": 0.7}, "expected a JSON object"),
    ({"clusters": {"a": 1}}, "must be a list of lists"),
    ({"clusters": [["a", "b"], "c"]}, r"clusters\[1\] is str"),
    ({"clusters": [["a", 1.5]]}, r"clusters\[0\]\[1\] is 1.5"),
    ({"clusters": [["a", True]]}, r"clusters\[0\]\[1\] is True"),
    ({"clusters": [["a", "b"], ["c", "a"]]}, r"in clusters\[0\] and clusters\[1\]"),
    ({"clusters": [["a", "b", "a"]]}, "listed twice"),
    ({"clusters": [], "pairs": {"a": "b"}}, "must be a list of \\[id, id, jaccard\\]"),
    ({"clusters": [], "pairs": [["a", "b"]]}, r"pairs\[0\] is list"),
    ({"clusters": [], "pairs": [["a", "b", 1.5]]}, r"pairs\[0\]\[2\] is 1.5"),
    ({"clusters": [], "pairs": [["a", "b", "0.9"]]}, r"pairs\[0\]\[2\] is '0.9'"),
    ({"clusters": [], "pairs": [["a", None, 0.9]]}, r"pairs\[0\]\[1\] is None"),
    ({"clusters": [], "pairs": [["a", "a", 0.9]]}, "with itself"),
    ({"clusters": [], "identical": [["a", "b"], ["b", "c"]]}, "groups must be disjoint"),
])
def test_malformed_truth_files_are_clear_errors(obj: object, message: str) -> None:
    with pytest.raises(TruthFileError, match=message):
        parse_truth(obj, "t.json")


def test_truth_ids_may_be_integers_and_extra_keys_are_metadata() -> None:
    truth = parse_truth({"threshold": 0.7, "clusters": [[12345, "a"], ["z"]]}, "t.json")
    assert truth.clusters == [["12345", "a"], ["z"]] and truth.metadata == {"threshold": 0.7}
    # A one-document cluster has no pair and nothing to remove.
    assert cluster_labels(truth.clusters) == {"12345": 0, "a": 0}


# Truth with scored pairs: a and a2 have one shingle set (a stands for both in "pairs"), the
# clusters are the components of the pairs >= 0.7: {a, a2, b, c} and {x, y}.
SCORED_TRUTH = {
    "threshold": 0.7, "pairs_min": 0.5,
    "metadata": {"candidates": {"method": "minhash_lsh", "bands": 64, "rows": 4}},
    "clusters": [["a", "a2", "b", "c"], ["x", "y"]],
    "identical": [["a", "a2"]],
    "pairs": [["a", "b", 0.82], ["b", "c", 0.7], ["c", "d", 0.6999], ["e", "f", 0.52],
              ["x", "y", 0.9999]],
}
# The run: {a: a2, b, d} and {f: e}; c, x and y alone.
SCORED_ROWS = {"a2": "a", "b": "a", "d": "a", "e": "f"}


def test_similarity_bins_by_hand() -> None:
    truth = parse_truth(SCORED_TRUTH, "t.json")
    bins = similarity_bins(truth, predicted_labels(SCORED_ROWS))
    assert [(b["lo"], b["hi"]) for b in bins] == [
        (0.5, 0.55), (0.55, 0.6), (0.6, 0.65), (0.65, 0.7), (0.7, 0.75), (0.75, 0.8),
        (0.8, 0.85), (0.85, 0.9), (0.9, 0.95), (0.95, 1.0)]
    got = {b["lo"]: (b["pairs"], b["detected"], b["same_truth_cluster"]) for b in bins
           if b["pairs"]}
    assert got == {
        0.5: (1, 1, 0),   # e ~ f, 0.52: in one run cluster, below the truth's threshold
        0.65: (1, 0, 0),  # c ~ d, 0.6999: just below 0.7 (not rounded up into the next bin)
        0.7: (1, 0, 1),   # b ~ c, exactly 0.7: a truth edge; c was missed by the run
        0.8: (2, 2, 2),   # a ~ b stands for a ~ b and a2 ~ b (a2 is identical to a)
        0.95: (2, 1, 2),  # x ~ y at 0.9999 (missed) and the identical pair a ~ a2 (found)
    }
    assert [b["rate"] for b in bins if b["lo"] in (0.5, 0.7, 0.95)] == [1.0, 0.0, 0.5]
    assert all(b["rate"] is None for b in bins if not b["pairs"])
    # The truth candidates' S-curve at each bin's lower edge, from the file's metadata.
    assert bins[0]["truth_candidate_recall"] == pytest.approx(1 - miss_probability(0.5, 64, 4))


def test_similarity_bins_start_at_the_lower_bound_and_need_pairs() -> None:
    # No pairs_min: the lowest pair sets it; the first bin starts there, not at its edge.
    truth = parse_truth({"clusters": [["a", "b"]], "pairs": [["a", "b", 0.9], ["a", "c", 0.63]]},
                        "t.json")
    bins = similarity_bins(truth, predicted_labels({"b": "a"}))
    assert (bins[0]["lo"], bins[0]["hi"], bins[-1]["hi"]) == (0.63, 0.65, 1.0)
    assert [b["pairs"] for b in bins] == [1, 0, 0, 0, 0, 0, 1, 0]  # 0.63 and 0.9
    assert bins[0]["truth_candidate_recall"] is None  # no candidate metadata in the file
    # A truth file without pairs (the format before them) has no bins.
    old = parse_truth({"threshold": 0.7, "clusters": [["a", "b"]]}, "t.json")
    assert old.pairs is None and old.identical == [] and old.pairs_min is None
    assert similarity_bins(old, predicted_labels({"b": "a"})) == []


def test_by_similarity_in_evaluation_json_and_printed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = write_output(tmp_path / "out", ["a", "c", "f", "x", "y"], SCORED_ROWS)
    truth = tmp_path / "truth.json"
    truth.write_text(json.dumps(SCORED_TRUTH))
    assert main(["-q", "evaluate", str(out), "--truth", str(truth)]) == 0
    printed = capsys.readouterr().out
    assert "detection by exact Jaccard" in printed
    assert re.search(r"0\.80-0\.85\s+2\s+2\s+1\.000\s+2", printed), printed
    assert re.search(r"0\.55-0\.60\s+0\s+0\s+–", printed), printed
    entry = json.loads((out / "evaluation.json").read_text())["evaluations"][0]
    assert entry["kind"] == "truth" and len(entry["by_similarity"]) == 10
    assert entry["by_similarity"][-1] == {
        "lo": 0.95, "hi": 1.0, "pairs": 2, "detected": 1, "rate": 0.5, "same_truth_cluster": 2,
        "truth_candidate_recall": pytest.approx(1.0)}
    # The same run against a truth file without pairs: scored as before, no bins, a note.
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"clusters": SCORED_TRUTH["clusters"]}))
    assert main(["-q", "evaluate", str(out), "--truth", str(old)]) == 0
    printed = capsys.readouterr().out
    assert "detection by exact Jaccard" not in printed
    assert "lists no scored pairs" in printed
    entries = json.loads((out / "evaluation.json").read_text())["evaluations"]
    assert [("by_similarity" in e) for e in entries] == [False, True]  # sorted by reference


def test_invalid_json_truth_file_via_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                         ) -> None:
    out = write_output(tmp_path / "out", ["a", "b"], {})
    bad = tmp_path / "truth.json"
    bad.write_text('{"clusters": [["a", "b"]')
    assert main(["-q", "evaluate", str(out), "--truth", str(bad)]) == 2
    assert "not valid JSON" in capsys.readouterr().err


def write_output(out: Path, kept: list[str], rows: dict[str, str]) -> Path:
    """A minimal finished output directory in the ND output contract."""
    (out / "kept").mkdir(parents=True)
    pq.write_table(pa.table({"id": kept, "text": ["t"] * len(kept)}),
                   out / "kept" / "part-0.parquet")
    if rows:
        (out / "duplicates").mkdir()
        pq.write_table(pa.table({"id": list(rows), "duplicate_of": list(rows.values())}),
                       out / "duplicates" / "part-0.parquet")
    (out / "summary.json").write_text(json.dumps({"read": len(kept) + len(rows),
                                                  "duplicates": len(rows)}))
    (out / "_SUCCESS").write_text("")
    return out


def test_read_output_checks_the_contract(tmp_path: Path) -> None:
    out = write_output(tmp_path / "ok", ["a", "d", "c"], ROWS)
    run = read_output(str(out))
    assert run.duplicate_of == ROWS and run.doc_ids == frozenset("abcdef")
    (out / "_SUCCESS").unlink()
    with pytest.raises(EvaluationError, match="no _SUCCESS"):
        read_output(str(out))
    with pytest.raises(EvaluationError, match="does not exist"):
        read_output(str(tmp_path / "missing"))
    chained = write_output(tmp_path / "chained", ["a"], {"b": "a", "c": "b"})
    with pytest.raises(EvaluationError, match="itself a removed document"):
        read_output(str(chained))


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


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory, benchmark_db: Path) -> tuple[Path, int]:
    """One recorded `ndcl dedup` of the demo corpus: (output directory, run id)."""
    out = tmp_path_factory.mktemp("demo") / "out"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["-q", "dedup", "--input", str(DEMO_CORPUS), "--output", str(out)]) == 0
    found = re.search(r"recorded as run (\d+)", printed.getvalue())
    assert found, printed.getvalue()
    return out, int(found.group(1))


def accuracy_rows(run_id: int) -> list[AccuracyMetric]:
    engine = open_engine(database_url(None))
    try:
        with Session(engine) as session:
            return list(session.scalars(select(AccuracyMetric).where(
                AccuracyMetric.run_id == run_id).order_by(AccuracyMetric.reference,
                                                          AccuracyMetric.level)))
    finally:
        engine.dispose()


def rewrite_duplicates(src: Path, dst: Path, rows: dict[str, str]) -> Path:
    """A copy of output ``src`` whose duplicates are ``rows`` (kept/ adjusted to match)."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("evaluation.json"))
    everything = {*pq.read_table(src / "kept", columns=["id"]).column("id").to_pylist(),
                  *pq.read_table(src / "duplicates", columns=["id"]).column("id").to_pylist()}
    shutil.rmtree(dst / "kept")
    shutil.rmtree(dst / "duplicates")
    (dst / "kept").mkdir()
    (dst / "duplicates").mkdir()
    kept = sorted(everything - set(rows))
    pq.write_table(pa.table({"id": kept}), dst / "kept" / "part-0.parquet")
    pq.write_table(pa.table({"id": list(rows), "duplicate_of": list(rows.values())}),
                   dst / "duplicates" / "part-0.parquet")
    return dst


@pytest.mark.slow
def test_evaluate_demo_run_against_truth_is_perfect_and_stored(
        demo_run: tuple[Path, int], capsys: pytest.CaptureFixture[str]) -> None:
    out, run_id = demo_run
    assert main(["-q", "evaluate", str(out), "--truth", str(DEMO_TRUTH)]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"pair\s+447\s+0\s+0\s+1\.0000\s+1\.0000\s+1\.0000", printed), printed
    assert re.search(r"document\s+277\s+0\s+0\s+1\.0000\s+1\.0000\s+1\.0000", printed), printed
    assert f"AccuracyMetric rows (pair, document) of run {run_id}" in printed
    rows = accuracy_rows(run_id)
    assert [(r.level, r.tp, r.fp, r.fn, r.f1) for r in rows] == [
        ("document", 277, 0, 0, 1.0), ("pair", 447, 0, 0, 1.0)]
    assert rows[0].reference == str(DEMO_TRUTH) and rows[0].precision == rows[0].recall == 1.0
    # By run id, the same evaluation replaces its rows instead of adding more.
    assert main(["-q", "evaluate", str(run_id), "--truth", str(DEMO_TRUTH)]) == 0
    assert len(accuracy_rows(run_id)) == 2
    saved = json.loads((out / "evaluation.json").read_text())["evaluations"]
    assert [(e["reference"], e["run_id"], e["stored"]) for e in saved] == [
        (str(DEMO_TRUTH), run_id, True)]
    assert saved[0]["pair"]["f1"] == saved[0]["document"]["f1"] == 1.0
    # Per similarity: every pair >= 0.7 detected; below it only the pairs that one truth
    # cluster holds through a third document (verification rejects the direct edges).
    bins = saved[0]["by_similarity"]
    assert sum(b["pairs"] for b in bins) == 448
    assert all(b["rate"] == 1.0 for b in bins if b["lo"] >= 0.7)
    assert all(b["detected"] == b["same_truth_cluster"] for b in bins)


@pytest.mark.slow
def test_evaluate_against_another_run(demo_run: tuple[Path, int], tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    out, run_id = demo_run
    rows = read_output(str(out)).duplicate_of
    clusters: dict[str, list[str]] = {}
    for doc_id, kept in rows.items():
        clusters.setdefault(kept, [kept]).append(doc_id)
    # Same clusters, other kept member (the largest id): perfect agreement.
    other_keep = {d: max(c) for c in clusters.values() for d in c if d != max(c)}
    relabelled = rewrite_duplicates(out, tmp_path / "relabelled", other_keep)
    assert main(["-q", "evaluate", str(relabelled), "--against", str(run_id)]) == 0
    printed = capsys.readouterr().out
    assert "not stored in the benchmark database: no run recorded" in printed
    result = json.loads((relabelled / "evaluation.json").read_text())["evaluations"][0]
    assert result["reference"] == f"run:{run_id}" and result["stored"] is False
    assert result["pair"]["f1"] == result["document"]["f1"] == 1.0
    assert result["missing_duplicates"]["count"] == result["extra_duplicates"]["count"] == 0
    # A run that missed the last two members of the five largest clusters (as CL→ND misses
    # duplicates that fell into different clusters).
    largest = sorted(clusters.values(), key=lambda c: (-len(c), c[0]))[:5]
    dropped = {c[-1] for c in largest} | {c[-2] for c in largest}
    partial = rewrite_duplicates(out, tmp_path / "partial",
                                 {d: k for d, k in rows.items() if d not in dropped})
    assert main(["-q", "evaluate", str(partial), "--against", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "not in one cluster of the run: 10 (e.g." in printed
    result = json.loads((partial / "evaluation.json").read_text())["evaluations"][0]
    assert result["reference"] == f"run:{run_id}"
    assert result["document"] == {"tp": 267, "fp": 0, "fn": 10, "precision": 1.0,
                                       "recall": pytest.approx(267 / 277),
                                       "f1": pytest.approx(2 * 267 / (2 * 267 + 10))}
    assert result["pair"]["precision"] == 1.0 and result["pair"]["recall"] < 1.0
    # Stored on the recorded run when it is the one evaluated.
    assert main(["-q", "evaluate", str(run_id), "--against", str(partial)]) == 0
    # The full run against the partial one: the 10 extra removals are its false positives.
    stored = {r.level: r for r in accuracy_rows(run_id) if r.reference == f"output:{partial}"}
    assert (stored["document"].tp, stored["document"].fp, stored["document"].fn) == (267, 10, 0)
    assert stored["pair"].fp > 0 and stored["pair"].fn == 0
