"""``runners.options``: runner flags → Beam options for every runner, YAML's pipeline section,
and clear errors for missing or misplaced flags."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
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

from beam_pipeline.config import PipelineConfig
from runners.options import (
    DEFAULT_FLINK_VERSION,
    FLINK_VERSIONS,
    REPO_SETUP_PY,
    RunnerConfigError,
    apply_pipeline_config,
    runner_beam_args,
)
from tests.conftest import beam_args, parse_runner_flags

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
