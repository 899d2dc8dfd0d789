"""Dataflow dry run: build the ``ndcl`` job exactly as a real run would, hand it to the
DataflowRunner with Beam's ``--dry_run=True``, and report what would be submitted, without
staging, submitting, reading inputs or starting a K-Means service.

    ndcl run --workflow cl_nd --input 'gs://B/c4/*.json.gz' --output gs://B/out \\
        --kmeans-backend local --runner dataflow --project P --region us-central1 \\
        --temp-location gs://B/tmp --dry-run

(once the runner flags are wired into the CLI; see :func:`run_dry_command`). The DataflowRunner
applies its overrides, translates the graph to the Runner API, resolves the worker environment
(container image, the sdist of ``--setup-file``) and builds the job request, then returns
before any Cloud call, so this works offline. ``ndcl``'s own post-run steps (reading
``_stats.json``, the accounting check, the commit of OUT) are skipped because nothing ran.
Why not the normal run path: it would match ``gs://`` inputs, start a local Ray service for
``--kmeans-backend ray`` and then look for outputs of a job that never ran.
"""

from __future__ import annotations

import argparse
import logging
import sys
import uuid
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions, TestOptions
from apache_beam.portability.api import beam_runner_api_pb2

from beam_pipeline.config import ClusterConfig, DedupConfig
from runners.kmeans.backend import connect_backend
from runners.options import (
    RunnerConfigError,
    describe_stages,
    group_by_key_names,
)

LOG = logging.getLogger("ndcl")
COMMANDS = ("dedup", "cluster", "run")


@dataclass
class DryRunReport:
    """What the DataflowRunner would submit."""

    command: str
    workflow: str | None
    job_name: str
    stages: list[str]  # top-level transforms, in graph order
    transforms: list[str]  # every transform's unique name
    group_by_keys: list[str]  # primitive GroupByKeys after Dataflow's overrides
    images: list[str]  # SDK container image of each environment
    staged: list[str]  # artifacts the workers would receive (e.g. workflow.tar.gz)
    warnings: list[str] = field(default_factory=list)
    proto: beam_runner_api_pb2.Pipeline | None = None


def _is_remote(path: str) -> bool:
    return "://" in path


def _files_for_graph(inputs: list[str], warnings: list[str]) -> list[str]:
    """Local patterns are matched (a typo fails here as it would in a real run); remote ones
    are kept as written, because matching ``gs://`` needs credentials and network and the
    graph's shape does not depend on the file list (the launcher matches them for real)."""
    from transforms.read import match_inputs

    files = []
    for pattern in inputs:
        if _is_remote(pattern):
            files.append(pattern)
            continue
        files.extend(match_inputs([pattern]))
    if any(_is_remote(p) for p in inputs):
        warnings.append("remote input patterns were not matched (dry run); the run matches "
                        "them when it starts")
    return sorted(set(files))


def _check_dataflow(options: PipelineOptions) -> None:
    runner = options.view_as(StandardOptions).runner
    dry = options.view_as(TestOptions).dry_run
    if str(runner) not in ("DataflowRunner", "dataflow") or str(dry).lower() not in ("true",
                                                                                      "1"):
        raise RunnerConfigError(
            "a dry run needs --runner dataflow --dry-run (Beam: --runner=DataflowRunner "
            f"--dry_run=True); got runner={runner!r}, dry_run={dry!r}")


def _environment_report(proto: beam_runner_api_pb2.Pipeline) -> tuple[list[str], list[str]]:
    images: list[str] = []
    staged: list[str] = []
    for env in proto.components.environments.values():
        if env.urn == "beam:env:docker:v1":
            images.append(beam_runner_api_pb2.DockerPayload.FromString(env.payload)
                          .container_image)
        for dep in env.dependencies:
            if dep.role_urn == "beam:artifact:role:staging_to:v1":
                staged.append(beam_runner_api_pb2.ArtifactStagingToRolePayload
                              .FromString(dep.role_payload).staged_name)
    return sorted(set(images)), sorted(set(staged))


def build_graph(pipeline: beam.Pipeline, command: str, files: list[str], output: str,
                dedup_cfg: DedupConfig, cluster_cfg: ClusterConfig, workflow: str = "nd_cl",
                dedup_scope: str = "cluster_A") -> None:
    """Add the graph of ``ndcl <command>`` to ``pipeline`` as ``beam_pipeline.run`` does (same
    builders, same staging folder and model folder), without starting anything."""
    from beam_pipeline.outputs import staging_path
    from beam_pipeline.pipeline import build_cluster, build_dedup, build_pipeline
    from transforms.cluster import BackendSpec

    if command not in COMMANDS:
        raise ValueError(f"command must be one of {COMMANDS}, got {command!r}")
    staging = staging_path(output)
    if command == "dedup":
        build_dedup(pipeline, dedup_cfg, files, staging)
        return
    spec = BackendSpec(kind=cluster_cfg.backend, model_dir=staging.rstrip("/") + "/_models",
                       address=cluster_cfg.service_address,
                       timeout_s=cluster_cfg.service_timeout_s, connect=connect_backend)
    run_id = f"run-{uuid.uuid4().hex[:12]}"
    if command == "cluster":
        build_cluster(pipeline, cluster_cfg, files, staging, spec, run_id,
                      dedup_cfg.max_doc_bytes, dedup_cfg.batch_size)
    else:
        build_pipeline(pipeline, workflow, dedup_cfg, cluster_cfg, files, staging, spec,
                       run_id, dedup_scope)


def dry_run(command: str, inputs: list[str], output: str, dedup_cfg: DedupConfig,
            cluster_cfg: ClusterConfig, beam_args: list[str], workflow: str = "nd_cl",
            dedup_scope: str = "cluster_A") -> DryRunReport:
    """Build ``ndcl <command>`` and run it on the DataflowRunner in dry-run mode.

    ``beam_args`` must select ``DataflowRunner`` with ``--dry_run=True`` (what
    ``runner_beam_args`` emits for ``--runner dataflow --dry-run``); anything else raises
    :class:`RunnerConfigError`, because "dry" on another runner would really run.
    """
    options = PipelineOptions(beam_args)
    _check_dataflow(options)
    warnings: list[str] = []
    if command != "dedup" and cluster_cfg.backend == "ray" and not cluster_cfg.service_address:
        # A real run would start a Ray head on the launching machine, which Dataflow workers
        # cannot reach.
        warnings.append("--kmeans-backend ray without --service-address: Dataflow workers "
                        "cannot reach a service started on this machine; use "
                        "--kmeans-backend local or a ray://HOST:10001 reachable from them")
    for label, path in [("output", output), *(("input", p) for p in inputs)]:
        if not path.startswith("gs://"):
            warnings.append(f"{label} {path!r} is not gs://: Dataflow workers would read or "
                            "write their own local disks")
    files = _files_for_graph(inputs, warnings)
    pipeline = beam.Pipeline(options=options)
    build_graph(pipeline, command, files, output, dedup_cfg, cluster_cfg, workflow,
                dedup_scope)
    result = pipeline.run()
    job: Any = getattr(result, "job", None)
    if job is None:  # pragma: no cover - Beam's DataflowRunner always sets it in dry runs
        raise RuntimeError("the DataflowRunner returned no job in dry-run mode")
    proto = job.proto_pipeline
    transforms = proto.components.transforms
    roots = [transforms[i] for i in proto.root_transform_ids]
    top = [transforms[s].unique_name for r in roots for s in r.subtransforms] if (
        len(roots) == 1 and not roots[0].spec.urn) else [r.unique_name for r in roots]
    images, staged = _environment_report(proto)
    return DryRunReport(
        command=command, workflow=workflow if command == "run" else None,
        job_name=job.proto.name, stages=top, transforms=describe_stages(proto),
        group_by_keys=group_by_key_names(proto), images=images, staged=staged,
        warnings=warnings, proto=proto)


def format_report(report: DryRunReport) -> str:
    what = report.command + (f" --workflow {report.workflow}" if report.workflow else "")
    # The steps that log a stage's end (``Report<Stage>Ended``) would double the line.
    work = [s for s in report.stages if not (s.startswith("Report") and s.endswith("Ended"))]
    reports = len(report.stages) - len(work)
    lines = [
        f"Dataflow dry run of `ndcl {what}` (nothing staged or submitted)",
        f"  job name        {report.job_name}",
        f"  stages          {' -> '.join(work)}"
        + (f" (and {reports} stage-end reports)" if reports else ""),
        f"  transforms      {len(report.transforms)}",
        f"  group-by-keys   {len(report.group_by_keys)}",
        f"  worker image    {', '.join(report.images) or '-'}",
        f"  staged files    {', '.join(report.staged) or '-'}",
    ]
    lines += [f"  warning: {w}" for w in report.warnings]
    return "\n".join(lines)


def run_dry_command(args: argparse.Namespace, dedup_cfg: DedupConfig,
                    cluster_cfg: ClusterConfig, beam_args: list[str]) -> int:
    """CLI entry for ``--dry-run``: ``args`` is the parsed ``ndcl dedup|cluster|run``
    namespace (``command``, ``input``, ``output``, and for ``run`` ``workflow`` and
    ``dedup_scope``), ``beam_args`` already include ``runner_beam_args(args)``. Prints the
    report; returns the exit status (2 for runner flag errors)."""
    try:
        report = dry_run(args.command, args.input, args.output, dedup_cfg, cluster_cfg,
                         beam_args, getattr(args, "workflow", "nd_cl"),
                         getattr(args, "dedup_scope", "cluster_A"))
    except RunnerConfigError as exc:
        print(f"ndcl: runner error: {exc}", file=sys.stderr)
        return 2
    print(format_report(report))
    return 0
