"""``ndcl cluster`` end to end: the local JAX backend is deterministic, a run starts and stops
its own Ray service, and an unreachable service is a clear error."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from sklearn.metrics import adjusted_rand_score

from beam_pipeline.cli import main
from tests.conftest import REPO
from tests.fixtures import topic_records, write_corpus


@pytest.fixture(scope="module")
def topic_corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_corpus(tmp_path_factory.mktemp("topics"), topic_records(), files=2)


def read_kept(out: Path) -> list[dict]:
    return sorted(pq.read_table(out / "kept").to_pylist(), key=lambda r: r["id"])


def test_cli_cluster_local_backend_is_deterministic(topic_corpus: list[Path],
                                                    tmp_path: Path) -> None:
    outs = []
    for name in ("a", "b"):
        out = tmp_path / name
        assert main(["-q", "cluster", "--input", *map(str, topic_corpus), "--output", str(out),
                     "--kmeans-backend", "local", "--k1", "3", "--k2", "2"]) == 0
        outs.append(out)
    kept = read_kept(outs[0])
    assert len(kept) == 120 and list(kept[0])[:6] == ["id", "text", "url", "timestamp",
                                                      "cluster_A", "cluster_B"]
    assert adjusted_rand_score([r["topic"] for r in kept], [r["cluster_A"] for r in kept]) == 1.0
    assert kept == read_kept(outs[1])
    summary = json.loads((outs[0] / "summary.json").read_text())
    assert summary["read"] == summary["kept"] + summary["rejected"] == 120
    assert summary["cluster"]["k1"] == 3
    # Top terms are stored per cluster, the same for the same seed.
    again = json.loads((outs[1] / "summary.json").read_text())
    level_1 = summary["cluster"]["level_1"]["top_terms"]
    assert sorted(level_1) == ["0", "1", "2"] and level_1 == again["cluster"]["level_1"][
        "top_terms"]
    fits = summary["cluster"]["level_2"]["fits"]
    assert sorted(fits) == ["0", "1", "2"] and all(sorted(f["top_terms"]) == ["0", "1"]
                                                   for f in fits.values())
    assert {a: f["top_terms"] for a, f in fits.items()} == {
        a: f["top_terms"] for a, f in again["cluster"]["level_2"]["fits"].items()}
    fit_file = json.loads((outs[0] / "_cluster_fit.json").read_text())
    assert fit_file["A"]["top_terms"] == level_1


@pytest.mark.slow
def test_cli_cluster_starts_and_stops_its_own_ray_service(topic_corpus: list[Path],
                                                          tmp_path: Path) -> None:
    out = tmp_path / "ray"
    proc = subprocess.run(
        [sys.executable, "-m", "beam_pipeline.cli", "cluster", "--input",
         *map(str, topic_corpus), "--output", str(out), "--k1", "3", "--k2", "2"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "starting a local Ray head" in proc.stderr
    assert "stopped the run's K-Means service" in proc.stderr
    kept = read_kept(out)
    assert adjusted_rand_score([r["topic"] for r in kept], [r["cluster_A"] for r in kept]) == 1.0
    local = tmp_path / "local"
    assert main(["-q", "cluster", "--input", *map(str, topic_corpus), "--output", str(local),
                 "--kmeans-backend", "local", "--k1", "3", "--k2", "2"]) == 0
    # The Ray service runs the same JAX code: the same labels.
    assert [(r["cluster_A"], r["cluster_B"]) for r in kept] == [
        (r["cluster_A"], r["cluster_B"]) for r in read_kept(local)]


def test_cli_cluster_unreachable_service_is_a_clear_error(topic_corpus: list[Path],
                                                          tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "beam_pipeline.cli", "cluster", "--input", str(topic_corpus[0]),
         "--output", str(tmp_path / "out"), "--service-address", "127.0.0.1:1",
         "--k1", "2"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 3
    assert "K-Means service unavailable" in proc.stderr
    assert "127.0.0.1:1" in proc.stderr
    assert not (tmp_path / "out").exists()
