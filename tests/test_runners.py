"""Runner code (``runners/``): runner flags → Beam options, the portable runner end to end
against Beam's own Python job service, an offline Dataflow dry run of both orderings, the
Flex Template files, and the Flink compose files (which cannot be started here: no Docker
daemon, no Docker Hub or Maven Central)."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import apache_beam as beam
import pytest
import yaml
from apache_beam.options.pipeline_options import (
    FlinkRunnerOptions,
    GoogleCloudOptions,
    PipelineOptions,
    PortableOptions,
    SetupOptions,
    StandardOptions,
    WorkerOptions,
)
from apache_beam.options.pipeline_options import TestOptions as BeamTestOptions
from apache_beam.portability import common_urns
from apache_beam.portability.api import beam_runner_api_pb2

from beam_pipeline.cli import main
from beam_pipeline.config import ClusterConfig, DedupConfig, PipelineConfig
from beam_pipeline.pipeline import build_pipeline, choose_banding
from runners.dataflow import template
from runners.dataflow.dry_run import dry_run, run_dry_command
from runners.kmeans.backend import connect_backend
from runners.options import (
    DEFAULT_FLINK_VERSION,
    FLINK_VERSIONS,
    REPO_SETUP_PY,
    RunnerConfigError,
    apply_pipeline_config,
    count_group_by_keys,
    describe_stages,
    group_by_key_names,
    pipeline_proto,
    runner_beam_args,
)
from tests.conftest import REPO, beam_args, parse_runner_flags
from tests.fixtures import planted_records, write_corpus
from transforms.cluster import BackendSpec
from transforms.lsh import BAND_GROUPS

BEAM_VERSION = template.beam_version_of_setup(REPO / "setup.py")


parse = parse_runner_flags


# --- runner flags -> Beam options -------------------------------------------------------------


def test_direct_adds_nothing() -> None:
    # make_pipeline_options then picks the FnApiRunner, as without any flag.
    assert beam_args() == []
    assert beam_args("--runner", "direct") == []
    assert beam_args("--runner=DirectRunner") == []


def test_portable_defaults_to_loopback() -> None:
    args = beam_args("--runner", "portable", "--job-endpoint", "localhost:8099")
    assert args == ["--runner=PortableRunner", "--job_endpoint=localhost:8099",
                    "--environment_type=LOOPBACK"]
    portable = PipelineOptions(args).view_as(PortableOptions)
    assert (portable.job_endpoint, portable.environment_type) == ("localhost:8099", "LOOPBACK")


def test_portable_external_worker_pool_and_docker() -> None:
    assert beam_args("--runner", "portable", "--job-endpoint", "localhost:8099",
                     "--environment-type", "external") == [
        "--runner=PortableRunner", "--job_endpoint=localhost:8099",
        "--environment_type=EXTERNAL", "--environment_config=localhost:50000"]
    args = beam_args("--runner", "portable", "--job-endpoint", "jobs:8099",
                     "--environment-type", "DOCKER", "--environment-config",
                     "apache/beam_python3.11_sdk:2.77.0")
    assert PipelineOptions(args).view_as(PortableOptions).environment_config == \
        "apache/beam_python3.11_sdk:2.77.0"


@pytest.fixture(autouse=True)
def no_flink_jar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runner flags must not depend on whether ``make flink`` ran on this machine."""
    monkeypatch.setenv("NDCL_FLINK_DIR", str(tmp_path / "no-flink"))


def test_flink(tmp_path: Path) -> None:
    args = beam_args("--runner", "flink", "--flink-master", "localhost:8081")
    # --streaming: Flink's batch plan optimizer does not finish on this graph (options.py).
    assert args == ["--runner=FlinkRunner", "--flink_master=localhost:8081",
                    f"--flink_version={DEFAULT_FLINK_VERSION}", "--streaming",
                    "--environment_type=EXTERNAL", "--environment_config=localhost:50000"]
    flink = PipelineOptions(args).view_as(FlinkRunnerOptions)
    assert flink.flink_master == "localhost:8081"
    assert flink.flink_version == DEFAULT_FLINK_VERSION
    # The default must be a version Beam publishes a job server for.
    assert DEFAULT_FLINK_VERSION in FlinkRunnerOptions.PUBLISHED_FLINK_VERSIONS
    (tmp_path / "flink.jar").write_bytes(b"")
    jar = beam_args("--runner", "flink", "--flink-master", "[local]", "--flink-version",
                    FLINK_VERSIONS[0], "--flink-job-server-jar", str(tmp_path / "flink.jar"))
    assert f"--flink_version={FLINK_VERSIONS[0]}" in jar
    assert f"--flink_job_server_jar={tmp_path / 'flink.jar'}" in jar


def test_dataflow() -> None:
    args = beam_args("--runner", "dataflow", "--project", "my-project", "--region",
                     "europe-west4", "--temp-location", "gs://bkt/tmp", "--staging-location",
                     "gs://bkt/staging", "--worker-machine-type", "n2-standard-4",
                     "--max-workers", "20", "--sdk-container-image", "eu.gcr.io/p/ndcl:1",
                     "--dry-run")
    assert args == [
        "--runner=DataflowRunner", "--project=my-project", "--region=europe-west4",
        "--temp_location=gs://bkt/tmp", "--staging_location=gs://bkt/staging",
        f"--setup_file={REPO_SETUP_PY}", "--worker_machine_type=n2-standard-4",
        "--max_num_workers=20", "--sdk_container_image=eu.gcr.io/p/ndcl:1", "--dry_run=True"]
    options = PipelineOptions(args)
    cloud = options.view_as(GoogleCloudOptions)
    assert (cloud.project, cloud.region, cloud.temp_location) == (
        "my-project", "europe-west4", "gs://bkt/tmp")
    worker = options.view_as(WorkerOptions)
    assert (worker.machine_type, worker.max_num_workers, worker.sdk_container_image) == (
        "n2-standard-4", 20, "eu.gcr.io/p/ndcl:1")
    assert options.view_as(SetupOptions).setup_file == str(REPO_SETUP_PY)
    assert options.view_as(BeamTestOptions).dry_run == "True"
    assert options.view_as(StandardOptions).runner == "DataflowRunner"


def test_beam_spellings_mean_the_same() -> None:
    """What a Beam user or the Flex Template launcher writes lands in the same flags."""
    ours = beam_args("--runner", "dataflow", "--project", "prj", "--region", "r",
                     "--temp-location", "gs://bkt/t", "--setup-file", "", "--dry-run")
    beams = beam_args("--runner=DataflowRunner", "--project=prj", "--region=r",
                      "--temp_location=gs://bkt/t", "--setup_file=", "--dry_run=True")
    assert ours == beams == ["--runner=DataflowRunner", "--project=prj", "--region=r",
                             "--temp_location=gs://bkt/t", "--dry_run=True"]
    assert beam_args("--runner=PortableRunner", "--job_endpoint=h:1",
                     "--environment_type=LOOPBACK") == beam_args(
        "--runner", "portable", "--job-endpoint", "h:1")


def test_yaml_pipeline_section_fills_unset_flags_only() -> None:
    preset = PipelineConfig(runner="dataflow", project="yaml-project", region="us-east1",
                            temp_location="gs://yaml/tmp", max_workers=200,
                            worker_machine_type="n2-highmem-8")
    merged = apply_pipeline_config(parse("--project", "flag-project", "--dry-run"), preset)
    args = runner_beam_args(merged)
    assert args[:4] == ["--runner=DataflowRunner", "--project=flag-project",
                        "--region=us-east1", "--temp_location=gs://yaml/tmp"]
    assert "--max_num_workers=200" in args and "--worker_machine_type=n2-highmem-8" in args
    # An explicit --runner beats the YAML, whose dataflow fields are then left aside...
    assert runner_beam_args(apply_pipeline_config(parse("--runner", "direct"), preset)) == []
    assert runner_beam_args(apply_pipeline_config(parse(), PipelineConfig())) == []
    # ...but a dataflow flag typed with another runner is still an error.
    with pytest.raises(RunnerConfigError, match="--project is a dataflow flag"):
        runner_beam_args(apply_pipeline_config(parse("--runner", "direct", "--project", "prj"),
                                               preset))


@pytest.mark.parametrize(("argv", "message"), [
    (["--runner", "portable"], "--runner portable needs --job-endpoint"),
    (["--runner", "portable", "--job-endpoint", "8099"], "--job-endpoint must be HOST:PORT"),
    (["--runner", "flink"], "--runner flink needs --flink-master"),
    (["--runner", "dataflow"],
     "needs --project, --region, --temp-location gs://BUCKET/tmp"),
    (["--runner", "dataflow", "--project", "prj", "--region", "r"], "--temp-location"),
    (["--runner", "dataflow", "--project", "p", "--region", "r", "--temp-location", "/tmp"],
     "--temp-location must be gs://BUCKET/PATH"),
    (["--runner", "dataflow", "--project", "p", "--region", "r", "--temp-location",
      "gs://bucket"], "--temp-location must be gs://BUCKET/PATH"),
    (["--runner", "dataflow", "--project", "p", "--region", "r", "--temp-location",
      "gs://b/tmp"], "'b' is not a valid bucket name"),
    (["--runner", "dataflow", "--project", "My Project", "--region", "r", "--temp-location",
      "gs://bkt/tmp"], "--project must be a project ID"),
    (["--job-endpoint", "localhost:8099"], "--job-endpoint is a portable flag"),
    (["--runner", "portable", "--job-endpoint", "h:1", "--project", "prj"],
     "--project is a dataflow flag"),
    (["--dry-run"], "--dry-run is a dataflow flag"),
    (["--runner", "dataflow", "--project", "p", "--region", "r", "--temp-location",
      "gs://b/t", "--environment-type", "DOCKER"], "only applies to --runner portable or flink"),
    (["--runner", "portable", "--job-endpoint", "h:1", "--environment-config", "x"],
     "no meaning with LOOPBACK"),
    (["--runner", "portable", "--job-endpoint", "h:1", "--environment-type", "PROCESS"],
     "PROCESS needs --environment-config"),
    (["--runner", "portable", "--job-endpoint", "h:1", "--environment-type", "EXTERNAL",
      "--environment-config", "pool"], "must be HOST:PORT"),
    (["--runner", "portable", "--job-endpoint", "h:1", "--setup-file", "/no/such/setup.py"],
     "does not exist"),
])
def test_missing_or_misplaced_flags_are_clear_errors(argv: list[str], message: str) -> None:
    with pytest.raises(RunnerConfigError, match=re.escape(message)):
        beam_args(*argv)


@pytest.mark.parametrize("argv", [["--runner", "spark"], ["--flink-version", "1.18"],
                                  ["--environment-type", "SOMEWHERE"]])
def test_invalid_choices_are_argparse_errors(argv: list[str],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse(*argv)
    assert "error" in capsys.readouterr().err


# --- the graph: stage names and shuffles of both orderings ------------------------------------


def _graph(workflow: str, tmp_path: Path, cc_max_rounds: int = DedupConfig().cc_max_rounds,
           options: PipelineOptions | None = None) -> beam.Pipeline:
    source = tmp_path / "in.json"
    source.write_text('{"text": "one two three four five six"}\n')
    pipeline = beam.Pipeline(options=options or PipelineOptions([]))
    build_pipeline(pipeline, workflow, DedupConfig(cc_max_rounds=cc_max_rounds),
                   ClusterConfig(backend="local"), [str(source)], str(tmp_path / "stage"),
                   BackendSpec(kind="local", model_dir=str(tmp_path / "models"),
                               connect=connect_backend), "run-test")
    return pipeline


COMMON_STAGES = ["ReadDocuments", "ComputeFeatures", "RemoveExactDuplicates",
                 "FindCandidatePairs", "FetchNodes", "VerifyCandidates", "ConnectedComponents",
                 "ResolveDuplicates", "EmbedDocuments", "ClusterDocuments", "ReportFit",
                 "CollectFieldTypes", "FlattenStageStats", "WriteOutputs", "SummariseClusters",
                 "ReportClusterStats"]
# Issue 11 (no document text crosses a stage boundary): the field types are combined next to
# the first read (CollectFieldTypes) and the stage stats flattened before the writer; the
# ordering-specific steps re-read the input (ReadSelected) instead of joining batches:
# nd_cl selects the kept documents by the removed uids and reads them twice (statistics, then
# labels); cl_nd takes the statistics from the first read and re-reads every document for
# the labels (SelectKept, the join of document batches with duplicate rows, is gone).
ND_CL_STAGES = ["ListRemovedDocuments", "CollectRemovedDocuments", "SelectKeptDocuments",
                "ReadKeptForStatistics"]
CL_ND_STAGES = ["SelectEveryDocumentToEmbed", "ScopeByCluster"]
# Shuffles outside the connected-components rounds, shared by both orderings (26):
# - read: Reshuffle of the file list + the id hashes that find repeated ids (2);
# - CollectFieldTypes (1; it used to be inside WriteOutputs);
# - exact: the hash groups + the combine of the removed uids (2; no join of decisions with
#   the feature batches any more: banding drops the removed uids itself);
# - LSH: one GroupByKey of the band keys per band group (4, lsh.BAND_GROUPS; the default
#   banding has more than 4 bands) + the merge of the edges found by the groups (1): 5;
# - FetchNodes: the combine of the endpoint uids + the Reshuffle of its re-read's file list
#   (2; it used to join requested uids with the document batches);
# - verification 2 joins, resolve 3;
# - embedding: 3 combines (document frequencies, the bottom-k sample, the sample's words for
#   the clusters' top terms) + the Reshuffle of the re-read that projects (4; the projecting
#   step reads its documents itself, in both orderings);
# - WriteOutputs: the Reshuffle of its re-read's file list, rejected rows, stats sum (3; the
#   duplicate rows are a side input now, no join with the document batches);
# - 1 combine of the cluster-quality counts;
# - connected components: the gathering of what the rounds left unconverged (1; it carries
#   nothing when the rounds converged).
FIXED_SHUFFLES = 26
# Two per unrolled connected-components round (large star, small star).
CC_SHUFFLES = 2 * DedupConfig().cc_max_rounds
# The ordering's own shuffles. nd_cl: the combine of the removed uids and the Reshuffle of
# its re-read for the statistics (2; was the SelectKept join). cl_nd: the ScopeByCluster join.
ORDERING_SHUFFLES = {"nd_cl": 2, "cl_nd": 1}
ORDERING_GROUP_BY_KEYS = {
    "nd_cl": {"CollectRemovedDocuments/MergeBundleResults/CombinePerKey/GroupByKey",
              "ReadKeptForStatistics/SpreadFilesAgain/ReshufflePerKey/GroupByKey"},
    "cl_nd": {"ScopeByCluster/JoinClusterLabels/GroupTagged"},
}


def _top_level(names: list[str]) -> list[str]:
    return [n for n in names if "/" not in n]


def test_stage_names_of_both_orderings(tmp_path: Path) -> None:
    nd_cl = describe_stages(pipeline_proto(_graph("nd_cl", tmp_path)))
    cl_nd = describe_stages(pipeline_proto(_graph("cl_nd", tmp_path)))
    for names in (nd_cl, cl_nd):
        assert set(COMMON_STAGES) <= set(_top_level(names))
        assert "ConnectedComponents/GroupLargeStar1" in names
        assert f"ConnectedComponents/GroupSmallStar{DedupConfig().cc_max_rounds}" in names
        assert "ConnectedComponents/GatherUnconverged" in names
        assert "ClusterDocuments/PredictClusters" in names  # RunInference
        assert any(n.startswith("ClusterDocuments/PredictClusters/") for n in names)
        assert "EmbedDocuments/FitSvd" in names
        # Verification and the writer re-read the input themselves (ReadSelected).
        assert "FetchNodes/ReadCandidateDocuments/ParseSelected" in names
        assert "WriteOutputs/ReadAndWriteKeptAndDuplicates/ParseAndConsume" in names
        assert "EmbedDocuments/ReadAndProject/ParseAndConsume" in names
    assert set(_top_level(nd_cl)) == set(COMMON_STAGES) | set(ND_CL_STAGES)
    assert set(_top_level(cl_nd)) == set(COMMON_STAGES) | set(CL_ND_STAGES)
    assert "ReadKeptForStatistics/ParseSelected" in nd_cl
    # The orderings: ND before embedding in nd_cl, embedding before ND in cl_nd.
    top_nd, top_cl = _top_level(nd_cl), _top_level(cl_nd)
    assert top_nd.index("ResolveDuplicates") < top_nd.index("CollectRemovedDocuments") < \
        top_nd.index("ReadKeptForStatistics") < top_nd.index("EmbedDocuments")
    assert top_cl.index("SelectEveryDocumentToEmbed") < top_cl.index("EmbedDocuments") < \
        top_cl.index("ClusterDocuments") < top_cl.index("ComputeFeatures") < \
        top_cl.index("ScopeByCluster") < top_cl.index("RemoveExactDuplicates")
    assert not any(n.startswith("ref_AppliedPTransform") for n in nd_cl)


def _side_input_consumers(proto: beam_runner_api_pb2.Pipeline) -> dict[str, str]:
    """``ParDo with side inputs → the producer of its main input`` (unique names)."""
    transforms = proto.components.transforms
    producer = {pc: t.unique_name for t in transforms.values() if not t.subtransforms
                for pc in t.outputs.values()}
    found = {}
    for t in transforms.values():
        if t.spec.urn != common_urns.primitives.PAR_DO.urn:
            continue
        payload = beam_runner_api_pb2.ParDoPayload.FromString(t.spec.payload)
        if payload.side_inputs:
            main = [pc for tag, pc in t.inputs.items() if tag not in payload.side_inputs]
            found[t.unique_name] = producer[main[0]]
    return found


def test_no_step_with_side_inputs_waits_on_document_text(tmp_path: Path) -> None:
    """Beam's portable fusion starts a new stage at every ParDo with side inputs, and Flink
    holds its main input until the side inputs are ready: none may be fed the batches of a
    read (text) or their term counts; the writer and the projection read their documents in
    the step that has the side inputs, which then hold back file names only."""
    for workflow in ("nd_cl", "cl_nd"):
        consumers = _side_input_consumers(pipeline_proto(_graph(workflow, tmp_path)))
        # Text, or per-document term counts (about as large).
        bulky = ("ParseFiles", "ParseSelected", "ParseAndConsume", "CountTerms")
        waiting = {c for c, p in consumers.items() if p.split("/")[-1] in bulky}
        # The one exception, known: the embeddings (512 bytes a document) wait for the K-Means
        # fit, which needs only the sample and the SVD, so what waits is what the projection
        # made while the fit ran, not the corpus.
        assert waiting == {"ClusterDocuments/WaitForModels"}
        for step in ("WriteOutputs/ReadAndWriteKeptAndDuplicates", "EmbedDocuments/ReadAndProject"):
            (fed,) = [p for c, p in consumers.items() if c.startswith(f"{step}/ParseAndConsume")]
            assert fed.startswith(f"{step}/SpreadFilesAgain/")


def test_group_by_key_counts_are_stable_and_differ_only_in_the_ordering_steps(
        tmp_path: Path) -> None:
    protos = {wf: pipeline_proto(_graph(wf, tmp_path)) for wf in ("nd_cl", "cl_nd")}
    counts = {wf: count_group_by_keys(p) for wf, p in protos.items()}
    # The rounds x (large star + small star) + the fixed shuffles + the ordering's own.
    assert counts == {wf: FIXED_SHUFFLES + ORDERING_SHUFFLES[wf] + CC_SHUFFLES for wf in protos}
    names = {wf: set(group_by_key_names(p)) for wf, p in protos.items()}
    assert choose_banding(DedupConfig()).bands >= BAND_GROUPS
    lsh = {f"FindCandidatePairs/GroupBandKeys{g}" for g in range(BAND_GROUPS)}
    assert {n for n in names["nd_cl"] if n.startswith("FindCandidatePairs/")} == \
        lsh | {"FindCandidatePairs/GroupCandidateEdges"}
    assert names["nd_cl"] - names["cl_nd"] == ORDERING_GROUP_BY_KEYS["nd_cl"]
    assert names["cl_nd"] - names["nd_cl"] == ORDERING_GROUP_BY_KEYS["cl_nd"]
    assert not any("JoinDuplicateRows" in n or "JoinRequestedDocuments" in n
                   or "JoinExactDecisions" in n for wf in names for n in names[wf])
    # Stable: a rebuild gives the same graph; fewer CC rounds remove exactly 2 per round.
    again = pipeline_proto(_graph("cl_nd", tmp_path))
    assert describe_stages(again) == describe_stages(protos["cl_nd"])
    assert count_group_by_keys(pipeline_proto(_graph("cl_nd", tmp_path, cc_max_rounds=4))) \
        == FIXED_SHUFFLES + ORDERING_SHUFFLES["cl_nd"] + 8


# --- Dataflow dry run (offline) -----------------------------------------------------------------


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
    assert report.stages[:2] == ["ReadDocuments", "ComputeFeatures"]
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


# --- portable runner end to end -------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def job_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Beam's own Python job service in a subprocess; yields its ``localhost:PORT``."""
    port = free_port()
    log = tmp_path_factory.mktemp("job-service") / "job_service.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "apache_beam.runners.portability.local_job_service_main",
             "--port", str(port)], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("localhost", port), timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"job service did not start: {log.read_text()[-2000:]}")
                time.sleep(0.2)
        yield f"localhost:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.suffix in (".parquet", ".jsonl")}


TIMING_KEYS = ("stage_seconds", "wall_seconds", "time_parts", "runner_overhead_seconds")


def _counts(out: Path) -> dict[str, object]:
    summary = json.loads((out / "summary.json").read_text())
    # Timings and the per-run id differ between any two runs.
    return {k: v for k, v in summary.items() if k not in TIMING_KEYS}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_corpus(tmp_path_factory.mktemp("portable"), planted_records(seed=5), files=2)


def test_portable_dedup_equals_direct(job_service: str, corpus: list[Path],
                                      tmp_path: Path) -> None:
    portable = beam_args("--runner", "portable", "--job-endpoint", job_service)
    inputs = ["--input", *map(str, corpus)]
    assert main(["-q", "dedup", *inputs, "--output", str(tmp_path / "direct")]) == 0
    # The runner flags are not wired into the CLI yet: their Beam translation passes through.
    assert main(["-q", "dedup", *inputs, "--output", str(tmp_path / "portable"),
                 *portable]) == 0
    direct_files, portable_files = _files(tmp_path / "direct"), _files(tmp_path / "portable")
    assert any(name.startswith("kept/") for name in direct_files)
    assert any(name.startswith("duplicates/") for name in direct_files)
    assert portable_files == direct_files  # byte for byte
    assert _counts(tmp_path / "portable") == _counts(tmp_path / "direct")
    assert _counts(tmp_path / "direct")["duplicates"] > 0
    # Metrics reach the driver through the job service too.
    summary = json.loads((tmp_path / "portable" / "summary.json").read_text())
    assert summary["stage_seconds"]


@pytest.mark.slow
def test_portable_cl_nd_equals_direct(job_service: str, corpus: list[Path],
                                      tmp_path: Path) -> None:
    """CL→ND on the portable runner: RunInference, side inputs and the cluster-scoped ND."""
    run = ["-q", "run", "--workflow", "cl_nd", "--input", *map(str, corpus),
           "--kmeans-backend", "local", "--k1", "4", "--k2", "2"]
    assert main([*run, "--output", str(tmp_path / "direct")]) == 0
    assert main([*run, "--output", str(tmp_path / "portable"), "--runner=PortableRunner",
                 f"--job_endpoint={job_service}", "--environment_type=LOOPBACK"]) == 0
    assert _files(tmp_path / "portable") == _files(tmp_path / "direct")
    direct, portable = _counts(tmp_path / "direct"), _counts(tmp_path / "portable")
    for summary in (direct, portable):
        summary["cluster"] = {k: v for k, v in summary["cluster"].items()  # type: ignore[union-attr]
                              if k not in ("level_1", "level_2")}  # fit timings
    assert portable == direct


# --- Flex Template ------------------------------------------------------------------------------


def test_shipped_template_checks_out() -> None:
    assert template.check_template(template.METADATA, template.SETUP_PY) == []
    names = {p["name"] for p in json.loads(template.METADATA.read_text())["parameters"]}
    assert {"workflow", "input", "output", "threshold", "num_perm", "ngram", "k1", "k2",
            "dedup_scope", "bands", "rows", "verify", "sample_size", "n_components",
            "service_address", "kmeans_backend"} <= names


def _broken(tmp_path: Path, edit_meta: object = None, dockerfile: str | None = None) -> Path:
    meta = json.loads(template.METADATA.read_text())
    if callable(edit_meta):
        edit_meta(meta)
    folder = tmp_path / "tpl"
    folder.mkdir(exist_ok=True)
    (folder / "metadata.json").write_text(json.dumps(meta))
    (folder / "Dockerfile").write_text(dockerfile or template.DOCKERFILE.read_text())
    return folder / "metadata.json"


def _param(meta: dict, name: str) -> dict:
    return next(p for p in meta["parameters"] if p["name"] == name)


@pytest.mark.parametrize(("edit", "dockerfile_edit", "message"), [
    (lambda m: m["parameters"].append({**_param(m, "ngram"), "name": "num_perms"}), None,
     "parameter 'num_perms': no `ndcl run` flag --num-perms"),
    (lambda m: _param(m, "threshold").update(regexes=["^(0\\.[0-9]+$"]), None,
     "parameter 'threshold': regex '^(0\\\\.[0-9]+$' does not compile"),
    (None, ("2.77.0", "2.76.0"), "Beam SDK image 2.76.0 but setup.py BEAM_VERSION is 2.77.0"),
    (None, ("python311-template", "python312-template"),
     "launcher for python312 but SDK image for Python 3.11"),
    (lambda m: m["parameters"].remove(_param(m, "input")), None,
     "`ndcl run` requires --input but metadata has no 'input'"),
    (lambda m: _param(m, "output").update(isOptional=True), None,
     "--output is required by `ndcl run`, so isOptional must be false"),
    (lambda m: _param(m, "k1").update(helptext="typo", helpText=""), None,
     "unknown key 'helptext'"),
    (lambda m: _param(m, "k1").update(defaultValue="ten"), None,
     "defaultValue 'ten' does not match"),
    (lambda m: m["parameters"].append(dict(_param(m, "k1"))), None, "'k1': duplicate name"),
    (lambda m: _param(m, "k2").pop("isOptional"), None, "isOptional must be true or false"),
])
def test_broken_template_fails(tmp_path: Path, edit: object,
                               dockerfile_edit: tuple[str, str] | None, message: str) -> None:
    dockerfile = template.DOCKERFILE.read_text()
    if dockerfile_edit:
        dockerfile = dockerfile.replace(*dockerfile_edit)
    errors = template.check_template(_broken(tmp_path, edit, dockerfile), template.SETUP_PY)
    assert any(message in e for e in errors), errors


def test_template_argv_maps_parameters_onto_cli_flags() -> None:
    argv = ["--workflow=cl_nd", "--input=gs://b/c4/*.json.gz", "--output=gs://b/out",
            "--num_perm=128", "--dedup_scope=cluster_B", "--balanced=true", "--k1=20",
            "--project=p", "--temp_location=gs://b/tmp", "--template_location=gs://b/job",
            "--sdk_container_image=img"]
    out = template.template_argv(argv)
    assert out[:7] == ["--workflow=cl_nd", "--input=gs://b/c4/*.json.gz",
                       "--output=gs://b/out", "--num-perm=128", "--dedup-scope=cluster_B",
                       "--balanced", "--k1=20"]
    # Beam options the launcher adds pass through; Dataflow and the local backend by default.
    assert "--template_location=gs://b/job" in out and "--project=p" in out
    assert out[-2:] == ["--runner=DataflowRunner", "--kmeans-backend=local"]
    assert "--balanced" not in template.template_argv(["--balanced=false"])
    kept = template.template_argv(["--service_address=ray://h:10001", "--runner=direct"])
    assert kept == ["--service-address=ray://h:10001", "--runner=direct"]


def test_template_argv_respects_a_preset_with_a_service(tmp_path: Path) -> None:
    with_service = tmp_path / "ray.yaml"
    with_service.write_text("cluster:\n  backend: ray\n  service_address: ray://h:10001\n")
    without = tmp_path / "plain.yaml"
    without.write_text("cluster:\n  k1: 4\n")
    assert "--kmeans-backend=local" not in template.template_argv([f"--config={with_service}"])
    assert "--kmeans-backend=local" in template.template_argv([f"--config={without}"])


@pytest.mark.slow
def test_template_main_runs_ndcl_run_locally(tmp_path: Path) -> None:
    """``main.py`` as the launcher would call it, on the direct runner."""
    from runners.dataflow.main import main as template_main

    corpus = write_corpus(tmp_path / "in", planted_records(seed=4), files=1)
    out = tmp_path / "out"
    assert template_main([f"--input={corpus[0]}", f"--output={out}", "--workflow=nd_cl",
                          "--num_perm=128", "--k1=3", "--k2=2", "--runner=direct"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_perm"] == 128 and summary["workflow"] == "nd_cl"
    assert summary["cluster"]["k1"] == 3 and summary["cluster"]["backend"] == "local"


def test_build_and_run_commands() -> None:
    image = "us-central1-docker.pkg.dev/p/ndcl/ndcl:2.77.0"
    assert template.build_command(image, "my-bucket") == [
        "gcloud", "dataflow", "flex-template", "build", "gs://my-bucket/templates/ndcl.json",
        "--image", image, "--sdk-language", "PYTHON", "--metadata-file",
        "runners/dataflow/metadata.json"]
    with pytest.raises(ValueError, match="gs://"):
        template.build_command(image, template_path="/local/ndcl.json")
    runs = template.run_commands("gs://my-bucket/templates/ndcl.json", image,
                                 "gs://my-bucket/c4/*.json.gz", "gs://my-bucket/ndcl",
                                 "us-central1", project="p", bucket="my-bucket",
                                 stamp="20260101-000000",
                                 extra_parameters={"input": "gs://a/*.json,gs://b/*.json"})
    assert [cmd[4] for cmd in runs] == ["ndcl-nd-cl-20260101-000000",
                                        "ndcl-cl-nd-20260101-000000"]
    for workflow, cmd in zip(("nd_cl", "cl_nd"), runs):
        params = [cmd[i + 1] for i, part in enumerate(cmd) if part == "--parameters"]
        assert f"workflow={workflow}" in params
        assert f"output=gs://my-bucket/ndcl/{workflow}" in params
        assert f"sdk_container_image={image}" in params
        assert "^~^input=gs://a/*.json,gs://b/*.json" in params  # gcloud's comma escape
        assert cmd[:4] == ["gcloud", "dataflow", "flex-template", "run"]
        assert "--template-file-gcs-location" in cmd and "--temp-location" in cmd
        # Every parameter is declared in metadata.json or is the Beam image option.
        declared = {p["name"] for p in json.loads(template.METADATA.read_text())["parameters"]}
        assert {p.split("=", 1)[0].removeprefix("^~^") for p in params} <= declared | {
            "sdk_container_image"}


def test_template_cli_prints_commands(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="ndcl")
    template.add_template_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["template", "build", "--print-only", "--image", "img:1",
                              "--bucket", "bkt", "--project", "prj"])
    assert template.run_template_command(args) == 0
    out = capsys.readouterr().out
    assert "gcloud dataflow flex-template build gs://bkt/templates/ndcl.json" in out
    assert "--metadata-file runners/dataflow/metadata.json" in out
    assert out.count("gcloud dataflow flex-template run") == 2
    assert "--parameters workflow=nd_cl" in out and "--parameters workflow=cl_nd" in out
    args = parser.parse_args(["template", "check"])
    assert template.run_template_command(args) == 0


def test_template_cli_fails_on_a_broken_template(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    broken = _broken(tmp_path, lambda m: m["parameters"].append(
        {**_param(m, "k1"), "name": "no_such_flag"}))
    parser = argparse.ArgumentParser(prog="ndcl")
    template.add_template_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["template", "build", "--print-only", "--metadata-file",
                              str(broken)])
    assert template.run_template_command(args) == 1
    captured = capsys.readouterr()
    assert "no_such_flag" in captured.err and "gcloud" not in captured.out


GCLOUD = shutil.which("gcloud")


def _gcloud(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    # A fresh, empty gcloud config: no account, no project, no metadata-server probe.
    env = {**os.environ, "CLOUDSDK_CONFIG": str(tmp_path / "gcloud"),
           "CLOUDSDK_CORE_DISABLE_PROMPTS": "1", "CLOUDSDK_CORE_CHECK_GCE_METADATA": "false",
           "CLOUDSDK_CORE_DISABLE_USAGE_REPORTING": "true"}
    return subprocess.run([GCLOUD or "gcloud", *argv], env=env, capture_output=True, text=True,
                          timeout=120, cwd=REPO)


@pytest.mark.skipif(GCLOUD is None, reason="gcloud is not installed")
def test_gcloud_accepts_the_template(tmp_path: Path) -> None:
    """gcloud's own validation of metadata.json (``--print-only`` writes nothing and needs no
    credentials), and the flags our run commands use exist in ``flex-template run``."""
    build = template.build_command("us-central1-docker.pkg.dev/p/r/ndcl:2.77.0", "bkt")
    done = _gcloud(tmp_path, *build[1:], "--print-only")
    assert done.returncode == 0, done.stderr
    spec = json.loads(done.stdout.strip().removeprefix("|-"))
    assert spec["sdkInfo"] == {"language": "PYTHON"}
    assert spec["metadata"] == json.loads(template.METADATA.read_text())
    help_text = re.sub(r"\x1b\[[0-9;]*m", "", _gcloud(
        tmp_path, "dataflow", "flex-template", "run", "--help").stdout)
    run = template.run_commands("gs://b/t.json", "img", "gs://b/in", "gs://b/out", "r",
                                project="p", bucket="b", max_workers=5,
                                worker_machine_type="n2-standard-4")[0]
    for flag in {part for part in run if part.startswith("--")} - {"--project"}:
        assert f"{flag}=" in help_text, flag


# --- Flink files -----------------------------------------------------------------------------

FLINK = REPO / "runners" / "flink"


def _resolve(value: str) -> str:
    """Compose's ``${VAR:-default}`` with the defaults."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def test_flink_compose_file() -> None:
    compose = yaml.safe_load((FLINK / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"jobmanager", "taskmanager", "job-server", "python-worker-pool"}
    job_server = _resolve(services["job-server"]["image"])
    assert job_server == f"apache/beam_flink{DEFAULT_FLINK_VERSION}_job_server:{BEAM_VERSION}"
    for name in ("jobmanager", "taskmanager"):
        assert _resolve(services[name]["image"]).startswith(f"flink:{DEFAULT_FLINK_VERSION}-")
    assert "8099:8099" in services["job-server"]["ports"]
    assert "8081:8081" in services["jobmanager"]["ports"]
    assert "--flink-master=jobmanager:8081" in services["job-server"]["command"]
    pool = services["python-worker-pool"]
    assert pool["command"] == ["--worker_pool"]
    # localhost:50000 (our EXTERNAL default) is the task manager's own network namespace.
    assert pool["network_mode"] == "service:taskmanager"
    artifacts = "beam-artifacts:/tmp/beam-artifact-staging"
    for name in ("job-server", "taskmanager", "python-worker-pool"):
        assert artifacts in services[name]["volumes"], name
    assert "--artifacts-dir=/tmp/beam-artifact-staging" in services["job-server"]["command"]
    data = _resolve(pool["volumes"][1])
    assert data.split(":")[0] == data.split(":")[1]  # same path inside and out
    context = (FLINK / pool["build"]["context"]).resolve()
    assert context == REPO
    worker = context / pool["build"]["dockerfile"]
    assert f"FROM apache/beam_python3.11_sdk:{BEAM_VERSION}" in worker.read_text()


def test_flink_scripts_and_readme_commands() -> None:
    for script in ("start.sh", "stop.sh"):
        path = FLINK / script
        assert os.access(path, os.X_OK), script
        assert subprocess.run(["bash", "-n", str(path)]).returncode == 0
    readme = (FLINK / "README.md").read_text()
    assert "--runner portable --job-endpoint localhost:8099" in readme
    assert "--environment-type EXTERNAL --environment-config localhost:50000" in readme
    assert "--runner flink --flink-master localhost:8081" in readme
    # The README's submit flags translate to the intended Beam options.
    assert beam_args("--runner", "portable", "--job-endpoint", "localhost:8099",
                     "--environment-type", "EXTERNAL", "--environment-config",
                     "localhost:50000")[2:] == ["--environment_type=EXTERNAL",
                                                "--environment_config=localhost:50000"]
