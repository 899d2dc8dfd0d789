"""Cluster quality end to end: the measures of ``ndcl cluster`` / ``ndcl run`` in
summary.json and the ClusterMetric rows, against scikit-learn on the kept documents."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sqlalchemy import select
from sqlalchemy.orm import Session

from beam_pipeline import db
from beam_pipeline.cli import main
from tests.fixtures import topic_records, write_corpus


def labelled_records(per_topic: int = 40, seed: int = 9) -> list[dict]:
    """Planted topics with a ``label`` (every 9th document unlabelled) and a ``topic`` field,
    and exact copies of a few documents for the dedup orderings to remove."""
    records = topic_records(per_topic, seed, shuffle=False)
    for i, record in enumerate(records):
        if (i % per_topic) % 9:
            record["label"] = record["topic"]
    records += [dict(r, url=r["url"] + "/copy") for r in records[::17]]
    random.Random(seed).shuffle(records)
    return records


@pytest.fixture(scope="module")
def labelled_corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_corpus(tmp_path_factory.mktemp("labelled"), labelled_records(), files=2)


def _cluster_rows(output: Path) -> list[db.ClusterMetric]:
    engine = db.open_engine(db.database_url(None))  # NDCL_DB_URL: tests/conftest.py
    try:
        with Session(engine) as session:
            run = session.scalars(select(db.BenchmarkRun).where(
                db.BenchmarkRun.output == str(output)).order_by(
                db.BenchmarkRun.id.desc())).first()
            assert run is not None
            rows = sorted(run.cluster_metrics, key=lambda c: c.level)
            session.expunge_all()
            return rows
    finally:
        engine.dispose()


def _check_against_kept(out: Path, label: str) -> dict:
    summary = json.loads((out / "summary.json").read_text())
    kept = pq.read_table(out / "kept").to_pylist()
    labelled = [r for r in kept if r.get(label) is not None]
    truth = [r[label] for r in labelled]
    level_1, level_2 = summary["cluster"]["level_1"], summary["cluster"]["level_2"]
    assert summary["cluster"]["labelled_docs"] == len(labelled) == level_1["labelled_docs"]
    assert level_1["nmi"] == pytest.approx(
        normalized_mutual_info_score(truth, [r["cluster_A"] for r in labelled]), abs=1e-12)
    assert level_2["ari"] == pytest.approx(adjusted_rand_score(
        truth, [f"{r['cluster_A']}/{r['cluster_B']}" for r in labelled]), abs=1e-12)
    rows = _cluster_rows(out)
    assert [(r.level, r.k) for r in rows] == [(1, 3), (2, 2)]
    for row, level in zip(rows, (level_1, level_2)):
        assert row.nmi is not None and row.ari is not None and row.silhouette is not None
        assert (row.nmi, row.ari, row.silhouette) == pytest.approx(
            (level["nmi"], level["ari"], level["silhouette"]))
        sizes = json.loads(row.sizes_json)
        assert sum(sizes["sizes"].values()) == summary["kept"] == len(kept)
        assert sizes["labelled_docs"] == len(labelled)
    counted: dict[str, int] = {}
    for r in kept:
        key = f"{r['cluster_A']}/{r['cluster_B']}"
        counted[key] = counted.get(key, 0) + 1
    assert json.loads(rows[1].sizes_json)["sizes"] == counted
    return summary


def test_cli_cluster_measures_the_labelled_corpus(labelled_corpus: list[Path], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cl"
    assert main(["cluster", "--input", *map(str, labelled_corpus), "--output", str(out),
                 "--kmeans-backend", "local", "--k1", "3", "--k2", "2"]) == 0
    summary = _check_against_kept(out, "label")
    assert summary["kept"] == summary["read"] == 128 and summary["cluster"]["labelled_docs"] < 128
    assert summary["cluster"]["level_1"]["nmi"] == pytest.approx(1.0)  # the planted topics
    # The table's column width follows its longest row name: match the row, not the spacing.
    assert re.search(r"cluster quality +NMI A=1\.000 B=", capsys.readouterr().out)


def test_cl_nd_measures_only_the_kept_documents(labelled_corpus: list[Path],
                                                tmp_path: Path) -> None:
    out = tmp_path / "cl_nd"
    assert main(["-q", "run", "--workflow", "cl_nd", "--input", *map(str, labelled_corpus),
                 "--output", str(out), "--kmeans-backend", "local", "--k1", "3", "--k2", "2",
                 "--label-field", "topic"]) == 0
    summary = _check_against_kept(out, "topic")
    assert summary["duplicates"] == 8 and summary["cluster"]["labelled_docs"] == 120
    assert summary["cluster"]["label_field"] == "topic"
