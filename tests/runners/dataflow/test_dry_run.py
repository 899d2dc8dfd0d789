"""``runners.dataflow.dry_run``: an offline Dataflow dry run of both orderings."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import apache_beam as beam
import pytest

from beam_pipeline.config import ClusterConfig, DedupConfig
from runners.dataflow.dry_run import dry_run, run_dry_command
from runners.options import RunnerConfigError, count_group_by_keys, pipeline_proto
from tests.conftest import beam_args
from tests.fixtures import planted_records, write_corpus
from tests.graphs import (
    CC_SHUFFLES,
    COMMON_STAGES,
    FIXED_SHUFFLES,
    ND_CL_STAGES,
    ORDERING_SHUFFLES,
    _graph,
)


@pytest.fixture(autouse=True)
def no_flink_jar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runner flags must not depend on whether ``make flink`` ran on this machine."""
    monkeypatch.setenv("NDCL_FLINK_DIR", str(tmp_path / "no-flink"))


def _dataflow_args(*extra: str) -> list[str]:
    return beam_args("--runner", "dataflow", "--project", "ndcl-test", "--region",
                     "us-central1", "--temp-location", "gs://ndcl-test/tmp", "--dry-run",
                     *extra)


def test_dataflow_dry_run_nd_cl(tmp_path: Path) -> None:
    """The DataflowRunner translates the whole graph and builds the job request with
    ``--dry_run=True``; it returns before staging, so no GCS (or emulator) is needed."""
    report = dry_run("run", ["gs://ndcl-test/in/*.json.gz"], "gs://ndcl-test/out/nd_cl",
                     DedupConfig(), ClusterConfig(backend="local"), _dataflow_args(),
                     workflow="nd_cl")
    plain = pipeline_proto(_graph("nd_cl", tmp_path))
    work = [s for s in report.stages if not (s.startswith("Report") and s.endswith("Ended"))]
    assert work[:2] == ["ReadDocuments", "ComputeFeatures"]
    assert set(COMMON_STAGES) | set(ND_CL_STAGES) == set(report.stages)
    # Dataflow's overrides keep every shuffle of the portable graph.
    assert len(report.group_by_keys) == count_group_by_keys(plain) == \
        FIXED_SHUFFLES + ORDERING_SHUFFLES["nd_cl"] + CC_SHUFFLES
    assert report.images == [f"gcr.io/cloud-dataflow/v1beta3/beam_python"
                             f"{sys.version_info.major}.{sys.version_info.minor}_sdk:"
                             f"{beam.__version__}"]
    assert "workflow.tar.gz" in report.staged  # the sdist of --setup-file
    assert report.warnings == ["remote input patterns were not matched (dry run); the run "
                               "matches them when it starts"]
    assert report.job_name.startswith("beamapp-")


def test_dataflow_dry_run_cl_nd_cli_entry(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    corpus = write_corpus(tmp_path / "in", planted_records(seed=2), files=1)
    args = argparse.Namespace(command="run", input=[str(corpus[0])], output=str(tmp_path / "o"),
                              workflow="cl_nd", dedup_scope="cluster_B")
    extra = _dataflow_args("--sdk-container-image", "europe-docker.pkg.dev/p/r/ndcl:1",
                           "--setup-file", "")
    assert run_dry_command(args, DedupConfig(), ClusterConfig(), extra) == 0
    out = capsys.readouterr().out
    assert "Dataflow dry run of `ndcl run --workflow cl_nd`" in out
    assert "ReadDocuments -> SelectEveryDocumentToEmbed -> " \
           "EmbedDocuments -> ClusterDocuments -> ComputeFeatures -> ScopeByCluster" in out
    assert f"group-by-keys   {FIXED_SHUFFLES + ORDERING_SHUFFLES['cl_nd'] + CC_SHUFFLES}" in out
    assert "worker image    europe-docker.pkg.dev/p/r/ndcl:1" in out
    assert "workflow.tar.gz" not in out  # no setup file: the image has the package
    # Local paths and a Ray backend without an address would not work on Dataflow.
    assert "kmeans-backend ray without --service-address" in out
    assert "is not gs://" in out
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.ndcl-staging").exists()


def test_dry_run_refuses_a_runner_that_would_really_run(tmp_path: Path) -> None:
    with pytest.raises(RunnerConfigError, match="dry run needs --runner dataflow"):
        dry_run("dedup", ["gs://b/x"], "gs://b/o", DedupConfig(), ClusterConfig(), [])
