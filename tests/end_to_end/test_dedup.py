"""End-to-end tests: the ``ndcl dedup`` CLI into a temp dir, checked against the
single-process reference (same hashing, union-find components), across runner modes, on bad
input, and on reruns."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from beam_pipeline.cli import main
from tests.conftest import DEMO_CORPUS, REPO
from tests.fixtures import planted_records, threshold_pair_records, write_corpus
from tests.reference import read_docs, reference_dedup

pytestmark = pytest.mark.slow


def run_cli(*args: str) -> int:
    return main(["-q", "dedup", *args])


def load_output(out: Path) -> tuple[dict, list[dict], list[dict], list[dict]]:
    summary = json.loads((out / "summary.json").read_text())
    kept = pq.read_table(out / "kept").to_pylist() if (out / "kept").exists() else []
    dups = pq.read_table(out / "duplicates").to_pylist() if (out / "duplicates").exists() else []
    rejected = [json.loads(line) for f in sorted((out / "rejected").glob("*.jsonl"))
                for line in f.read_text().splitlines()] if (out / "rejected").exists() else []
    return summary, kept, dups, rejected


def as_map(dups: list[dict]) -> dict[str, tuple[str, str]]:
    return {d["id"]: (d["duplicate_of"], d["reason"]) for d in dups}


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_corpus(tmp_path_factory.mktemp("planted"), planted_records(), files=3)


def test_pairs_just_above_the_threshold_are_found(tmp_path: Path) -> None:
    """40 planted pairs of Jaccard 0.70-0.75: the default banding (recall floor, 29 x 5 at
    0.7) finds every one; the old weighted default 32 x 8 (P(0.7) = 0.85) misses some."""
    corpus = write_corpus(tmp_path / "in", threshold_pair_records(), files=1)
    expected = {f"p{i}b": (f"p{i}a", "near") for i in range(40)}
    out = tmp_path / "out"
    assert run_cli("--input", *map(str, corpus), "--output", str(out)) == 0
    summary, _, dups, _ = load_output(out)
    assert (summary["bands"], summary["rows"]) == (29, 5)
    assert as_map(dups) == expected
    old = tmp_path / "old"
    assert run_cli("--input", *map(str, corpus), "--output", str(old),
                   "--bands", "32", "--rows", "8") == 0
    missed = set(expected) - set(as_map(load_output(old)[2]))
    assert 0 < len(missed) < 20


@pytest.mark.parametrize("verify", ["exact", "signature", "none"])
def test_duplicates_equal_reference(planted: list[Path], tmp_path: Path, verify: str) -> None:
    out = tmp_path / "out"
    assert run_cli("--input", *map(str, planted), "--output", str(out), "--verify", verify) == 0
    summary, kept, dups, rejected = load_output(out)
    weights = (0.5, 0.5) if verify == "none" else None
    expected = reference_dedup(read_docs(planted), verify=verify, weights=weights)
    assert as_map(dups) == expected
    assert summary["read"] == summary["kept"] + summary["duplicates"] + summary["rejected"]
    assert summary["duplicates"] == len(expected) and summary["rejected"] == len(rejected) == 0
    kept_ids = {k["id"] for k in kept}
    assert kept_ids.isdisjoint(expected) and len(kept_ids) == len(kept)
    # Every duplicate points at a kept document.
    assert {d for d, _ in expected.values()} <= kept_ids
    assert summary["duplicates_exact"] > 0 and summary["duplicates_near"] > 0
    # The chain is one component: its 12 links end up pointing at one document.
    chain = [k for k in kept if k["url"].startswith("https://chain.")]
    assert len(chain) == 1
    # Short texts are compared as one shingle, texts without a token are kept.
    urls = {k["url"] for k in kept}
    assert {"https://empty.example/1", "https://empty.example/2"} <= urls
    assert summary["kept_untokenized"] == 2
    assert sum(u.startswith("https://short.") for u in urls) == 1


def test_explicit_ids_and_columns(planted: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run_cli("--input", *map(str, planted), "--output", str(out)) == 0
    _, kept, dups, _ = load_output(out)
    ids = {k["id"] for k in kept} | {d["id"] for d in dups}
    assert "custom-b" in ids and "12345" in ids
    assert "part-00.json:1" in ids
    assert list(kept[0])[:4] == ["id", "text", "url", "timestamp"]
    assert set(dups[0]) >= {"id", "duplicate_of", "reason", "similarity"}
    near = [d for d in dups if d["reason"] == "near"]
    assert all(0.0 < d["similarity"] <= 1.0 for d in near)
    # Similarity is measured to the kept document: far ends of the chain are below the
    # threshold although they are linked to it through the chain.
    assert any(d["similarity"] < 0.7 for d in near if d["url"].startswith("https://chain."))


def test_demo_corpus_matches_reference_and_truth(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    assert run_cli("--input", str(DEMO_CORPUS), "--output", str(out)) == 0
    summary, _, dups, _ = load_output(out)
    assert as_map(dups) == reference_dedup(read_docs([DEMO_CORPUS]))
    truth = json.loads((REPO / "data" / "demo" / "truth.json").read_text())
    precision, recall = pair_scores(dups, truth["clusters"])
    assert precision >= 0.98 and recall >= 0.98, (precision, recall)
    assert summary["read"] == 1308


def pair_scores(dups: list[dict], truth_clusters: list[list[str]]) -> tuple[float, float]:
    """Pair-level precision and recall of predicted duplicate clusters against truth."""
    predicted: dict[str, set[str]] = {}
    for d in dups:
        predicted.setdefault(d["duplicate_of"], {d["duplicate_of"]}).add(d["id"])

    def pairs(clusters: list) -> set[tuple[str, str]]:
        return {(a, b) for c in clusters for a in c for b in c if a < b}

    got, want = pairs(list(predicted.values())), pairs(truth_clusters)
    hits = len(got & want)
    return hits / max(len(got), 1), hits / max(len(want), 1)


def test_in_memory_and_multiprocess_outputs_identical(planted: list[Path],
                                                      tmp_path: Path) -> None:
    outs = []
    for name, extra in [("mem", []), ("mp", ["--direct_num_workers=2",
                                             "--direct_running_mode=multi_processing"])]:
        out = tmp_path / name
        assert run_cli("--input", *map(str, planted), "--output", str(out), *extra) == 0
        outs.append(out)
    for sub in ("kept", "duplicates"):
        files_a = sorted(p.name for p in (outs[0] / sub).iterdir())
        files_b = sorted(p.name for p in (outs[1] / sub).iterdir())
        assert files_a == files_b
        for name in files_a:
            assert (outs[0] / sub / name).read_bytes() == (outs[1] / sub / name).read_bytes()
    _, kept_a, dups_a, _ = load_output(outs[0])
    _, kept_b, dups_b, _ = load_output(outs[1])
    key = lambda row: row["id"]  # noqa: E731
    assert sorted(kept_a, key=key) == sorted(kept_b, key=key)
    assert sorted(dups_a, key=key) == sorted(dups_b, key=key)


def test_bad_input_is_rejected_and_accounted(tmp_path: Path) -> None:
    good = [{"text": f"good document number {i} " + "alpha beta gamma delta " * 5}
            for i in range(5)]
    lines = [json.dumps(r).encode() for r in good[:2]]
    lines += [
        b'{"text": "broken json',
        json.dumps({"url": "no text"}).encode(),
        json.dumps({"text": 42}).encode(),
        b'{"text": "bad \xff\xfe utf8"}',
        b"   ",
        json.dumps(["not", "an", "object"]).encode(),
        json.dumps({"text": "x" * 5000}).encode(),
        b'{"text": "lone surrogate \\ud800 here"}',
    ]
    lines += [json.dumps(r).encode() for r in good[2:]]
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "bad.json").write_bytes(b"\n".join(lines) + b"\n")
    (inputs / "empty.json").write_bytes(b"")
    full = gzip.compress(b"".join(json.dumps(r).encode() + b"\n" for r in good * 40))
    (inputs / "truncated.json.gz").write_bytes(full[: len(full) // 2])
    out = tmp_path / "out"
    assert run_cli("--input", str(inputs / "*"), "--output", str(out),
                   "--max-doc-bytes", "2000") == 0
    summary, kept, _, rejected = load_output(out)
    reasons = {(Path(r["source"]).name, r["line"]): r["reason"] for r in rejected}
    assert reasons[("bad.json", 3)] == "bad_json"
    assert reasons[("bad.json", 4)] == "missing_text"
    assert reasons[("bad.json", 5)] == "text_not_string"
    assert reasons[("bad.json", 6)] == "invalid_utf8"
    assert reasons[("bad.json", 7)] == "blank_line"
    assert reasons[("bad.json", 8)] == "not_object"
    assert reasons[("bad.json", 9)] == "too_large"
    assert reasons[("bad.json", 10)] == "invalid_unicode"
    truncated = [r for r in rejected if Path(r["source"]).name == "truncated.json.gz"]
    assert [r["reason"] for r in truncated] == ["read_error"]
    assert all(len(r["raw"]) <= 1000 for r in rejected)
    assert summary["read"] == summary["kept"] + summary["duplicates"] + summary["rejected"]
    assert summary["rejected"] == len(rejected) == 9
    # The good documents of bad.json survive, and the readable start of the gzip is used.
    assert {k["id"] for k in kept} >= {"bad.json:1", "bad.json:2", "bad.json:11"}
    truncated_read = summary["read"] - 13
    assert truncated_read > 1


def test_no_matching_input_is_a_clear_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "beam_pipeline.cli", "dedup", "--input",
         str(tmp_path / "nothing-*.json"), "--output", str(tmp_path / "out")],
        capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2
    assert "matches no file" in proc.stderr and "nothing-*.json" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_rerun_replaces_output_and_failed_run_keeps_previous(
        planted: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    assert run_cli("--input", str(planted[0]), "--output", str(out)) == 0
    first = json.loads((out / "summary.json").read_text())
    # A file NDCL did not write stops the rerun (exit 2) and survives it (output safety).
    (out / "stray.txt").write_text("a file of the user's")
    assert run_cli("--input", *map(str, planted), "--output", str(out)) == 2
    assert (out / "stray.txt").read_text() == "a file of the user's"
    (out / "stray.txt").unlink()
    assert run_cli("--input", *map(str, planted), "--output", str(out)) == 0
    second = json.loads((out / "summary.json").read_text())
    assert second["read"] > first["read"]
    assert (out / "_SUCCESS").exists()
    # A run that fails (a task raises after writing its part files) leaves OUT as it was.
    monkeypatch.setenv("NDCL_FAULTS", f"write_fail={tmp_path / 'fault-marker'}")
    assert run_cli("--input", *map(str, planted), "--output", str(out)) == 1
    assert "InjectedFault" in capsys.readouterr().err
    monkeypatch.delenv("NDCL_FAULTS")
    assert json.loads((out / "summary.json").read_text()) == second


def test_keep_longest_policy(tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    base = " ".join(f"word{i}" for i in range(60))
    write_corpus(inputs, [{"id": "a", "text": base},
                          {"id": "b", "text": base + " extra tail words here"}], files=1)
    for policy, kept_id in [("smallest_id", "a"), ("longest", "b")]:
        out = tmp_path / policy
        assert run_cli("--input", str(inputs / "*.json"), "--output", str(out),
                       "--keep", policy) == 0
        _, kept, dups, _ = load_output(out)
        assert [k["id"] for k in kept] == [kept_id]
        assert dups[0]["duplicate_of"] == kept_id


@pytest.mark.shared_data
def test_newsgroups_truth_f1(shared_data: Path, tmp_path: Path) -> None:
    corpus = shared_data / "news" / "20newsgroups-bydate.json.gz"
    truth = json.loads((shared_data / "truth" / "20newsgroups.truth.json").read_text())
    out = tmp_path / "news"
    assert run_cli("--input", str(corpus), "--output", str(out)) == 0
    _, _, dups, _ = load_output(out)
    precision, recall = pair_scores(dups, truth["clusters"])
    f1 = 2 * precision * recall / (precision + recall)
    assert f1 >= 0.98, (precision, recall)
