"""Shared by the ``beam_pipeline`` tests: the planted truth and runs of the evaluation tests
and a minimal finished output, and the benchmark database of recorded runs the report tests
read (the ``recorded`` fixture)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy.orm import Session

from beam_pipeline import db
from tests.conftest import REPO

DEMO_TRUTH = REPO / "data" / "demo" / "truth.json"

# Truth {a,b,c}, {d,e}; the run keeps a and d and removes b (→ a) and e, f (→ d).
TRUTH = [["a", "b", "c"], ["d", "e"]]
ROWS = {"b": "a", "e": "d", "f": "d"}


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


NOTE = '<script>alert("x")</script> & more'


INPUT = "data/demo/c4-demo.00000-of-00001.json.gz"


def _summary(workflow: str | None, kept: int, exact: int, near: int, wall: float,
             stages: dict[str, float], clustered: bool = True) -> dict[str, Any]:
    """The shape of a real summary.json (beam_pipeline/run.py), with made-up numbers."""
    summary: dict[str, Any] = {
        "read": kept + exact + near + 10, "kept": kept, "duplicates": exact + near,
        "duplicates_exact": exact, "duplicates_near": near, "rejected": 10,
        "rejected_by_reason": {"bad_json": 10}, "threshold": 0.7, "num_perm": 256,
        "ngram": 5, "bands": 32, "rows": 8, "stage_seconds": stages, "wall_seconds": wall,
        "config": {"dedup": {"threshold": 0.7, "num_perm": 256, "ngram": 5}},
        "config_hash": "10492abc94529e98",
    }
    if workflow is not None:
        summary["workflow"] = workflow
    if clustered:
        summary["cluster"] = {
            "k1": 4, "k2": 3, "backend": "local", "sample": kept,
            "level_1": {"k": 4, "n": kept},
            "level_2": {str(a): {"k": 3, "n": n} for a, n in enumerate((400, 200, 150, 50))},
        }
    return summary


TOP_TERMS = {"0": ["orbit", "rocket", "nasa"], "1": ["recipe", "oven", "<b>flour</b>"]}


def _clustered(summary: dict[str, Any]) -> dict[str, Any]:
    """``summary`` with the cluster section of today's runs: kept sizes, fits, top terms."""
    summary["cluster"] = {
        "k1": 2, "k2": 2, "backend": "local", "sample": 830,
        "level_1": {"k": 2, "top_terms": TOP_TERMS, "sizes": {
            "count": 2, "min": 330, "median": 415, "max": 500, "sizes": {"0": 330, "1": 500}}},
        "level_2": {"k": 2, "fits": {"0": {"k": 1, "top_terms": {"0": ["orbit"]}},
                                     "1": {"k": 2, "top_terms": {"0": ["oven"], "1": ["bake"]}}},
                    "sizes": {"count": 3, "min": 200, "median": 300, "max": 330,
                              "sizes": {"0/0": 330, "1/0": 300, "1/1": 200}}}}
    return summary


def _resources(seconds: float, peak_cpu: float) -> dict[str, Any]:
    samples = [{"t": 0.5 * i, "cpu_percent": peak_cpu * (0.5 + 0.5 * math.sin(i / 3)),
                "rss_bytes": (300 + 15 * i) << 20} for i in range(int(seconds * 2))]
    return {"cpu_percent_avg": peak_cpu / 2, "cpu_percent_peak": peak_cpu,
            "rss_bytes_avg": 500 << 20, "rss_bytes_peak": samples[-1]["rss_bytes"],
            "samples_json": json.dumps(samples)}


def _record(url: str, summary: dict[str, Any], command: str, argv: list[str],
            output: str | None, resources: dict[str, Any] | None = None,
            notes: str | None = None) -> int:
    result = db.record_run(url, summary, command=command, argv=argv, input_patterns=[INPUT],
                           output=output, runner="direct", workers=1, resources=resources,
                           input_bytes=12345, code_version="abc1234", notes=notes)
    assert result.recorded, result.error
    assert result.run_id is not None
    return result.run_id


def _write_kept(out: Path, kept: int) -> None:
    """OUT/kept with cluster labels for ``kept`` documents (sizes 400/200/150/rest)."""
    (out / "kept").mkdir(parents=True)
    a = np.repeat(np.arange(4), [400, 200, 150, kept - 750])
    b = np.arange(kept) % 3
    pq.write_table(pa.table({"id": [f"d{i}" for i in range(kept)], "cluster_A": a,
                             "cluster_B": b}), out / "kept" / "part-0.parquet")


@pytest.fixture
def recorded(tmp_path: Path) -> dict[str, Any]:
    """A database with an old and a new ND→CL run, a CL→ND, a dedup-only and a cluster-only."""
    url = f"sqlite:///{tmp_path / 'bench.db'}"
    nd_stages = {"read": 0.03, "compute_features": 0.3, "exact": 0.001, "lsh": 0.005,
                 "verify": 0.06, "components": 0.0, "resolve": 0.02, "embed": 0.2,
                 "cluster_fit": 12.0, "write_outputs": 0.05}
    cl_stages = {**nd_stages, "scope": 0.002, "cluster_fit": 9.0}
    out_nd = tmp_path / "out-nd"
    ids = {
        "old_nd": _record(url, _summary("nd_cl", 790, 120, 80, 40.0, nd_stages), "run",
                          ["run", "--workflow", "nd_cl"], str(tmp_path / "old")),
        "nd": _record(url, _summary("nd_cl", 800, 120, 70, 30.0, nd_stages), "run",
                      ["run", "--workflow", "nd_cl", "--output", str(out_nd)], str(out_nd),
                      _resources(30.0, 110.0), notes=NOTE),
        "cl": _record(url, _clustered(_summary("cl_nd", 830, 110, 50, 25.0, cl_stages)), "run",
                      ["run", "--workflow", "cl_nd", "--dedup-scope", "cluster_B"],
                      str(tmp_path / "out-cl"), _resources(25.0, 100.0)),
        "dedup": _record(url, _summary(None, 800, 120, 70, 3.0, {
            k: v for k, v in nd_stages.items() if k not in ("embed", "cluster_fit")},
            clustered=False), "dedup", ["dedup"], str(tmp_path / "out-dd")),
        "cluster": _record(url, _summary("cl", 990, 0, 0, 22.0, {
            "read": 0.03, "embed": 0.2, "cluster_fit": 15.0}), "cluster", ["cluster"], None,
            _resources(22.0, 130.0)),
    }
    _write_kept(out_nd, 800)
    (out_nd / "evaluation.json").write_text(json.dumps({"evaluations": [{
        "reference": "truth.json", "kind": "truth",
        "pair": {"recall": 0.97, "by_similarity": [
            {"lo": 0.7, "hi": 0.8, "pairs": 40, "found": 36},
            {"lo": 0.8, "hi": 0.9, "pairs": 30, "found": 30}]}}]}))
    engine = db.open_engine(url)
    with Session(engine) as session, session.begin():
        session.add_all([
            db.AccuracyMetric(run_id=ids["nd"], reference="data/demo/truth.json", level="pair",
                              tp=97, fp=0, fn=3, precision=1.0, recall=0.97, f1=0.985),
            db.AccuracyMetric(run_id=ids["cl"], reference=f"run:{ids['nd']}", level="pair",
                              tp=80, fp=0, fn=20, precision=1.0, recall=0.8, f1=0.889),
        ])
    engine.dispose()
    return {"url": url, "ids": ids, "tmp": tmp_path}
