"""Runner flags for ``ndcl``: one set of ``--runner ...`` flags, translated to Beam options.

``add_runner_flags(parser)`` adds the flags below to an ``argparse`` (sub)parser and
``runner_beam_args(args)`` turns the parsed values into Beam pipeline option strings, checking
that each runner has what it needs (:class:`RunnerConfigError` otherwise). Multi-word flags
also accept Beam's own underscore spelling (``--job_endpoint``, ``--temp_location``, ...), so a
command line written for Beam, or the options a Dataflow Flex Template launcher appends, land
in the same place instead of bypassing the checks.

Runners
-------

``--runner direct`` (default)
    Beam's in-process FnApiRunner (``beam_pipeline.run.make_pipeline_options`` picks it; the
    Prism runner would download a binary). Adds no option. ``--direct_num_workers=N
    --direct_running_mode=multi_processing`` still pass straight to Beam.

``--runner portable --job-endpoint HOST:PORT [--environment-type T --environment-config C]``
    Beam's PortableRunner against any job service: Beam's own Python one
    (``python -m apache_beam.runners.portability.local_job_service_main --port 8099``), the
    Flink job server of ``runners/flink/docker-compose.yml`` (``localhost:8099``), Spark, ...
    ``--job-endpoint embed`` runs Beam's Python job service inside the ``ndcl`` process (no
    server to start; what the reliability tests use).
    ``--environment-type`` defaults to LOOPBACK (the SDK worker runs inside the submitting
    ``ndcl`` process, so the job service must run on the same machine). For a job server in
    Docker use ``EXTERNAL --environment-config localhost:50000`` (the SDK worker pool of the
    compose file) or ``DOCKER`` (the job server starts SDK containers itself). Emits
    ``--runner=PortableRunner --job_endpoint=... --environment_type=...`` and, when given,
    ``--environment_config=...``.

``--runner prism``
    Beam's Prism runner (a Go binary that runs the job service and the runner in one local
    process; the SDK workers run LOOPBACK inside ``ndcl``). The binary is the one of ``make
    prism`` (``go install`` of Beam's ``cmd/prism`` at the SDK's version into
    ``.ndcl/prism/bin/``, see :mod:`runners.prism`), always passed as ``--prism_location``
    (otherwise Beam downloads it from GitHub, not reachable here). Emits
    ``--runner=PrismRunner --prism_location=... --environment_type=LOOPBACK`` (and
    ``--prism_log_level=warn`` with ``-q``).

``--runner flink [--flink-master HOST:PORT|[local]] [--parallelism N] [--flink-version V]``
    Beam's FlinkRunner: it starts a Flink job server (a Java 11+ process) that runs the job.
    The job server is the jar of ``make flink`` (``.ndcl/flink/job-server/``, see
    :mod:`runners.flink.dist`), passed as ``--flink_job_server_jar`` whenever it is there and
    no ``--flink-job-server-jar`` is given (otherwise Beam downloads its own from Maven
    Central, which does not serve it here).
    Without ``--flink-master`` (or with ``[local]``) the job server runs an embedded Flink
    (a MiniCluster inside the job server's JVM): nothing to start, no Docker; that needs the
    ``make flink`` jar (or ``--flink-job-server-jar``), and ``--environment-type`` defaults to
    LOOPBACK (Beam's own default there: the job server connects back to an SDK worker pool
    inside this ``ndcl`` process). With a Flink REST address (``localhost:8081``) it submits
    to that cluster and ``--environment-type`` defaults to EXTERNAL with ``localhost:50000``
    (the worker pool that shares the task manager's network in
    ``runners/flink/docker-compose.yml``). ``--parallelism N`` is Beam's (Flink's default
    parallelism for the job). ``--flink-version`` defaults to the Flink of the job-server jar
    when it names one, else to :data:`DEFAULT_FLINK_VERSION`. Emits ``--runner=FlinkRunner
    --flink_master=... --flink_version=... --streaming [--flink_job_server_jar=...
    --flink_conf_dir=runners/flink/embedded --parallelism=N] --environment_type=...`` and, for
    EXTERNAL, ``--environment_config=...`` (``--flink_conf_dir`` for an embedded Flink only:
    its Flink configuration, more network memory than Flink's default);
    ``--streaming`` because Flink's batch (DataSet) plan optimizer does not finish on this
    graph (see :func:`_flink_args`).

``--runner dataflow --project P --region R --temp-location gs://B/tmp [--dry-run]``
    Google Cloud Dataflow. Also ``--staging-location``, ``--setup-file`` (default: this
    repository's ``setup.py``, so workers install the package; with ``--sdk-container-image``
    of an image that already has it, pass ``--setup-file ''`` to skip), ``--worker-machine-type``,
    ``--max-workers``, ``--sdk-container-image`` (e.g. the Flex Template image of
    ``runners/dataflow/Dockerfile``). ``--dry-run`` adds Beam's ``--dry_run=True``: the
    DataflowRunner translates the graph and builds the job request but does not stage or
    submit anything (``runners.dataflow.dry_run`` builds the ``ndcl`` graph that way).

The module also has small helpers to inspect a pipeline graph without running it:
:func:`pipeline_proto`, :func:`describe_stages` and :func:`count_group_by_keys`.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import (
    DebugOptions,
    FlinkRunnerOptions,
    PipelineOptions,
    PortableOptions,
    StandardOptions,
)
from apache_beam.options.pipeline_options_validator import PipelineOptionsValidator
from apache_beam.portability.api import beam_runner_api_pb2

from runners.errors import RunnerConfigError  # re-exported: callers catch it from here

RUNNERS = ("direct", "portable", "prism", "flink", "dataflow")
ENVIRONMENT_TYPES = ("LOOPBACK", "DOCKER", "EXTERNAL", "PROCESS")
# Flink versions this Beam release publishes job servers for (FlinkRunnerOptions keeps the
# list in sync with Beam's gradle.properties: 1.19, 1.20, 2.0, 2.1, 2.2 for Beam 2.77).
FLINK_VERSIONS = tuple(FlinkRunnerOptions.PUBLISHED_FLINK_VERSIONS)
# 1.20 is the last Flink 1.x (its LTS line), the one runners/flink/docker-compose.yml runs.
DEFAULT_FLINK_VERSION = "1.20" if "1.20" in FLINK_VERSIONS else FLINK_VERSIONS[-1]
# Flink configuration of the embedded Flink (--runner flink without --flink-master).
EMBEDDED_FLINK_CONF = Path(__file__).resolve().parent / "flink" / "embedded"
# The SDK worker pool of runners/flink/docker-compose.yml, reachable from the task manager.
DEFAULT_WORKER_POOL = "localhost:50000"
REPO_SETUP_PY = Path(__file__).resolve().parents[1] / "setup.py"
GROUP_BY_KEY_URN = "beam:transform:group_by_key:v1"
# Beam's experiment that makes LOOPBACK SDK workers processes instead of threads.
LOOPBACK_PROCESS_WORKERS = "use_loopback_process_worker"

# Beam's own runner names, accepted too so that ``--runner=DataflowRunner`` (what Beam users
# and the Flex Template launcher write) means the same as ``--runner dataflow``.
_RUNNER_ALIASES = {
    "direct": "direct", "directrunner": "direct", "fnapirunner": "direct",
    "portable": "portable", "portablerunner": "portable",
    "prism": "prism", "prismrunner": "prism",
    "flink": "flink", "flinkrunner": "flink",
    "dataflow": "dataflow", "dataflowrunner": "dataflow",
}
_HOST_PORT = re.compile(r"^[A-Za-z0-9_.\-\[\]:]+:\d{1,5}$")


class FlinkConfDirOptions(PipelineOptions):
    """``--flink_conf_dir``: an option of Beam's Java FlinkPipelineOptions (a folder with
    Flink's ``config.yaml``, read by the job server for the Flink it starts or submits to) that
    the Python SDK does not declare. Declaring it here is what makes the SDK pass it on to the
    job server instead of dropping it as unknown."""

    @classmethod
    def _add_argparse_args(cls, parser: Any) -> None:
        parser.add_argument("--flink_conf_dir", default=None,
                            help="Folder with the Flink config.yaml for the job server")


def runner_name(value: str) -> str:
    """``argparse`` type of ``--runner``: one of :data:`RUNNERS`, Beam's class names
    accepted (``DataflowRunner`` → ``dataflow``)."""
    key = value.strip().lower()
    if key not in _RUNNER_ALIASES:
        raise argparse.ArgumentTypeError(
            f"unknown runner {value!r}; choose one of {', '.join(RUNNERS)}")
    return _RUNNER_ALIASES[key]


def _environment_type(value: str) -> str:
    if value.upper() not in ENVIRONMENT_TYPES:
        raise argparse.ArgumentTypeError(
            f"unknown environment type {value!r}; choose one of {', '.join(ENVIRONMENT_TYPES)}")
    return value.upper()


def _flink_version(value: str) -> str:
    if value not in FLINK_VERSIONS:
        raise argparse.ArgumentTypeError(
            f"Flink {value} has no Beam {beam.__version__} job server; "
            f"choose one of {', '.join(FLINK_VERSIONS)}")
    return value


def add_runner_flags(parser: argparse.ArgumentParser) -> None:
    """Add the runner flags (see the module docstring) to ``parser``.

    Every flag defaults to ``None`` (``--runner``: direct) so :func:`runner_beam_args` can
    tell a flag given for the wrong runner from one left alone, and
    :func:`apply_pipeline_config` can fill the flags left alone from a YAML preset.
    """
    group = parser.add_argument_group(
        "runner", "where the pipeline runs (see runners/options.py); other Beam pipeline "
                  "options (--direct_num_workers=2, ...) pass through to Beam")
    preset = "or the --config preset"
    # Default None (meaning direct) so a YAML ``pipeline.runner`` can still apply.
    group.add_argument("--runner", type=runner_name, choices=RUNNERS, default=None,
                       help="direct: Beam's in-process FnApiRunner; Beam's names "
                            f"(PortableRunner, ...) also work (default: direct, {preset})")
    group.add_argument("--job-endpoint", "--job_endpoint", dest="job_endpoint",
                       metavar="HOST:PORT",
                       help="portable: the job service, or 'embed' for Beam's inside this "
                            f"process (needed by --runner portable; default: none, {preset})")
    group.add_argument("--environment-type", "--environment_type", dest="environment_type",
                       type=_environment_type, choices=ENVIRONMENT_TYPES,
                       help="portable/flink: where the SDK workers run (default: LOOPBACK "
                            "with portable, EXTERNAL with flink)")
    group.add_argument("--environment-config", "--environment_config",
                       dest="environment_config", metavar="CONFIG",
                       help="EXTERNAL: worker pool HOST:PORT; DOCKER: SDK image; PROCESS: "
                            "JSON with the boot command (default: "
                            f"{DEFAULT_WORKER_POOL} with EXTERNAL, else none)")
    group.add_argument("--flink-master", "--flink_master", dest="flink_master",
                       metavar="HOST:PORT",
                       help="flink: the Flink REST address, e.g. localhost:8081, or [local] "
                            "for an embedded Flink (default: [local], which needs the job "
                            f"server jar of `make flink`; {preset})")
    group.add_argument("--parallelism", dest="parallelism", type=int, metavar="N",
                       help="flink: Flink's parallelism for the job (default: the "
                            "cluster's; an embedded Flink uses the machine's cores)")
    group.add_argument("--flink-version", "--flink_version", dest="flink_version",
                       type=_flink_version, choices=FLINK_VERSIONS,
                       help="flink: version of the Flink cluster, for Beam's job server "
                            "(default: the Flink of the `make flink` jar, else "
                            f"{DEFAULT_FLINK_VERSION})")
    group.add_argument("--flink-job-server-jar", "--flink_job_server_jar",
                       dest="flink_job_server_jar", metavar="JAR",
                       help="flink: a Flink job server jar (default: the one `make flink` "
                            "fetches, when present; else Beam downloads one)")
    group.add_argument("--project", metavar="PROJECT",
                       help=f"dataflow: Google Cloud project (default: none, {preset})")
    group.add_argument("--region", metavar="REGION",
                       help=f"dataflow: e.g. us-central1 (default: none, {preset})")
    group.add_argument("--temp-location", "--temp_location", dest="temp_location",
                       metavar="GS_PATH",
                       help="dataflow: gs:// folder for temporary files (it or "
                            f"--staging-location is needed; default: none, {preset})")
    group.add_argument("--staging-location", "--staging_location", dest="staging_location",
                       metavar="GS_PATH",
                       help="dataflow: gs:// folder for staged packages (default: "
                            f"--temp-location, {preset})")
    group.add_argument("--setup-file", "--setup_file", dest="setup_file", metavar="PATH",
                       help="setup.py that workers install, '' for none (default: this "
                            "repository's with dataflow, else none)")
    group.add_argument("--worker-machine-type", "--worker_machine_type", "--machine_type",
                       dest="worker_machine_type", metavar="TYPE",
                       help="dataflow: e.g. n2-standard-4 (default: Dataflow's choice, "
                            f"{preset})")
    group.add_argument("--max-workers", "--max_num_workers", dest="max_workers", type=int,
                       metavar="N",
                       help=f"dataflow: autoscaling limit (default: Dataflow's, {preset})")
    group.add_argument("--sdk-container-image", "--sdk_container_image",
                       dest="sdk_container_image", metavar="IMAGE",
                       help="dataflow: worker image, e.g. the Flex Template image (default: "
                            f"Beam's SDK image, {preset})")
    group.add_argument("--dry-run", "--dry_run", dest="dry_run", nargs="?", const=True,
                       default=None, type=_boolean, metavar="BOOL",
                       help="dataflow: build the job request without staging or submitting "
                            "it; --dry-run=false to undo (default: off)")


def _boolean(value: str) -> bool:
    # ``--dry_run=True`` is how Beam and a Flex Template write it; bare ``--dry-run`` too.
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


_PER_RUNNER: dict[str, tuple[str, ...]] = {
    "portable": ("job_endpoint",),
    "flink": ("flink_master", "flink_version", "flink_job_server_jar", "parallelism"),
    "dataflow": ("project", "region", "temp_location", "staging_location",
                 "worker_machine_type", "max_workers", "sdk_container_image", "dry_run"),
}
_ENVIRONMENT = ("environment_type", "environment_config")


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _get(args: argparse.Namespace | Any, name: str) -> Any:
    return getattr(args, name, None)


def _check_foreign_flags(args: argparse.Namespace, runner: str) -> None:
    """A flag of another runner is almost always a mistake (``--runner`` forgotten), so it is
    an error rather than silently ignored."""
    for owner, names in _PER_RUNNER.items():
        if owner == runner:
            continue
        for name in names:
            value = _get(args, name)
            if value is not None and value is not False:
                raise RunnerConfigError(
                    f"{_flag(name)} is a {owner} flag but --runner is {runner}; "
                    f"add --runner {owner} or drop {_flag(name)}")
    if runner not in ("portable", "flink"):
        for name in _ENVIRONMENT:
            if _get(args, name) is not None:
                raise RunnerConfigError(
                    f"{_flag(name)} only applies to --runner portable or flink "
                    f"(Dataflow workers use --sdk-container-image)")


def _check_host_port(flag: str, value: str) -> None:
    if not _HOST_PORT.match(value):
        raise RunnerConfigError(f"{flag} must be HOST:PORT, got {value!r}")


def _environment_args(args: argparse.Namespace, default_type: str) -> list[str]:
    env_type = _get(args, "environment_type") or default_type
    config = _get(args, "environment_config")
    if env_type == "EXTERNAL":
        config = config or DEFAULT_WORKER_POOL
        _check_host_port("--environment-config (EXTERNAL worker pool)", config)
    elif env_type == "PROCESS" and not config:
        raise RunnerConfigError(
            "--environment-type PROCESS needs --environment-config "
            "'{\"command\": \"/opt/apache/beam/boot\"}' (the SDK harness boot command)")
    elif env_type == "LOOPBACK" and config:
        raise RunnerConfigError("--environment-config has no meaning with LOOPBACK "
                                "(the worker runs inside this process)")
    out = [f"--environment_type={env_type}"]
    if config:
        out.append(f"--environment_config={config}")
    return out


def _setup_file_args(args: argparse.Namespace, runner: str) -> list[str]:
    setup_file = _get(args, "setup_file")
    if setup_file is None and runner == "dataflow":
        # Dataflow workers start from a stock image; without the package they cannot import
        # ``transforms``. An explicit '' opts out (an SDK image with ndcl installed).
        if not REPO_SETUP_PY.is_file() and not _get(args, "sdk_container_image"):
            raise RunnerConfigError(
                "dataflow workers need the ndcl package: pass --setup-file PATH/setup.py or "
                "--sdk-container-image IMAGE (with ndcl installed)")
        setup_file = str(REPO_SETUP_PY) if REPO_SETUP_PY.is_file() else ""
    if not setup_file:
        return []
    if not Path(setup_file).is_file():
        raise RunnerConfigError(f"--setup-file {setup_file!r} does not exist")
    return [f"--setup_file={setup_file}"]


# Fields of beam_pipeline.config.PipelineConfig (the YAML ``pipeline`` section) that are
# runner flags here, under the same names.
PIPELINE_CONFIG_FIELDS = ("runner", "job_endpoint", "flink_master", "project", "region",
                          "temp_location", "staging_location", "worker_machine_type",
                          "max_workers", "sdk_container_image")


def apply_pipeline_config(args: argparse.Namespace, pipeline_cfg: Any) -> argparse.Namespace:
    """``args`` with the runner flags left unset taken from ``pipeline_cfg`` (a
    ``PipelineConfig``: the YAML ``pipeline`` section). Flags win over the YAML, as for the
    dedup and cluster sections. Only the YAML fields of the runner in effect are used, so
    ``--runner direct`` with a Dataflow preset runs locally instead of failing on the
    preset's ``project``; flags of another runner typed on the command line stay errors."""
    merged = argparse.Namespace(**vars(args))
    runner = _get(args, "runner") or _get(pipeline_cfg, "runner") or "direct"
    merged.runner = runner_name(runner)
    for name in _PER_RUNNER.get(merged.runner, ()):
        value = _get(pipeline_cfg, name)
        if name in PIPELINE_CONFIG_FIELDS and _get(merged, name) is None and value is not None:
            setattr(merged, name, value)
    return merged


def runner_beam_args(args: argparse.Namespace) -> list[str]:
    """Beam pipeline option strings for the runner flags in ``args`` (see the module
    docstring); raises :class:`RunnerConfigError` naming the missing or misplaced flag."""
    runner = _get(args, "runner") or "direct"
    if runner not in RUNNERS:
        runner = runner_name(runner)
    _check_foreign_flags(args, runner)
    if runner == "direct":
        # make_pipeline_options picks the FnApiRunner when no --runner reaches Beam.
        return _setup_file_args(args, runner)
    if runner == "portable":
        endpoint = _get(args, "job_endpoint")
        if not endpoint:
            raise RunnerConfigError(
                "--runner portable needs --job-endpoint HOST:PORT (a running job service, "
                "e.g. `python -m apache_beam.runners.portability.local_job_service_main "
                "--port 8099` or the Flink job server of runners/flink/docker-compose.yml)")
        if endpoint != "embed":  # Beam's job service inside this process (tests, debugging)
            _check_host_port("--job-endpoint", endpoint)
        return [
            "--runner=PortableRunner", f"--job_endpoint={endpoint}",
            *_environment_args(args, "LOOPBACK"), *_setup_file_args(args, runner),
        ]
    if runner == "prism":
        from runners.prism import prism_beam_args

        return [*prism_beam_args(args), *_setup_file_args(args, "prism")]
    if runner == "flink":
        return _flink_args(args)
    return _dataflow_args(args)


def _flink_args(args: argparse.Namespace) -> list[str]:
    from runners.flink.dist import jar_versions, job_server_jar

    master = _get(args, "flink_master")
    jar = _get(args, "flink_job_server_jar")
    jar_flink = None
    if not jar:
        local = job_server_jar()
        if local.is_file():
            jar = str(local)
            jar_flink = jar_versions(local).get("flink_minor")
        elif not master or master == "[local]":
            # Beam would try to download its own job server (not served here) or build it.
            raise RunnerConfigError(
                "--runner flink needs --flink-master HOST:PORT (a Flink cluster's REST "
                f"address), or run `make flink` for an embedded Flink ({local} is missing)")
    elif not re.match(r"^https?://", jar) and not Path(jar).is_file():
        raise RunnerConfigError(f"--flink-job-server-jar {jar!r} does not exist")
    master = master or "[local]"
    if master not in ("[local]", "[auto]"):
        _check_host_port("--flink-master", re.sub(r"^https?://", "", master))
    version = _get(args, "flink_version")
    if version and jar_flink and version != jar_flink:
        raise RunnerConfigError(
            f"--flink-version {version} does not match the `make flink` job server (Flink "
            f"{jar_flink}); drop --flink-version or give --flink-job-server-jar")
    # --streaming: Beam's Flink runner then translates with Flink's DataStream API. Its batch
    # translation (the DataSet API) hands the plan to Flink's DataSet optimizer, which did not
    # finish on ndcl's graph in 5 minutes (a CPU-bound recursion over the plan's branches,
    # SingleInputNode/TwoInputNode.accept); the streaming translation runs bounded input to
    # completion with outputs byte-identical to the direct runner's.
    out = ["--runner=FlinkRunner", f"--flink_master={master}",
           f"--flink_version={version or jar_flink or DEFAULT_FLINK_VERSION}", "--streaming"]
    if jar:
        out.append(f"--flink_job_server_jar={jar}")
    if master == "[local]" and (EMBEDDED_FLINK_CONF / "config.yaml").is_file():
        out.append(f"--flink_conf_dir={EMBEDDED_FLINK_CONF}")
    parallelism = _get(args, "parallelism")
    if parallelism is not None:
        if parallelism < 1:
            raise RunnerConfigError(f"--parallelism must be >= 1, got {parallelism}")
        # One Python SDK worker per slot: Beam's default is one per task manager, whose
        # threads then share one GIL, so a second slot added no core.
        out += [f"--parallelism={parallelism}", f"--sdk_worker_parallelism={parallelism}"]
    # An embedded Flink runs on this machine, so it can reach an SDK worker pool inside this
    # process (Beam's FlinkRunner picks LOOPBACK there too); a cluster's task managers cannot.
    default_env = "LOOPBACK" if master == "[local]" else "EXTERNAL"
    env_args = _environment_args(args, default_env)
    if env_args[0] == "--environment_type=LOOPBACK" and (parallelism or 1) > 1:
        # LOOPBACK workers are threads of this process unless asked to be processes (started
        # as `python` from PATH: see loopback_worker_env).
        out.append(f"--experiments={LOOPBACK_PROCESS_WORKERS}")
    return [*out, *env_args, *_setup_file_args(args, "flink")]


def loopback_worker_env(beam_args: list[str]) -> dict[str, str]:
    """Environment variables to set before running ``beam_args``: Beam starts LOOPBACK process
    workers as ``python -c ...`` from PATH, so this interpreter's folder goes first; and the
    job server JVM (a short-lived process on a 2-core machine) gets the C1 compiler only
    (``-XX:TieredStopAtLevel=1``: the demo corpus's embedded Flink run spent more CPU in
    C2 compilation than in Flink's operators; unless ``JDK_JAVA_OPTIONS`` is set)."""
    env: dict[str, str] = {}
    options = PipelineOptions(beam_args)
    if options.view_as(DebugOptions).lookup_experiment(LOOPBACK_PROCESS_WORKERS):
        env["PATH"] = f"{_worker_python_dir()}{os.pathsep}{os.environ.get('PATH', '')}"
    if (options.view_as(StandardOptions).runner == "FlinkRunner"
            and "JDK_JAVA_OPTIONS" not in os.environ):
        env["JDK_JAVA_OPTIONS"] = "-XX:TieredStopAtLevel=1"
    return env


def _worker_python_dir() -> str:
    """A folder whose ``python`` runs this interpreter with its stderr sent to
    ``sdk-workers.log`` beside it: a failing task's traceback is printed by every worker that
    ran it, while ``ndcl`` already prints the cause once (and logs it in full without -q).
    The folder is removed when ``ndcl`` exits."""
    import atexit
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="ndcl-workers-"))
    shim = folder / "python"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@" 2>>"{folder}/sdk-workers.log"\n')
    shim.chmod(0o755)
    atexit.register(shutil.rmtree, folder, True)
    return str(folder)


def workers_on_this_machine(beam_args: list[str]) -> bool:
    """Whether the SDK workers of ``beam_args`` run on this machine, so that they can reach a
    K-Means service started here: the direct runner, and Flink or a job service on localhost
    (embedded, LOOPBACK, or a standalone cluster of ``runners/flink/cluster.sh``)."""
    options = PipelineOptions(beam_args)
    runner = options.view_as(StandardOptions).runner or "direct"
    if runner in ("direct", "DirectRunner", "PrismRunner"):
        return True
    if runner == "FlinkRunner":
        # Beam's default master, [auto], is an embedded Flink too.
        host = re.sub(r"^https?://", "", options.view_as(FlinkRunnerOptions).flink_master)
    elif runner == "PortableRunner":
        host = options.view_as(PortableOptions).job_endpoint or ""
    else:
        return False
    host = host.rsplit(":", 1)[0] if ":" in host and host != "[local]" else host
    return host in ("[local]", "[auto]", "embed", "localhost", "127.0.0.1", "::1", "")


def _check_gcs_location(flag: str, value: str) -> None:
    """Beam's own rules for a temp/staging location. Checked here because when both are
    invalid Beam does not stop: it looks up credentials and tries to create a default bucket
    (minutes of retries offline), even with --dry_run."""
    match = re.fullmatch(PipelineOptionsValidator.GCS_URI, value, re.DOTALL)
    if (match is None or match.group("SCHEME") != PipelineOptionsValidator.GCS_SCHEME
            or match.group("OBJECT") is None):
        raise RunnerConfigError(f"{flag} must be gs://BUCKET/PATH for Dataflow, got {value!r}")
    if not re.fullmatch(PipelineOptionsValidator.GCS_BUCKET, match.group("BUCKET")):
        raise RunnerConfigError(f"{flag}: {match.group('BUCKET')!r} is not a valid bucket name "
                                "(3-63 lowercase letters, digits, -, _ or .)")


def _dataflow_args(args: argparse.Namespace) -> list[str]:
    missing = [flag for flag, name in (("--project", "project"), ("--region", "region"))
               if not _get(args, name)]
    temp, staging = _get(args, "temp_location"), _get(args, "staging_location")
    if not temp and not staging:
        missing.append("--temp-location gs://BUCKET/tmp")
    if missing:
        raise RunnerConfigError(f"--runner dataflow needs {', '.join(missing)}")
    for flag, value in (("--temp-location", temp), ("--staging-location", staging)):
        if value:
            _check_gcs_location(flag, value)
    if not re.fullmatch(PipelineOptionsValidator.PROJECT_ID_PATTERN, args.project):
        raise RunnerConfigError(f"--project must be a project ID (lowercase letters, digits, "
                                f"dashes), got {args.project!r}")
    out = ["--runner=DataflowRunner", f"--project={args.project}", f"--region={args.region}"]
    # Beam falls back from one location to the other when only one is given.
    if temp:
        out.append(f"--temp_location={temp}")
    if staging:
        out.append(f"--staging_location={staging}")
    out += _setup_file_args(args, "dataflow")
    if _get(args, "worker_machine_type"):
        out.append(f"--worker_machine_type={args.worker_machine_type}")
    if _get(args, "max_workers") is not None:
        if args.max_workers < 1:
            raise RunnerConfigError(f"--max-workers must be >= 1, got {args.max_workers}")
        out.append(f"--max_num_workers={args.max_workers}")
    if _get(args, "sdk_container_image"):
        out.append(f"--sdk_container_image={args.sdk_container_image}")
    if _get(args, "dry_run"):
        out.append("--dry_run=True")
    return out


# --- graph inspection ----------------------------------------------------------------------


def pipeline_proto(pipeline: beam.Pipeline) -> beam_runner_api_pb2.Pipeline:
    """The portable (Runner API) form of ``pipeline``, what every runner receives; building it
    runs no transform."""
    return pipeline.to_runner_api()


def _walk(proto: beam_runner_api_pb2.Pipeline, ids: Any) -> Iterator[str]:
    transforms = proto.components.transforms
    for transform_id in ids:
        transform = transforms[transform_id]
        yield transform_id
        yield from _walk(proto, transform.subtransforms)


def describe_stages(proto: beam_runner_api_pb2.Pipeline) -> list[str]:
    """Unique names of every transform, composites before their parts, in graph order
    (``ReadDocuments``, ``ReadDocuments/ListInputFiles``, ...). The synthetic root that
    ``to_runner_api`` wraps the graph in (no URN) is left out."""
    transforms = proto.components.transforms
    names = []
    for transform_id in _walk(proto, proto.root_transform_ids):
        transform = transforms[transform_id]
        if transform_id in proto.root_transform_ids and not transform.spec.urn:
            continue
        names.append(transform.unique_name)
    return names


def count_group_by_keys(proto: beam_runner_api_pb2.Pipeline) -> int:
    """Primitive GroupByKeys (``beam:transform:group_by_key:v1``) in ``proto``: the shuffles a
    runner executes, including those inside Reshuffle, CombinePerKey and CoGroupByKey."""
    return sum(1 for t in proto.components.transforms.values()
               if t.spec.urn == GROUP_BY_KEY_URN)


def group_by_key_names(proto: beam_runner_api_pb2.Pipeline) -> list[str]:
    """Sorted unique names of the primitive GroupByKeys (see :func:`count_group_by_keys`)."""
    return sorted(t.unique_name for t in proto.components.transforms.values()
                  if t.spec.urn == GROUP_BY_KEY_URN)
