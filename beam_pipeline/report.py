"""``ndcl report``: an HTML page with PNG plots of runs recorded in the benchmark database.

    ndcl [--db-url URL] report --output report/ [--runs ID [ID ...] | --last N]

Writes ``OUTPUT/index.html`` and, beside it, the PNGs it shows (relative links, inline CSS,
no script and nothing fetched from elsewhere, so the folder can be copied or attached whole):

* ``stages.png`` -- seconds per pipeline stage (``StageTiming``): one stacked bar per run, with
  the wall time not attributed to any stage as its own segment, and the stages side by side on
  a log scale so that millisecond stages stay visible next to the K-Means fit;
* ``documents.png`` -- kept / exact duplicates / near duplicates / rejected per run;
* ``retention.png`` -- kept / read per run;
* ``cluster_sizes.png`` -- documents per cluster, largest first, for ``cluster_A`` and for
  ``cluster_B`` (sub-clusters inside their ``cluster_A``), from the kept-document counts
  stored in ``ClusterMetric.sizes_json``. Runs recorded before those were stored fall back to
  the run's ``OUT/kept/*.parquet`` when that folder is still on this machine, else to their
  stored K-Means *sample* size of each ``cluster_A`` (no sub-cluster sizes);
* ``s_curve.png`` -- LSH detection probability ``P(s) = 1 - (1 - s^r)^b`` against Jaccard
  similarity for each run's chosen ``b`` and ``r`` (``transforms.lsh.detection_probability``),
  the threshold marked, and measured points where an evaluation exists: the pair-level recall
  of ``AccuracyMetric`` rows (one number over all true pairs at or above the threshold, drawn
  across ``[t, 1]``), and the measured end-to-end detection rate per bin of exact Jaccard that
  ``ndcl evaluate --truth`` writes to ``OUT/evaluation.json`` when the truth file lists scored
  pairs (one marker shape per run, area by the bin's pair count, hollow under 5 pairs, the
  counts on a top axis);
* ``resources.png`` -- CPU % and RSS of the ``ndcl`` process tree over the run's time, from
  the samples ``ResourceSampler`` stores in ``ResourceMetric.samples_json``.

Then a table of the runs, the accuracy and cluster-quality rows (NMI/ARI against the input
labels, silhouette on the fitted sample) when present, and the ND→CL vs
CL→ND comparison in words when both orderings are among the runs. Runs: ``--runs``, or the
``--last N``, or by default the latest run of each kind (``run --workflow nd_cl``, ``run
--workflow cl_nd``, ``dedup``, ``cluster``). With no run to show (empty or missing database,
unknown ids) nothing is written and the exit status is 2. Every text shown is HTML-escaped and
the database URL is shown with its password hidden.
"""

from __future__ import annotations

import argparse
import html
import json
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

# Pipeline order of the stage counters (transforms/*: stage_counter), so that stacked bars and
# legends read in the order the work happens; unknown stages follow alphabetically.
STAGE_ORDER = ("read", "compute_features", "exact", "lsh", "verify", "components", "resolve",
               "embed", "cluster_fit", "scope", "write_outputs")
UNATTRIBUTED = "not in a stage"
KIND_LABELS = {"nd_cl": "ND→CL", "cl_nd": "CL→ND", "dedup": "ND only", "cluster": "CL only"}
# Marks a page as ndcl report's own, so a later report may replace it (beam_pipeline.outputs).
GENERATOR = '<meta name="generator" content="ndcl report">'
PLOT_FILES = ("stages.png", "documents.png", "retention.png", "cluster_sizes.png",
              "s_curve.png", "resources.png")
DPI = 110
WIDTH_IN = 10.0
# Measured S-curve points: one shape per run sharing a curve; bins with fewer truth pairs are
# drawn hollow (a rate of 2 out of 3 says little).
BIN_MARKERS = ("s", "^", "D", "v", "P", "X")
FEW_PAIRS = 5


class ReportError(Exception):
    """Nothing to report (no database, no runs, unknown run ids); the CLI exits 2."""


@dataclass
class RunData:
    """One recorded run and everything the report shows of it, detached from the session."""

    id: int
    created_at: datetime | None
    command: str
    workflow: str | None
    runner: str | None
    workers: int | None
    input_pattern: str | None
    output: str | None
    threshold: float | None
    num_perm: int | None
    bands: int | None
    rows: int | None
    k1: int | None
    k2: int | None
    read: int | None
    kept: int | None
    duplicates: int | None
    duplicates_exact: int | None
    duplicates_near: int | None
    rejected: int | None
    seconds: float | None
    config_hash: str | None
    notes: str | None
    argv: list[str] = field(default_factory=list)
    stages: dict[str, float] = field(default_factory=dict)
    resources: dict[str, Any] | None = None
    samples: list[dict[str, float]] = field(default_factory=list)
    accuracy: list[dict[str, Any]] = field(default_factory=list)
    clusters: list[dict[str, Any]] = field(default_factory=list)
    # ``--verify`` of the de-duplication (from the stored config): says whether measured
    # detection below the threshold can be more than transitive joins.
    verify: str | None = None

    @property
    def kind(self) -> str:
        """``nd_cl`` / ``cl_nd`` for ``ndcl run``, else the command (``dedup``, ``cluster``)."""
        return self.workflow if self.command == "run" and self.workflow else self.command

    @property
    def label(self) -> str:
        return f"#{self.id} {KIND_LABELS.get(self.kind, self.kind)}"

    @property
    def dedup_scope(self) -> str | None:
        """CL→ND's scope (not a column: read back from the recorded arguments)."""
        if self.kind != "cl_nd":
            return None
        for i, arg in enumerate(self.argv):
            if arg == "--dedup-scope" and i + 1 < len(self.argv):
                return self.argv[i + 1]
            if arg.startswith("--dedup-scope="):
                return arg.split("=", 1)[1]
        return "cluster_A"


@dataclass
class Plot:
    """One figure of the page: its file (None when there was nothing to draw) and caption."""

    title: str
    filename: str | None
    caption: str


# --------------------------------------------------------------------------- loading


def _sqlite_file_missing(url: str) -> str | None:
    """The path of a SQLite URL whose file does not exist (opening it would create it)."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:  # unparseable: let the engine report it
        return None
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return None if os.path.exists(parsed.database) else parsed.database


def _run_data(run: Any) -> RunData:
    resource = run.resource_metrics[0] if run.resource_metrics else None
    samples: list[dict[str, float]] = []
    if resource is not None and resource.samples_json:
        try:
            samples = [s for s in json.loads(resource.samples_json) if isinstance(s, dict)]
        except ValueError:
            samples = []
    try:
        argv = json.loads(run.argv_json) if run.argv_json else []
    except ValueError:
        argv = []
    return RunData(
        id=run.id, created_at=run.created_at, command=run.command, workflow=run.workflow,
        runner=run.runner, workers=run.workers, input_pattern=run.input_pattern,
        output=run.output, threshold=run.threshold, num_perm=run.num_perm, bands=run.bands,
        rows=run.rows, k1=run.k1, k2=run.k2, read=run.docs_read, kept=run.docs_kept,
        duplicates=run.duplicates, duplicates_exact=run.duplicates_exact,
        duplicates_near=run.duplicates_near, rejected=run.rejected, seconds=run.total_seconds,
        config_hash=run.config_hash, notes=run.notes,
        argv=[str(a) for a in argv] if isinstance(argv, list) else [],
        stages={s.stage: float(s.seconds) for s in run.stage_timings},
        resources=None if resource is None else {
            "cpu_percent_avg": resource.cpu_percent_avg,
            "cpu_percent_peak": resource.cpu_percent_peak,
            "rss_bytes_avg": resource.rss_bytes_avg, "rss_bytes_peak": resource.rss_bytes_peak},
        samples=samples,
        accuracy=[{"reference": a.reference, "level": a.level, "tp": a.tp, "fp": a.fp,
                   "fn": a.fn, "precision": a.precision, "recall": a.recall, "f1": a.f1}
                  for a in sorted(run.accuracy_metrics, key=lambda a: a.id)],
        clusters=[{"level": c.level, "k": c.k, "nmi": c.nmi, "ari": c.ari,
                   "silhouette": c.silhouette, "sizes_json": c.sizes_json}
                  for c in sorted(run.cluster_metrics, key=lambda c: c.level)],
        verify=_config_verify(run.config_json),
    )


def _config_verify(config_json: str | None) -> str | None:
    """``verify`` of a stored config: flat for ``ndcl dedup``, under ``dedup`` for ``run``."""
    try:
        config = json.loads(config_json) if config_json else {}
    except ValueError:
        return None
    if not isinstance(config, dict):
        return None
    dedup = config.get("dedup") if isinstance(config.get("dedup"), dict) else config
    verify = dedup.get("verify")
    return verify if isinstance(verify, str) else None


def select_ids(rows: Sequence[tuple[int, str, str | None]], run_ids: Sequence[int] | None,
               last: int | None) -> list[int]:
    """Which runs to show, oldest first. ``rows`` are ``(id, command, workflow)`` newest first.

    Default: the newest run of each kind, so that one page compares the two orderings (and
    the single-engine runs) as they stand now rather than every experiment ever made.
    """
    if run_ids:
        known = {r[0] for r in rows}
        missing = [i for i in run_ids if i not in known]
        if missing:
            raise ReportError(f"no run(s) {', '.join(map(str, missing))} in the benchmark "
                              "database (`ndcl runs` lists them)")
        return sorted(set(run_ids))
    if last is not None:
        return sorted(r[0] for r in rows[:last])
    newest: dict[str, int] = {}
    for run_id, command, workflow in rows:
        kind = workflow if command == "run" and workflow else command
        newest.setdefault(kind, run_id)
    return sorted(newest.values())


def load_runs(url: str, run_ids: Sequence[int] | None = None, last: int | None = None
              ) -> list[RunData]:
    """The selected runs with their timings, resources and metrics, oldest first."""
    from sqlalchemy import inspect, select
    from sqlalchemy.orm import Session, selectinload

    from beam_pipeline import db

    missing = _sqlite_file_missing(url)
    if missing is not None:
        raise ReportError(f"no benchmark database at {missing} (no run recorded yet; "
                          "give --db-url or set NDCL_DB_URL)")
    engine = db.open_engine(url)
    try:
        if not inspect(engine).has_table(db.BenchmarkRun.__tablename__):
            return []
        with Session(engine) as session:
            rows = session.execute(
                select(db.BenchmarkRun.id, db.BenchmarkRun.command, db.BenchmarkRun.workflow)
                .order_by(db.BenchmarkRun.created_at.desc(), db.BenchmarkRun.id.desc())).all()
            ids = select_ids([tuple(r) for r in rows], run_ids, last)
            if not ids:
                return []
            runs = session.scalars(
                select(db.BenchmarkRun).where(db.BenchmarkRun.id.in_(ids))
                .options(selectinload(db.BenchmarkRun.stage_timings),
                         selectinload(db.BenchmarkRun.resource_metrics),
                         selectinload(db.BenchmarkRun.accuracy_metrics),
                         selectinload(db.BenchmarkRun.cluster_metrics))
                .order_by(db.BenchmarkRun.id)).all()
            return [_run_data(r) for r in runs]
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- run outputs


def _local_dir(path: str | None, *parts: str) -> Path | None:
    if not path or "://" in path:
        return None
    folder = Path(path, *parts)
    return folder if folder.is_dir() else None


def kept_cluster_sizes(run: RunData) -> tuple[list[int], list[int]] | None:
    """Kept documents per ``cluster_A`` and per (``cluster_A``, ``cluster_B``), largest first,
    from ``OUT/kept/*.parquet`` when it is still on this machine; None otherwise."""
    kept = _local_dir(run.output, "kept")
    if kept is None:
        return None
    import pyarrow.parquet as pq

    a_parts, b_parts = [], []
    try:
        for part in sorted(kept.glob("*.parquet")):
            names = pq.read_schema(part).names
            if "cluster_A" not in names or "cluster_B" not in names:
                return None  # a dedup-only output (or a different run now in that folder)
            table = pq.read_table(part, columns=["cluster_A", "cluster_B"])
            a_parts.append(table.column("cluster_A").to_numpy())
            b_parts.append(table.column("cluster_B").to_numpy())
    except (OSError, ValueError):
        return None
    if not a_parts:
        return None
    a, b = np.concatenate(a_parts), np.concatenate(b_parts)
    if run.kept is not None and len(a) != run.kept:
        return None  # the folder was overwritten by another run since this one was recorded
    _, sizes_a = np.unique(a, return_counts=True)
    # cluster_B is a sub-cluster index inside its cluster_A, so a sub-cluster is the pair.
    _, sizes_b = np.unique(np.stack([a, b], axis=1), axis=0, return_counts=True)
    return (sorted(sizes_a.tolist(), reverse=True), sorted(sizes_b.tolist(), reverse=True))


def _stored_sizes(row: dict[str, Any]) -> dict[str, Any] | None:
    try:
        sizes = json.loads(row["sizes_json"]) if row["sizes_json"] else None
    except ValueError:
        return None
    return sizes if isinstance(sizes, dict) else None


def recorded_document_sizes(run: RunData) -> tuple[list[int], list[int]] | None:
    """Kept documents per ``cluster_A`` and per (``cluster_A``, ``cluster_B``), largest
    first, from ``ClusterMetric.sizes_json`` (``{"sizes": {id: documents}, ...}``); None for
    runs recorded before these counts were stored."""
    levels: dict[int, list[int]] = {}
    for row in run.clusters:
        stored = _stored_sizes(row)
        sizes = stored.get("sizes") if stored else None
        if isinstance(sizes, dict):
            levels[row["level"]] = sorted((int(v) for v in sizes.values()
                                           if isinstance(v, (int, float))), reverse=True)
    if not levels.get(1):
        return None
    return levels[1], levels.get(2, [])


def recorded_sample_sizes(run: RunData) -> list[int] | None:
    """Level-1 sizes stored by older runs in ``ClusterMetric``: each cluster_A's K-Means
    sample members (``{id: n}``)."""
    for row in run.clusters:
        sizes = _stored_sizes(row) if row["level"] == 1 else None
        if sizes is not None and "sizes" not in sizes:
            values = [int(v) for v in sizes.values() if isinstance(v, (int, float))]
            return sorted(values, reverse=True) or None
    return None


def evaluation_bins(run: RunData) -> list[tuple[float, float, int | None]]:
    """Measured detection rate per similarity bin from ``OUT/evaluation.json``, if any.

    ``ndcl evaluate --truth`` writes ``{"evaluations": [{"reference", "kind": "truth", "pair":
    {tp, fp, fn, precision, recall, f1}, "by_similarity": [{"lo", "hi", "pairs", "detected",
    "rate", ...}], ...}]}`` when the truth file lists scored pairs (the pair-level recall
    reaches the plot through ``AccuracyMetric``). Bins are read from the first truth entry with
    a list under ``by_similarity`` (or ``similarity_bins`` / ``recall_by_similarity``, in the
    entry or its ``pair``), each with ``lo``/``hi`` (or ``similarity``) and ``recall`` /
    ``rate`` or ``detected`` / ``found`` out of ``pairs``, and returned as ``(bin centre, rate,
    pairs)``; empty bins (no rate) are left out.
    """
    folder = _local_dir(run.output)
    path = folder / "evaluation.json" if folder else None
    if path is None or not path.is_file():
        return []
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if not isinstance(body, dict):
        return []
    entries = body.get("evaluations") if isinstance(body.get("evaluations"), list) else [body]
    scopes: list[dict[str, Any]] = []
    for entry in entries:
        # An evaluation against another run measures agreement, not detection of true pairs.
        if isinstance(entry, dict) and entry.get("kind") != "run":
            scopes += [entry, entry.get("pair") if isinstance(entry.get("pair"), dict) else {}]
    bins = next((scope[key] for scope in scopes
                 for key in ("by_similarity", "similarity_bins", "recall_by_similarity")
                 if isinstance(scope.get(key), list)), None)
    points: list[tuple[float, float, int | None]] = []
    for item in bins or []:
        if not isinstance(item, dict):
            continue
        lo = _first(item, "lo", "low", "min")
        hi = _first(item, "hi", "high", "max")
        centre = (lo + hi) / 2 if lo is not None and hi is not None else _first(
            item, "similarity", "centre", "center")
        pairs = _first(item, "pairs", "total", "n")
        rate = _first(item, "recall", "rate", "detection_rate")
        if rate is None:
            found = _first(item, "found", "detected", "tp")
            rate = found / pairs if found is not None and pairs else None
        if centre is not None and rate is not None:
            points.append((float(centre), float(rate), int(pairs) if pairs else None))
    return points


def is_truth_reference(reference: str | None) -> bool:
    """Whether an ``AccuracyMetric`` reference is a truth file, not another run
    (``ndcl evaluate --against`` stores ``run:ID`` or ``output:PATH``)."""
    return bool(reference) and not str(reference).startswith(("run:", "output:"))


def _first(item: dict[str, Any], *keys: str) -> float | None:
    for key in keys:
        value = item.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None


# --------------------------------------------------------------------------- plots


def _figure(height: float, ncols: int = 1, **kw: Any) -> tuple[Any, Any]:
    # Figure without pyplot: Agg canvas, no global state, no display needed.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(WIDTH_IN, height), dpi=DPI, layout="constrained")
    axes = fig.subplots(1, ncols, **kw)
    return fig, axes


def _colors(runs: Sequence[RunData]) -> dict[int, Any]:
    from matplotlib import colormaps

    palette = colormaps["tab10"].colors
    return {r.id: palette[i % len(palette)] for i, r in enumerate(runs)}


def _save(fig: Any, out: Path, name: str) -> str:
    fig.savefig(out / name, dpi=DPI)
    return name


def _bar_height(runs: Sequence[RunData]) -> float:
    return 1.4 + 0.42 * len(runs)


def _ordered_stages(runs: Sequence[RunData]) -> list[str]:
    seen = {s for r in runs for s in r.stages}
    return [s for s in STAGE_ORDER if s in seen] + sorted(seen - set(STAGE_ORDER))


def plot_stages(runs: Sequence[RunData], out: Path) -> Plot:
    title = "Time per stage"
    timed = [r for r in runs if r.stages]
    if not timed:
        return Plot(title, None, "No run among these recorded stage timings.")
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    stages = _ordered_stages(timed)
    # Pastel stage colours, so that they are not read as the saturated per-run colours of
    # the lower panel.
    palette = [c for i, c in enumerate(colormaps["Set3"].colors) if i != 8]  # 8: grey
    stage_color = {s: palette[i % len(palette)] for i, s in enumerate(stages)}
    top = 0.9 + 0.42 * len(timed)
    fig = Figure(figsize=(WIDTH_IN, top + 4.2), dpi=DPI, layout="constrained")
    ax_stack, ax_group = fig.subplots(2, 1, height_ratios=[top, 4.2])
    y = np.arange(len(timed))
    left = np.zeros(len(timed))
    for stage in [*stages, UNATTRIBUTED]:
        if stage == UNATTRIBUTED:
            # Wall time the stage counters do not cover: interpreter and pipeline start-up,
            # the K-Means service, shuffles and waiting between bundles.
            values = np.array([max(0.0, (r.seconds or 0.0) - sum(r.stages.values()))
                               for r in timed])
            style = {"color": "white", "edgecolor": "0.55", "hatch": "///"}
        else:
            values = np.array([r.stages.get(stage, 0.0) for r in timed])
            style = {"color": stage_color[stage], "edgecolor": "white"}
        if values.any():
            ax_stack.barh(y, values, left=left, label=stage, linewidth=0.5, **style)
        left += values
    for yi, total in zip(y, left):
        ax_stack.text(total, yi, f" {total:.1f} s", va="center", fontsize=8)
    ax_stack.set_yticks(y, [r.label for r in timed])
    ax_stack.invert_yaxis()
    ax_stack.set_xlabel("seconds (wall time of the run)")
    ax_stack.set_xlim(0, left.max() * 1.12 if left.max() > 0 else 1)
    ax_stack.set_title("whole run: stages stacked, then time not in any stage", fontsize=10)
    ax_stack.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)

    # Stages side by side, one bar per run, log scale: the fit takes seconds, the LSH
    # milliseconds, and both should be readable.
    colors = _colors(timed)
    n = len(timed)
    width = 0.8 / n
    xs = np.arange(len(stages))
    floor = 1e-3
    for i, run in enumerate(timed):
        vals = np.array([run.stages.get(s, np.nan) for s in stages])
        shown = np.where(np.isnan(vals), np.nan, np.maximum(vals, floor))
        ax_group.bar(xs + (i - (n - 1) / 2) * width, shown, width=width,
                     color=colors[run.id], label=run.label)
    ax_group.set_yscale("log")
    ax_group.set_xticks(xs, stages, rotation=25, ha="right")
    ax_group.set_ylabel("seconds (log; < 1 ms shown as 1 ms)")
    ax_group.set_title("per stage, one bar per run", fontsize=10)
    ax_group.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    ax_group.grid(axis="y", which="major", alpha=0.3)
    caption = ("Seconds per pipeline stage as counted by the stage timers (summed over "
               "bundles and workers, from StageTiming). Top: one bar per run; the hatched "
               "part is wall time no stage timer covers (start-up, the K-Means service, "
               "shuffles). Bottom: each stage for each run; no bar means the run has no such "
               "stage.")
    return Plot(title, _save(fig, out, "stages.png"), caption)


def plot_documents(runs: Sequence[RunData], out: Path) -> Plot:
    title = "Documents kept and removed"
    counted = [r for r in runs if r.read is not None]
    if not counted:
        return Plot(title, None, "No run among these recorded document counts.")
    parts = [("kept", "kept", "#4c956c"), ("duplicates_exact", "exact duplicates", "#d1495b"),
             ("duplicates_near", "near duplicates", "#edae49"),
             ("rejected", "rejected (unreadable)", "#66545e")]
    fig, ax = _figure(_bar_height(counted) + 0.3)
    y = np.arange(len(counted))
    left = np.zeros(len(counted))
    total = max((r.read or 0) for r in counted) or 1
    for attr, name, color in parts:
        values = np.array([getattr(r, attr) or 0 for r in counted], dtype=float)
        ax.barh(y, values, left=left, color=color, label=name, edgecolor="white",
                linewidth=0.5)
        for yi, x0, v in zip(y, left, values):
            if v >= 0.06 * total:  # label only segments wide enough to hold the number
                ax.text(x0 + v / 2, yi, f"{int(v):,}", ha="center", va="center", fontsize=8,
                        color="white" if attr != "duplicates_near" else "black")
        left += values
    for yi, run in zip(y, counted):
        ax.text(left[yi], yi, f" read {run.read:,}", va="center", fontsize=8)
    ax.set_yticks(y, [r.label for r in counted])
    ax.invert_yaxis()
    ax.set_xlim(0, total * 1.18)
    ax.set_xlabel("documents")
    fig.legend(ncols=4, fontsize=8, loc="outside lower center", frameon=False)
    caption = ("Every document read ends in exactly one of these (read = kept + duplicates "
               "+ rejected, checked by every run). Exact duplicates have the same normalised "
               "text as a kept document; near duplicates were found by MinHash LSH.")
    return Plot(title, _save(fig, out, "documents.png"), caption)


def plot_retention(runs: Sequence[RunData], out: Path) -> Plot:
    title = "Retention"
    counted = [r for r in runs if r.read and r.kept is not None]
    if not counted:
        return Plot(title, None, "No run among these read any document.")
    colors = _colors(runs)
    fig, ax = _figure(_bar_height(counted))
    y = np.arange(len(counted))
    share = np.array([100.0 * (r.kept or 0) / (r.read or 1) for r in counted])
    ax.barh(y, share, color=[colors[r.id] for r in counted])
    for yi, run, pct in zip(y, counted, share):
        ax.text(pct, yi, f" {pct:.1f} %  ({run.kept:,} of {run.read:,})", va="center",
                fontsize=8)
    ax.set_yticks(y, [r.label for r in counted])
    ax.invert_yaxis()
    ax.set_xlim(0, 125)
    ax.set_xticks(range(0, 101, 20))
    ax.set_xlabel("kept / read (%)")
    caption = "Share of the documents read that each run kept."
    return Plot(title, _save(fig, out, "retention.png"), caption)


def plot_cluster_sizes(runs: Sequence[RunData], out: Path) -> Plot:
    title = "Cluster sizes"
    series: list[tuple[RunData, list[int], list[int] | None, str]] = []
    for run in runs:
        counted = recorded_document_sizes(run) or kept_cluster_sizes(run)
        if counted is not None:
            series.append((run, counted[0], counted[1], "kept documents"))
            continue
        sample = recorded_sample_sizes(run)
        if sample is not None:
            series.append((run, sample, None, "K-Means sample"))
    if not series:
        return Plot(title, None, "No run among these clustered its documents.")
    colors = _colors(runs)
    fig, (ax_a, ax_b) = _figure(3.8, ncols=2)
    for run, sizes_a, sizes_b, source in series:
        ranks = np.arange(1, len(sizes_a) + 1)
        ax_a.plot(ranks, sizes_a, marker="o", markersize=4, color=colors[run.id],
                  label=f"{run.label} ({source})")
        if sizes_b:
            ax_b.plot(np.arange(1, len(sizes_b) + 1), sizes_b, marker=".", markersize=3,
                      color=colors[run.id], label=run.label)
    ax_a.set_title("cluster_A", fontsize=10)
    ax_a.set_xlabel("cluster rank (largest first)")
    ax_a.set_ylabel("documents")
    ax_a.set_ylim(bottom=0)
    ax_a.legend(fontsize=7)
    ax_b.set_title("cluster_B (sub-cluster inside its cluster_A)", fontsize=10)
    ax_b.set_xlabel("sub-cluster rank (largest first)")
    ax_b.set_ylabel("documents (log scale)")
    without_b = [run.label for run, _, sizes_b, _ in series if not sizes_b]
    if len(without_b) < len(series):
        ax_b.set_yscale("log")
        ax_b.legend(fontsize=7)
    else:
        ax_b.set_yscale("linear")
        ax_b.text(0.5, 0.5, "sub-cluster sizes not available\n(older runs whose outputs "
                  "are not on this machine)", ha="center", va="center",
                  transform=ax_b.transAxes, fontsize=9, color="0.4")
        ax_b.set_xticks([])
        ax_b.set_yticks([])
    caption = ("Kept documents per cluster, largest first, one line per run, as counted by "
               "the pipeline and stored in ClusterMetric. Runs recorded before those counts "
               "were stored are counted from their kept/*.parquet where that output is still "
               "on this machine; otherwise their cluster_A line shows the K-Means sample "
               "members per cluster, and cluster_B has no sizes.")
    if without_b:
        caption += " No cluster_B sizes for: " + ", ".join(without_b) + "."
    return Plot(title, _save(fig, out, "cluster_sizes.png"), caption)


def plot_s_curve(runs: Sequence[RunData], out: Path) -> Plot:
    title = "LSH S-curve"
    banded = [r for r in runs if r.bands and r.rows]
    if not banded:
        return Plot(title, None, "No run among these used LSH banding (no bands/rows).")
    from transforms.lsh import detection_probability

    colors = _colors(runs)
    # Runs with the same b, r and threshold share a curve (e.g. ND→CL and CL→ND of one
    # config); one line labelled with all their ids reads better than identical overlays.
    groups: dict[tuple[int, int, float | None], list[RunData]] = {}
    for run in banded:
        groups.setdefault((int(run.bands or 0), int(run.rows or 0), run.threshold),
                          []).append(run)
    fig, ax = _figure(4.6)
    s = np.linspace(0.0, 1.0, 501)
    measured_recall = False
    # The curve of a run's colour is that of its group (its first member's colour).
    curve_color = {r.id: colors[members[0].id] for members in groups.values() for r in members}
    measured = [(run, bins) for run in banded if (bins := evaluation_bins(run))]
    for (bands, rows, threshold), members in groups.items():
        color = colors[members[0].id]
        ids = ", ".join(f"#{r.id}" for r in members)
        # t and P(t) go in the legend: as text beside the curve they collided with the
        # measured points, which cluster around t.
        at_t = ""
        if threshold is not None:
            p_t = float(detection_probability(threshold, bands, rows))
            at_t = f", P(t={threshold:.2f}) = {p_t:.3f}"
            ax.axvline(threshold, color=color, linestyle=":", linewidth=1)
            ax.plot([threshold], [p_t], marker="D", color=color, markersize=5)
        ax.plot(s, detection_probability(s, bands, rows), color=color, linewidth=2,
                label=f"b={bands}, r={rows}{at_t} ({ids})")
        # Equal recalls of several runs (e.g. both orderings at 1.0) would be drawn on top
        # of each other: one point, labelled with every run it stands for.
        recalls: dict[float, list[str]] = {}
        for run in members:
            for row in run.accuracy:
                if (row["level"] == "pair" and row["recall"] is not None
                        and threshold is not None and is_truth_reference(row["reference"])):
                    recalls.setdefault(round(float(row["recall"]), 4), []).append(f"#{run.id}")
        for recall, who in sorted(recalls.items()):
            measured_recall = True
            ax.hlines(recall, threshold, 1.0, colors=color, linewidth=1, linestyles="--")
            ax.plot([threshold], [recall], linestyle="none", marker="o", markersize=7,
                    markerfacecolor="white", markeredgecolor=color, markeredgewidth=1.5,
                    label=f"measured pair recall {recall:.3f} ({', '.join(dict.fromkeys(who))})")
    counts = _draw_bins(ax, measured, curve_color)
    measured_bins = bool(measured)
    if counts:
        # Pair counts on a top axis: written inside the plot they sat under the points of a
        # run that detects nothing below t (rate 0).
        top = ax.secondary_xaxis("top")
        top.set_xticks(sorted(counts), ["/".join(map(str, counts[c])) for c in sorted(counts)])
        top.tick_params(labelsize=7, length=2, pad=1)
        top.set_xlabel("truth pairs per bin", fontsize=8)
    left = 0.0
    if measured:
        # Measured bins start at the truth's pairs_min (0.5 by default), and below ~0.3 a
        # usual curve is flat at 0: start at 0.3, or lower (to a tenth) where a curve
        # already rises or a bin lies.
        rising = [float(s[np.argmax(detection_probability(s, b, r) > 0.005)])
                  for b, r, _ in groups]
        lowest = min(b[0] for _, bins in measured for b in bins) - 0.05
        left = max(0.0, math.floor(min(0.3, lowest, *rising) * 10) / 10)
    ax.set_xlim(left, 1)
    ax.set_ylim(-0.02, 1.04)
    ax.set_xlabel("Jaccard similarity s")
    ax.set_ylabel("P(candidate pair); measured rate")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    caption = ("Probability that two documents of Jaccard similarity s share at least one "
               "LSH band, 1 - (1 - s^r)^b, for each run's bands b and rows r; the dotted line "
               "is the run's threshold t.")
    if measured_recall:
        caption += (" Open circles: the pair-level recall measured by `ndcl evaluate "
                    "--truth` (AccuracyMetric). It is one number over all true pairs with "
                    "similarity at or above t, not a per-similarity rate, so it is drawn at t and "
                    "dashed across [t, 1]; it also includes verification and connected "
                    "components, not only banding.")
    if measured_bins:
        caption += (" Filled markers (one shape per run, marker area growing with the number "
                    "of truth pairs in the bin, hollow when fewer than "
                    f"{FEW_PAIRS}; the counts are on the top axis): the measured "
                    "detection rate per bin of exact Jaccard from `ndcl evaluate --truth` "
                    "(evaluation.json), i.e. the share of the truth pairs of that similarity "
                    "that the run put in one duplicate cluster. That is end to end, not the "
                    "banding alone: with --verify exact every candidate below t is rejected, so "
                    "below t only pairs joined through other documents (transitive connected "
                    "components, e.g. two variants of one source) are detected, while "
                    "--verify none keeps every candidate and follows the LSH curve; above t, "
                    "connected components also recover pairs the banding missed.")
    if not measured_recall and not measured_bins:
        caption += (" No evaluation against a truth file is recorded for these runs, so there "
                    "are no measured points.")
    return Plot(title, _save(fig, out, "s_curve.png"), caption)


def _draw_bins(ax: Any, measured: Sequence[tuple[RunData, list[tuple[float, float, int | None]]]],
               colors: dict[int, Any]) -> dict[float, list[int]]:
    """The measured per-bin detection rates: one marker shape per run, in the colour of its
    curve, runs nudged apart so that equal rates (often 1.0) do not hide each other. Returns
    the distinct truth pair counts per bin centre."""
    counts: dict[float, list[int]] = {}
    for k, (run, bins) in enumerate(measured):
        color = colors[run.id]
        marker = BIN_MARKERS[k % len(BIN_MARKERS)]
        shift = (k - (len(measured) - 1) / 2) * 0.009
        x = np.array([b[0] for b in bins]) + shift
        y = np.array([b[1] for b in bins])
        n = np.array([b[2] or 0 for b in bins])
        # Area grows with the count, so a bin of 250 pairs outweighs one of 3 at a glance
        # without drowning the curve.
        sizes = 18 + 9 * np.sqrt(n)
        few = n < FEW_PAIRS
        verify = f", verify={run.verify}" if run.verify else ""
        label = f"#{run.id} measured per bin{verify}"
        ax.scatter(x[~few], y[~few], s=sizes[~few], marker=marker, color=color,
                   edgecolors="black", linewidths=0.6, zorder=3, label=label)
        # Too few pairs to read a rate from: hollow, so they do not look as sure.
        ax.scatter(x[few], y[few], s=sizes[few], marker=marker, facecolors="white",
                   edgecolors=color, linewidths=1.2, zorder=3,
                   label=None if (~few).any() else label)
        for centre, _, pairs in bins:
            # Runs evaluated against one truth file share the counts: one label per bin.
            seen = counts.setdefault(round(centre, 4), [])
            if pairs is not None and pairs not in seen:
                seen.append(pairs)
    return counts


def plot_resources(runs: Sequence[RunData], out: Path) -> Plot:
    title = "Resource use over time"
    with_series = [r for r in runs if len(r.samples) >= 2]
    with_summary = [r for r in runs if r.resources and r.resources.get("cpu_percent_peak")
                    is not None]
    if not with_series and not with_summary:
        return Plot(title, None, "No run among these recorded resource samples.")
    colors = _colors(runs)
    peak_rss = max([s.get("rss_bytes", 0) or 0 for r in with_series for s in r.samples]
                   + [(r.resources or {}).get("rss_bytes_peak") or 0 for r in with_summary])
    unit, scale = ("GiB", 2**30) if peak_rss >= 2**30 else ("MiB", 2**20)
    fig, (ax_cpu, ax_rss) = _figure(4.2, ncols=2)
    for run in with_series:
        t = [float(s.get("t", 0.0)) for s in run.samples]
        ax_cpu.plot(t, [float(s.get("cpu_percent", 0.0)) for s in run.samples],
                    color=colors[run.id], linewidth=1.2, label=run.label)
        ax_rss.plot(t, [float(s.get("rss_bytes", 0) or 0) / scale for s in run.samples],
                    color=colors[run.id], linewidth=1.2, label=run.label)
    summary_only = [r for r in with_summary if r not in with_series]
    for run in summary_only:
        # No time series (older records): the average and peak as flat lines over the run.
        res = run.resources or {}
        end = run.seconds or 1.0
        for ax, avg, peak, div in ((ax_cpu, res.get("cpu_percent_avg"),
                                    res.get("cpu_percent_peak"), 1.0),
                                   (ax_rss, res.get("rss_bytes_avg"),
                                    res.get("rss_bytes_peak"), scale)):
            if avg is not None:
                ax.hlines(avg / div, 0, end, colors=colors[run.id], linestyles="--",
                          label=f"{run.label} avg (no series)")
            if peak is not None:
                ax.hlines(peak / div, 0, end, colors=colors[run.id], linestyles=":",
                          label=f"{run.label} peak")
    ax_cpu.set_title("CPU (process tree; 100 % = one core)", fontsize=10)
    ax_cpu.set_xlabel("seconds since start")
    ax_cpu.set_ylabel("CPU %")
    ax_cpu.set_ylim(bottom=0)
    ax_rss.set_title("resident memory (process tree)", fontsize=10)
    ax_rss.set_xlabel("seconds since start")
    ax_rss.set_ylabel(f"RSS ({unit})")
    ax_rss.set_ylim(bottom=0)
    for ax in (ax_cpu, ax_rss):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    caption = ("CPU % and RSS of the ndcl process and its children, sampled every 0.5 s "
               "while the run lasted (ResourceMetric.samples_json).")
    if summary_only:
        caption += (" Runs without samples show their stored average (dashed) and peak "
                    "(dotted): " + ", ".join(r.label for r in summary_only) + ".")
    return Plot(title, _save(fig, out, "resources.png"), caption)


# --------------------------------------------------------------------------- HTML


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _num(value: Any, digits: int = 0) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and math.isnan(value):
        return "–"
    return f"{value:,.{digits}f}" if digits else f"{int(value):,}"


def _when(value: datetime | None, seconds: bool = True) -> str:
    if value is None:
        return "–"
    # SQLite drops the zone on read; runs are always recorded in UTC.
    value = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).strftime(
        "%Y-%m-%d %H:%M:%S UTC" if seconds else "%Y-%m-%d %H:%M")


def _bytes(value: Any) -> str:
    if value is None:
        return "–"
    return f"{value / 2**30:.2f} GiB" if value >= 2**30 else f"{value / 2**20:.0f} MiB"


def _table(columns: Sequence[tuple[str, str]], rows: Sequence[Sequence[Any]]) -> str:
    """An HTML table; ``columns`` are ``(header, css class)``, every cell escaped."""
    def cell(tag: str, css: str, value: Any) -> str:
        attr = f' class="{css}"' if css else ""
        return f"<{tag}{attr}>{_e(value)}</{tag}>"

    head = "".join(cell("th", "text" if "text" in css.split() else "", name)
                   for name, css in columns)
    body = "".join("<tr>" + "".join(cell("td", css, value)
                                    for (_, css), value in zip(columns, row)) + "</tr>"
                   for row in rows)
    return (f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>")


def runs_table(runs: Sequence[RunData]) -> str:
    """The runs as a table; one shared input and the free-text notes go outside it, where
    long values do not squeeze the numbers."""
    columns = [("id", ""), ("recorded (UTC)", "text"), ("workflow", "text wrap"),
               ("runner", "text"), ("input", "text wrap path"), ("read", ""), ("kept", ""),
               ("duplicates", ""), ("exact", ""), ("near", ""), ("rejected", ""),
               ("seconds", ""), ("CPU avg / peak", ""), ("RSS peak", ""),
               ("config hash", "text")]
    rows = []
    for run in runs:
        res = run.resources or {}
        workflow = KIND_LABELS.get(run.kind, run.kind)
        if run.dedup_scope:
            workflow += f" (in {run.dedup_scope})"
        runner = run.runner or "–"
        if run.workers and run.workers > 1:
            runner += f" ×{run.workers}"
        cpu = (f"{_num(res.get('cpu_percent_avg'))} / {_num(res.get('cpu_percent_peak'))} %"
               if res else "–")
        rows.append([run.id, _when(run.created_at, seconds=False), workflow, runner,
                     run.input_pattern, _num(run.read), _num(run.kept), _num(run.duplicates),
                     _num(run.duplicates_exact), _num(run.duplicates_near), _num(run.rejected),
                     _num(run.seconds, 1), cpu, _bytes(res.get("rss_bytes_peak")),
                     run.config_hash or "–"])
    parts = []
    inputs = {run.input_pattern for run in runs}
    if len(inputs) == 1:
        parts.append(f'<p class="note">Input of every run: {_e(inputs.pop() or "–")}</p>')
        columns, rows = columns[:4] + columns[5:], [row[:4] + row[5:] for row in rows]
    parts.append(_table(columns, rows))
    notes = [f"<li>{_e(run.label)}: {_e(run.notes)}</li>" for run in runs if run.notes]
    if notes:
        parts.append('<p class="note">Notes:</p><ul class="note">' + "".join(notes) + "</ul>")
    return "\n".join(parts)


def accuracy_table(runs: Sequence[RunData]) -> str | None:
    rows = [[run.label, a["reference"], a["level"], _num(a["tp"]), _num(a["fp"]),
             _num(a["fn"]), _num(a["precision"], 4), _num(a["recall"], 4), _num(a["f1"], 4)]
            for run in runs for a in run.accuracy]
    if not rows:
        return None
    return _table([("run", "text"), ("reference", "text wrap"), ("level", "text"), ("TP", ""),
                   ("FP", ""), ("FN", ""), ("precision", ""), ("recall", ""), ("F1", "")],
                  rows)


def cluster_quality_table(runs: Sequence[RunData]) -> str | None:
    """NMI/ARI (against the input labels, over the labelled kept documents) and silhouette
    (on the fitted sample) per level, with the kept and labelled document counts."""
    rows = []
    for run in runs:
        for c in run.clusters:
            if all(c[m] is None for m in ("nmi", "ari", "silhouette")):
                continue
            stored = _stored_sizes(c) or {}
            sizes = stored.get("sizes") if isinstance(stored.get("sizes"), dict) else {}
            documents = sum(v for v in sizes.values() if isinstance(v, (int, float)))
            labelled = stored.get("labelled_docs")
            rows.append([run.label, "cluster_A" if c["level"] == 1 else "cluster_B",
                         _num(c["k"]), _num(stored.get("count")), _num(documents or None),
                         _num(labelled if isinstance(labelled, (int, float)) else None),
                         _num(c["nmi"], 3), _num(c["ari"], 3), _num(c["silhouette"], 3)])
    if not rows:
        return None
    return _table([("run", "text"), ("level", "text"), ("k", ""), ("clusters", ""),
                   ("kept docs", ""), ("labelled", ""), ("NMI", ""), ("ARI", ""),
                   ("silhouette", "")], rows)


def comparison(runs: Sequence[RunData]) -> str | None:
    """ND→CL vs CL→ND in words, from the newest run of each ordering among ``runs``."""
    nd = next((r for r in reversed(runs) if r.kind == "nd_cl"), None)
    cl = next((r for r in reversed(runs) if r.kind == "cl_nd"), None)
    if nd is None or cl is None:
        return None

    def found(run: RunData) -> str:
        return (f"{_num(run.duplicates)} duplicates ({_num(run.duplicates_exact)} exact, "
                f"{_num(run.duplicates_near)} near) and kept {_num(run.kept)} of "
                f"{_num(run.read)} documents in {_num(run.seconds, 1)} s")

    text = [f"ND→CL (run #{nd.id}) found {found(nd)}. CL→ND (run #{cl.id}, duplicates "
            f"removed only inside each {cl.dedup_scope}) found {found(cl)}."]
    if nd.duplicates is not None and cl.duplicates is not None:
        diff = nd.duplicates - cl.duplicates
        if diff > 0:
            text.append(f"CL→ND found {diff:,} fewer duplicates: pairs whose documents were "
                        f"put in different clusters are never compared.")
        elif diff < 0:
            text.append(f"CL→ND found {-diff:,} more duplicates than ND→CL.")
        else:
            text.append("Both orderings found the same number of duplicates.")
    if nd.seconds and cl.seconds:
        faster, slower = (("ND→CL", "CL→ND") if nd.seconds < cl.seconds
                          else ("CL→ND", "ND→CL"))
        ratio = max(nd.seconds, cl.seconds) / min(nd.seconds, cl.seconds)
        text.append(f"{faster} was {ratio:.2f}× as fast as {slower} in wall time "
                    f"({min(nd.seconds, cl.seconds):.1f} s against "
                    f"{max(nd.seconds, cl.seconds):.1f} s).")
    caveats = []
    if nd.input_pattern != cl.input_pattern:
        caveats.append("different inputs")
    if nd.config_hash != cl.config_hash:
        caveats.append("different de-duplication configurations")
    if (nd.runner, nd.workers) != (cl.runner, cl.workers):
        caveats.append("different runners or worker counts")
    if caveats:
        text.append("Not a like-for-like comparison: " + ", ".join(caveats) + ".")
    return " ".join(text)


CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px auto;
       max-width: 1200px; padding: 0 16px; color: #222; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
.meta { color: #555; font-size: 0.9em; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 0.82em; margin: 8px 0; }
th, td { border: 1px solid #ddd; padding: 3px 6px; text-align: right; vertical-align: top;
         white-space: nowrap; }
th { background: #f3f3f3; white-space: normal; }
th.text, td.text { text-align: left; }
td.wrap { white-space: normal; max-width: 16em; overflow-wrap: anywhere; }
td.path { min-width: 11em; }
figure { margin: 12px 0 28px 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption, .note { color: #444; font-size: 0.88em; max-width: 60em; }
"""


def render_html(runs: Sequence[RunData], plots: Sequence[Plot], db_url: str,
                generated: datetime) -> str:
    """The page; every text from the database goes through ``html.escape``."""
    from beam_pipeline.db import redact

    parts = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">', GENERATOR,
        "<title>NDCL benchmark report</title>", f"<style>{CSS}</style>", "</head>", "<body>",
        "<h1>NDCL benchmark report</h1>",
        f'<p class="meta">{_e(len(runs))} run(s) from {_e(redact(db_url))}; generated '
        f"{_e(_when(generated))}.</p>",
        "<h2>Runs</h2>", runs_table(runs),
    ]
    words = comparison(runs)
    if words:
        parts += ["<h2>ND→CL vs CL→ND</h2>", f"<p>{_e(words)}</p>"]
    for plot in plots:
        parts.append(f"<h2>{_e(plot.title)}</h2>")
        if plot.filename:
            parts.append(f'<figure><img src="{_e(plot.filename)}" alt="{_e(plot.title)}">'
                         f"<figcaption>{_e(plot.caption)}</figcaption></figure>")
        else:
            parts.append(f'<p class="note">{_e(plot.caption)}</p>')
        if plot.filename == "s_curve.png":
            table = accuracy_table(runs)
            if table:
                parts += ["<h3>Accuracy (AccuracyMetric)</h3>", table]
        if plot.filename == "cluster_sizes.png":
            table = cluster_quality_table(runs)
            if table:
                parts += ["<h3>Cluster quality (ClusterMetric)</h3>", table]
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)


def write_report(runs: Sequence[RunData], output: str | Path, db_url: str) -> Path:
    """Draw the plots and write ``output/index.html``; returns its path."""
    if not runs:
        raise ReportError("no runs to report")
    from beam_pipeline.outputs import OutputError, check_report_folder

    try:
        # Pages from before the generator tag are known by their title.
        check_report_folder(str(output), PLOT_FILES,
                            (GENERATOR, "<title>NDCL benchmark report</title>"))
    except OutputError as exc:
        raise ReportError(str(exc)) from exc
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    for name in PLOT_FILES:
        # A plot this report has nothing for must not leave the previous report's PNG behind.
        (out / name).unlink(missing_ok=True)
    plots = [plot_stages(runs, out), plot_documents(runs, out), plot_retention(runs, out),
             plot_cluster_sizes(runs, out), plot_s_curve(runs, out), plot_resources(runs, out)]
    page = render_html(runs, plots, db_url, datetime.now(timezone.utc))
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


# --------------------------------------------------------------------------- CLI


def add_report_parser(commands: Any) -> argparse.ArgumentParser:
    """``ndcl report`` on the CLI's subcommand set."""
    report = commands.add_parser(
        "report", help="HTML page with plots of recorded runs (stages, documents, clusters, "
                       "LSH S-curve, resources)")
    report.add_argument("--output", required=True, metavar="DIR",
                        help="folder for index.html and its PNGs, created if needed (required)")
    which = report.add_mutually_exclusive_group()
    which.add_argument("--runs", nargs="+", type=int, metavar="ID",
                       help="these run ids (default: the newest run of each kind: nd_cl, "
                            "cl_nd, dedup, cluster)")
    which.add_argument("--last", type=int, metavar="N",
                       help="the N most recent runs (default: see --runs)")
    # SUPPRESS: without it the subcommand's default (None) would overwrite a global
    # `ndcl --db-url URL report` given before the subcommand.
    report.add_argument("--db-url", default=argparse.SUPPRESS, metavar="URL",
                        help="benchmark database, also accepted before `report` (default: "
                             "$NDCL_DB_URL, else sqlite:///ndcl-benchmarks.db)")
    return report


def run_report_command(args: argparse.Namespace, extra: Sequence[str] = ()) -> int:
    """Write the report; 0 on success, 2 when there is nothing to report or no database."""
    from sqlalchemy.exc import SQLAlchemyError

    from beam_pipeline.db import database_url, redact, scrub_secrets

    if extra:
        print(f"ndcl report: error: unrecognized argument(s) {' '.join(extra)}",
              file=sys.stderr)
        return 2
    if args.last is not None and args.last < 1:
        print("ndcl report: error: --last must be at least 1", file=sys.stderr)
        return 2
    url = database_url(getattr(args, "db_url", None))
    try:
        runs = load_runs(url, args.runs, args.last)
        if not runs:
            raise ReportError(f"no runs recorded in {redact(url)}; nothing to report")
    except ReportError as exc:
        print(f"ndcl report: {exc}", file=sys.stderr)
        return 2
    except (SQLAlchemyError, ImportError, OSError, ValueError) as exc:
        print(f"ndcl report: cannot read the benchmark database {redact(url)}: "
              f"{scrub_secrets(f'{type(exc).__name__}: {exc}', url)}", file=sys.stderr)
        return 2
    try:
        index = write_report(runs, args.output, url)
    except ReportError as exc:
        print(f"ndcl report: error: {exc}", file=sys.stderr)
        return 2
    print(f"report of {len(runs)} run(s) ({', '.join(str(r.id) for r in runs)}) written to "
          f"{index}")
    return 0
