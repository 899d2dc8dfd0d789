"""Run the ND job: match inputs, build the graph, run it, check the accounting, commit OUT.

Before anything starts, the inputs are matched (streams copied once) and the output location is
checked and its staging folder created (``beam_pipeline.outputs``: NDCL replaces only an empty
folder or its own earlier output). Output is written to ``OUT.ndcl-staging`` and only moved to
OUT after the job succeeded and ``read = kept + duplicates + rejected`` was checked, with
``summary.json``, the manifest ``_ndcl.json`` and an ``_SUCCESS`` marker written last. A
crashed run therefore leaves at most a staging folder (cleared by the next run), never a
half-written OUT; an existing OUT is replaced only by a complete one (see ``commit_output``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import (
    GoogleCloudOptions,
    PipelineOptions,
    StandardOptions,
)

from beam_pipeline.config import ClusterConfig, DedupConfig
from beam_pipeline.inputs import resolved_inputs
from beam_pipeline.outputs import commit_output, discard_staging, prepare_output
from beam_pipeline.pipeline import (
    CLUSTER_FIT_FILE,
    CLUSTER_STATS_FILE,
    GraphPlan,
    build_graph,
)
from beam_pipeline.progress import ProgressReporter, live_counts_expected, log_stage_counts
from beam_pipeline.timeline import Timeline, time_section
from runners.kmeans.backend import connect_backend
from runners.kmeans.errors import ServiceUnavailableError
from transforms.cluster import BackendSpec
from transforms.lsh import detection_probability
from transforms.read import id_names

LOG = logging.getLogger("ndcl")


class AccountingError(RuntimeError):
    """The outputs do not account for every input record."""


@dataclass
class RunResult:
    summary: dict[str, Any]
    output: str
    metrics: dict[str, int] = field(default_factory=dict)


def write_text(path: str, text: str) -> None:
    with FileSystems.create(path) as handle:
        handle.write(text.encode("utf-8"))


class ViewCachingOptions(PipelineOptions):
    """PipelineOptions whose ``view_as`` makes each view once.

    Beam calls ``view_as`` about 1,400 times while building NDCL's graph (``TypeOptions`` at
    every apply), and each call builds a fresh options object through argparse: 0.3 s of
    the graph's construction. Every view shares the options' one value dict
    (``_all_options``), so a kept view always reads and writes the current values."""

    def view_as(self, cls: type) -> Any:
        views = self.__dict__.setdefault("_ndcl_views", {})  # not an option: bypass setattr
        view = views.get(cls)
        if view is None:
            view = views[cls] = super().view_as(cls)
        return view


def make_pipeline_options(beam_args: list[str]) -> PipelineOptions:
    options = ViewCachingOptions(beam_args)
    standard = options.view_as(StandardOptions)
    if "dataflow" in str(standard.runner).lower():
        # The ndcl program imports Beam without its Google Cloud modules unless the command
        # line names them; a preset or a recorded run may name Dataflow only inside a file.
        from beam_pipeline._startup import load_deferred_modules

        load_deferred_modules()
    if standard.runner in (None, "DirectRunner", "direct"):
        # Plain DirectRunner tries the Prism runner first, which downloads a binary; machines
        # without internet fail there. The FnApiRunner is Beam's local portable runner.
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner

        standard.runner = FnApiRunner()
    return options


def make_pipeline(beam_args: list[str]) -> beam.Pipeline:
    options = make_pipeline_options(beam_args)
    if options.view_as(StandardOptions).runner == "FlinkRunner":
        from runners.flink.runner import JobScopedFlinkRunner

        # Beam's own FlinkRunner would keep this job's server JVM until the process exits.
        # Given as the Pipeline's runner: the option itself must stay a name (Beam's
        # stager reads it as one).
        return beam.Pipeline(runner=JobScopedFlinkRunner(), options=options)
    return beam.Pipeline(options=options)


def collect_metrics(result: Any) -> dict[str, int]:
    try:
        counters = result.metrics().query(MetricsFilter().with_namespace("ndcl"))["counters"]
    except Exception as exc:
        LOG.warning("could not read pipeline metrics: %s", exc)
        return {}
    totals: dict[str, int] = {}
    for counter in counters:
        value = counter.committed if counter.committed is not None else counter.attempted
        totals[counter.key.metric.name] = totals.get(counter.key.metric.name, 0) + int(value or 0)
    return totals


def build_summary(stats: dict[str, int], cfg: DedupConfig, bands: int, rows: int,
                  files: list[str], metrics: dict[str, int]) -> dict[str, Any]:
    """The summary of a run that removed near-duplicates (timing fields added by the run)."""
    rejected = stats.get("rejected", 0)
    exact = stats.get("duplicates_exact", 0)
    near = stats.get("duplicates_near", 0)
    rounds = sorted(k for k in stats if k.startswith("cc_changed_round_"))
    changes = [stats[k] for k in rounds]
    used = next((i + 1 for i, n in enumerate(changes) if n == 0), len(changes))
    return {
        "read": stats.get("parsed", 0) + rejected,
        "kept": stats.get("kept", 0),
        "duplicates": exact + near,
        "duplicates_exact": exact,
        "duplicates_near": near,
        "rejected": rejected,
        "rejected_by_reason": {k.split(":", 1)[1]: v for k, v in sorted(stats.items())
                               if k.startswith("rejected:")},
        "kept_untokenized": stats.get("kept_untokenized", 0),
        "threshold": cfg.threshold,
        "num_perm": cfg.num_perm,
        "ngram": cfg.ngram,
        "bands": bands,
        "rows": rows,
        "verify": cfg.verify,
        "keep": cfg.keep,
        "seed": cfg.seed,
        "candidate_edges": stats.get("candidate_edges", 0),
        "edges_verified": stats.get("edges_verified", 0),
        "edges_rejected": stats.get("edges_rejected", 0),
        "buckets_capped": stats.get("buckets_capped", 0),
        "bucket_members_dropped": stats.get("bucket_members_dropped", 0),
        "cc_rounds": used,
        "cc_max_rounds": cfg.cc_max_rounds,
        "cc_changed_per_round": changes[:used],
        # Edges the rounds left unconverged, finished on one worker (0 when they converged).
        "cc_finished_locally_edges": stats.get("cc_finished_locally_edges", 0),
        "input_files": len(files),
        "input_bytes": input_bytes(files),
        "stage_seconds": stage_seconds(metrics),
        # CPU seconds of the stages that run threads of their own (compute_features).
        "stage_cpu_seconds": stage_seconds(metrics, "cpu_msecs_"),
        "config": cfg.to_dict(),
        "config_hash": cfg.fingerprint(),
    }


def stage_seconds(metrics: dict[str, int], prefix: str = "msecs_") -> dict[str, float]:
    """Each stage's time (its DoFns' ``msecs_*`` counters, summed over workers); with
    ``prefix="cpu_msecs_"``, the CPU seconds of the stages that count them."""
    return {k[len(prefix):]: round(v / 1000, 3)
            for k, v in sorted(metrics.items()) if k.startswith(prefix)}


def input_bytes(files: list[str]) -> int:
    """Total size of the input files (for the run record)."""
    total = 0
    for result in FileSystems.match(files):
        total += sum(m.size_in_bytes for m in result.metadata_list)
    return total


def check_accounting(summary: dict[str, Any]) -> None:
    total = summary["kept"] + summary["duplicates"] + summary["rejected"]
    if summary["read"] != total:
        raise AccountingError(
            f"accounting mismatch: read={summary['read']} but kept+duplicates+rejected="
            f"{total} (kept={summary['kept']}, duplicates={summary['duplicates']}, "
            f"rejected={summary['rejected']}); output not committed")


def log_banding(cfg: DedupConfig, bands: int, rows: int) -> None:
    points = [0.5, 0.6, cfg.threshold, 0.8, 0.9]
    probs = ", ".join(f"P({s:.2f})={float(detection_probability(s, bands, rows)):.3f}"
                      for s in sorted(set(points)))
    LOG.info("LSH banding: b=%d bands x r=%d rows (threshold %.2f, %d permutations); "
             "detection probability %s", bands, rows, cfg.threshold, cfg.num_perm, probs)


_SERVICE_ERROR = re.compile(r"ServiceUnavailableError: (.+)")


def service_error_from(exc: BaseException) -> Exception | None:
    """The K-Means service error behind a failed job, as a ``ServiceUnavailableError``.

    A worker's exception reaches the driver in different shapes: the in-process FnApiRunner
    re-raises it as its own type, worker processes and job services as a RuntimeError holding
    the worker's traceback as text. Either way the CLI should say "K-Means service
    unavailable" (exit 3) with the service's message, not print a worker traceback.
    """
    if isinstance(exc, ServiceUnavailableError):
        return None  # already the right type: let it through unchanged
    matches = _SERVICE_ERROR.findall(str(exc))
    if not matches:
        return None

    return ServiceUnavailableError(matches[-1].strip())


def input_entries(files: list[str]) -> list[dict[str, Any]]:
    """The manifest's ``inputs``: each input file's path, size, modification time and the
    name its derived ids use, so that ``ndcl show`` can re-read the documents it prints and
    tell when an input changed since the run. Local paths are made absolute (the run's
    working directory is not ``ndcl show``'s)."""
    names = id_names(files)
    entries = []
    for path, result in zip(files, FileSystems.match(files)):
        meta = next((m for m in result.metadata_list if m.path == path), None)
        entries.append({"path": path if "://" in path else os.path.abspath(path),
                        "id_name": names[path],
                        "size": meta.size_in_bytes if meta else None,
                        "mtime": getattr(meta, "last_updated_in_seconds", None)})
    return entries


def _run(pipeline: beam.Pipeline, reporter: ProgressReporter, staging: str,
         timeline: Timeline) -> dict[str, int] | None:
    """Run the job to its end and read its metrics; None for a template launch (the job runs
    later). On failure the staging folder (NDCL's own, marked) is discarded."""
    try:
        with reporter:
            result = pipeline.run()
            template = pipeline.options.view_as(GoogleCloudOptions).template_location
            if template:
                # A Flex/classic template launch only writes the job file; the job runs
                # later, so there is nothing to summarise or commit here.
                reporter.discard()
                LOG.info("template written to %s; the job's output will be staged at %s",
                         template, staging)
                return None
            result.wait_until_finish()
        timeline.mark("run")
    except Exception as exc:
        discard_staging(staging)
        service_error = service_error_from(exc)
        if service_error is None:
            raise
        raise service_error from exc
    return collect_metrics(result)


def _run_and_commit(pipeline: beam.Pipeline, staging: str, output: str,
                    summarise: Any, files: list[str], timeline: Timeline) -> RunResult:
    """Run ``pipeline``, build the summary from its ``_stats.json`` (with the run's time
    parts), check the accounting and commit ``staging`` to ``output`` (its manifest lists the
    input ``files``). Progress is reported while the job runs (``beam_pipeline.progress``)."""
    reporter = ProgressReporter(len(files), input_bytes(files),
                                live_counts_expected(pipeline.options))
    try:
        metrics = _run(pipeline, reporter, staging, timeline)
    finally:
        # runners.flink.runner.JobScopedFlinkRunner: its job server JVM ends with the job.
        stop_servers = getattr(pipeline.runner, "stop_job_servers", None)
        if stop_servers is not None:
            stop_servers()
    if metrics is None:
        return RunResult(summary={}, output=output)
    stats = read_json(staging.rstrip("/") + "/_stats.json")
    summary = summarise(stats, metrics)
    summary.update(time_section(timeline, summary.get("stage_seconds", {})))
    log_stage_counts(summary)
    check_accounting(summary)
    write_text(staging.rstrip("/") + "/summary.json", json.dumps(summary, indent=2) + "\n")
    commit_output(staging, output, {"inputs": input_entries(files)})
    return RunResult(summary=summary, output=output, metrics=metrics)


def read_json(path: str) -> Any:
    with FileSystems.open(path) as handle:
        return json.loads(handle.read().decode())


def read_cluster_reports(staging: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The fit summary and the cluster-quality aggregate the clustering graph wrote."""
    folder = staging.rstrip("/")
    return (read_json(f"{folder}/{CLUSTER_FIT_FILE}"),
            read_json(f"{folder}/{CLUSTER_STATS_FILE}"))


@contextlib.contextmanager
def kmeans_service(cfg: ClusterConfig) -> Iterator[str | None]:
    """The address of a K-Means service for this run, stopping afterwards what it started.

    ``backend: local`` needs none. An explicit ``service_address`` is checked (a clear error
    if unreachable) and left running. Otherwise a service recorded by ``ndcl service start``
    is used when it answers, and if there is none a local one is started for this run only.
    """
    if cfg.backend == "local":
        yield None
        return
    from runners.kmeans.service import (
        DEFAULT_STATE_FILE,
        KMeansClient,
        ServiceConfig,
        service_status,
        start_service,
        stop_service,
    )

    if cfg.service_address is not None:
        client = KMeansClient.connect(ServiceConfig(address=cfg.service_address),
                                      timeout_s=cfg.service_timeout_s)
        LOG.info("K-Means service at %s: %s", cfg.service_address, client.health())
        yield cfg.service_address
        return
    status = service_status(ServiceConfig(), state_file=DEFAULT_STATE_FILE)
    if status.ok and status.address:
        LOG.info("using the K-Means service recorded in %s (%s)", DEFAULT_STATE_FILE,
                 status.address)
        yield status.address
        return
    with tempfile.TemporaryDirectory(prefix="ndcl-service-") as tmp:
        state_file = os.path.join(tmp, "service.json")
        LOG.info("starting a local Ray head and the K-Means service for this run")
        started = start_service(ServiceConfig(num_cpus=cfg.service_num_cpus,
                                              model_dir=os.path.join(tmp, "models")),
                                state_file=state_file, timeout_s=cfg.service_timeout_s)
        LOG.info("K-Means service ready at %s (%.1f s)", started.address, started.seconds)
        try:
            yield started.address
        finally:
            stopped = stop_service(state_file)
            LOG.info("stopped the run's K-Means service (actor killed: %s, head stopped: %s)",
                     stopped.killed_actor, stopped.stopped_head)


def cluster_section(cfg: ClusterConfig, fit: dict[str, Any], quality: dict[str, Any] | None
                    ) -> dict[str, Any]:
    """``summary["cluster"]``: the K-Means fits and, per level, the quality measures.

    ``level_1`` is the level-1 fit plus ``nmi``/``ari`` (kept documents with a label, counted
    in ``labelled_docs``), ``silhouette`` (on the fitted sample) and ``sizes`` (kept documents
    per cluster: count, min, median, max and every size by id); ``level_2`` the same for the
    ``(cluster_A, cluster_B)`` sub-clusters, with each level-1 cluster's fit under ``fits``.
    ``quality`` is the pipeline's ``_cluster_stats.json`` (``transforms.cluster_stats``).
    """
    quality = quality or {}
    silhouettes = fit.get("silhouette") or {}

    def measures(level: str, fit_key: str) -> dict[str, Any]:
        scores = quality.get(level) or {}
        return {"nmi": scores.get("nmi"), "ari": scores.get("ari"),
                "silhouette": silhouettes.get(fit_key),
                "labelled_docs": quality.get("labelled_docs"), "sizes": scores.get("sizes")}

    return {
        "k1": cfg.k1, "k2": cfg.k2, "backend": cfg.backend, "sample": fit.get("sample"),
        "label_field": quality.get("label_field"), "documents": quality.get("documents"),
        "labelled_docs": quality.get("labelled_docs"), "labels": quality.get("labels"),
        "labels_dropped": quality.get("labels_dropped"),
        "silhouette_points": silhouettes.get("points"),
        "silhouette_metric": silhouettes.get("metric"),
        "level_1": {**(fit.get("A") or {}), **measures("level_1", "A")},
        "level_2": {"k": cfg.k2, "fits": fit.get("B"), **measures("level_2", "B")},
    }


def cluster_summary(stats: dict[str, int], cfg: ClusterConfig, fit: dict[str, Any],
                    files: list[str], metrics: dict[str, int],
                    quality: dict[str, Any] | None = None) -> dict[str, Any]:
    rejected = stats.get("rejected", 0)
    return {
        "workflow": "cl",
        "read": stats.get("parsed", 0) + rejected,
        "kept": stats.get("kept", 0),
        "duplicates": 0,
        "duplicates_exact": 0,
        "duplicates_near": 0,
        "rejected": rejected,
        "rejected_by_reason": {k.split(":", 1)[1]: v for k, v in sorted(stats.items())
                               if k.startswith("rejected:")},
        "cluster": cluster_section(cfg, fit, quality),
        "input_files": len(files),
        "input_bytes": input_bytes(files),
        "stage_seconds": stage_seconds(metrics),
        "stage_cpu_seconds": stage_seconds(metrics, "cpu_msecs_"),
        "config": {"cluster": cfg.to_dict()},
    }


@contextlib.contextmanager
def prepared_run(inputs: list[str], output: str) -> Iterator[tuple[list[str], str, str]]:
    """Everything checked before any work, as ``(files, staging, run_id)``: the inputs matched
    (streams such as standard input copied once, see ``beam_pipeline.inputs``), the output
    location checked and its staging folder created (``beam_pipeline.outputs``), the run named.
    Raises ``FileNotFoundError``, ``InputError`` or ``OutputError`` (one line each) before
    anything starts; the stream copies are deleted when the block ends."""
    with resolved_inputs(inputs) as files:
        LOG.info("input: %d file(s) matched by %s", len(files), " ".join(inputs))
        staging, _ = prepare_output(output, files)
        yield files, staging, f"run-{uuid.uuid4().hex[:12]}"


def backend_spec(cfg: ClusterConfig, staging: str, address: str | None) -> BackendSpec:
    """Where this run's K-Means models are fitted and kept (``<staging>/_models``)."""
    return BackendSpec(kind=cfg.backend, model_dir=staging.rstrip("/") + "/_models",
                       address=address, timeout_s=cfg.service_timeout_s,
                       connect=connect_backend)


def run_graph(plan_graph: str, inputs: list[str], output: str, dedup_cfg: DedupConfig,
              cluster_cfg: ClusterConfig | None, beam_args: list[str],
              dedup_scope: str = "cluster_A", timeline: Timeline | None = None) -> RunResult:
    """Run one of the four graphs (``beam_pipeline.pipeline.GRAPHS``) end to end and commit
    ``output``; raises on any failure. ``timeline`` (default: from the process's start) cuts
    the wall time into the summary's ``time_parts``."""
    timeline = timeline or Timeline()
    timeline.mark("start_up")
    clusters = plan_graph != "dedup"
    with prepared_run(inputs, output) as (files, staging, run_id), \
            (kmeans_service(cluster_cfg) if clusters else contextlib.nullcontext()) as address:
        spec = backend_spec(cluster_cfg, staging, address) if clusters else None
        timeline.mark("prepare")
        pipeline = make_pipeline(beam_args)
        banding = build_graph(pipeline, GraphPlan(plan_graph, tuple(files), staging, dedup_cfg,
                                                  cluster_cfg, spec, run_id, dedup_scope))
        timeline.mark("build_graph")
        if banding is not None:
            log_banding(dedup_cfg, banding.bands, banding.rows)
        LOG.info("running the %s pipeline (stages: %s)", plan_graph, STAGES[plan_graph])

        def summarise(stats: dict[str, int], metrics: dict[str, int]) -> dict[str, Any]:
            if not clusters:
                return build_summary(stats, dedup_cfg, banding.bands, banding.rows, files,
                                     metrics)
            fit, quality = read_cluster_reports(staging)
            clustered = cluster_summary(stats, cluster_cfg, fit, files, metrics, quality)
            if banding is None:
                return clustered
            summary = build_summary(stats, dedup_cfg, banding.bands, banding.rows, files,
                                    metrics)
            summary["workflow"] = plan_graph
            summary["dedup_scope"] = dedup_scope if plan_graph == "cl_nd" else "global"
            summary["cluster"] = clustered["cluster"]
            summary["config"] = {"dedup": dedup_cfg.to_dict(), "cluster": cluster_cfg.to_dict()}
            return summary

        return _run_and_commit(pipeline, staging, output, summarise, files, timeline)


STAGES = {
    "dedup": "read, features, exact, LSH, verify, components, resolve, write",
    "cluster": "read, embed, fit K-Means, predict, write",
    "nd_cl": "read, features, exact, LSH, verify, components, resolve, re-read kept, embed, "
             "fit K-Means, predict, write",
    "cl_nd": "read, embed, fit K-Means, predict, features scoped by cluster, exact, LSH, "
             "verify, components, resolve, write",
}


def run_dedup(inputs: list[str], output: str, cfg: DedupConfig, beam_args: list[str]
              ) -> RunResult:
    """``ndcl dedup``: the ND job alone."""
    return run_graph("dedup", inputs, output, cfg, None, beam_args)


def run_cluster(inputs: list[str], output: str, cfg: ClusterConfig, dedup_cfg: DedupConfig,
                beam_args: list[str]) -> RunResult:
    """``ndcl cluster``: CL alone (every readable document kept, with its clusters)."""
    return run_graph("cluster", inputs, output, dedup_cfg, cfg, beam_args)


def run_workflow(workflow: str, inputs: list[str], output: str, dedup_cfg: DedupConfig,
                 cluster_cfg: ClusterConfig, beam_args: list[str],
                 dedup_scope: str = "cluster_A") -> RunResult:
    """``ndcl run``: ND→CL (``nd_cl``) or CL→ND (``cl_nd``)."""
    if workflow not in ("nd_cl", "cl_nd"):
        raise ValueError(f"workflow must be nd_cl or cl_nd, got {workflow!r}")
    return run_graph(workflow, inputs, output, dedup_cfg, cluster_cfg, beam_args, dedup_scope)
