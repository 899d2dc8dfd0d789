"""`ndcl evaluate` (``beam_pipeline.evaluate``): the evaluation of a run against truth or
another run, and end to end through the CLI (on written outputs, and on the demo corpus with
one recorded `ndcl dedup` run shared by the module)."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
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
    pair_counts,
    predicted_labels,
)
from beam_pipeline.run_outputs import RunOutput, read_output
from beam_pipeline.truth import EvaluationError
from tests.beam_pipeline.conftest import (
    DEMO_TRUTH,
    ROWS,
    SCORED_ROWS,
    SCORED_TRUTH,
    TRUTH,
    write_output,
)
from tests.conftest import DEMO_CORPUS


def run_of(rows: dict[str, str], others: tuple[str, ...] = ("c", "g")) -> RunOutput:
    ids = frozenset(rows) | frozenset(rows.values()) | frozenset(others)
    return RunOutput(path="mem", duplicate_of=dict(rows), doc_ids=ids)


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
