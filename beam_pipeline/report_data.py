"""Runs of the benchmark database, and what their outputs left on disk, for ``ndcl report``.

``load_runs`` reads the selected ``BenchmarkRun`` rows with their timings, resources and metrics
into plain ``RunData`` (detached from the session, so that plotting and rendering never touch the
database); the other functions read what a run left behind: stored cluster sizes, and its
``OUT/kept/*.parquet`` and ``OUT/evaluation.json`` while they are still on this machine.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

KIND_LABELS = {"nd_cl": "ND→CL", "cl_nd": "CL→ND", "dedup": "ND only", "cluster": "CL only"}


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


def stored_sizes(row: dict[str, Any]) -> dict[str, Any] | None:
    """The decoded ``sizes_json`` of a ``ClusterMetric`` row; None when absent or unreadable."""
    try:
        sizes = json.loads(row["sizes_json"]) if row["sizes_json"] else None
    except ValueError:
        return None
    return sizes if isinstance(sizes, dict) else None


_GLOB = re.compile(r"[*?\[]")


def _input_name(pattern: str) -> str:
    """A pattern as a chart names it: the file name, or the last folder too for a glob."""
    parts = pattern.rstrip("/").split("/")
    return "/".join(parts[-2:]) if _GLOB.search(parts[-1]) and len(parts) > 1 else parts[-1]


def corpus_name(runs: Sequence[RunData], most: int = 3) -> str:
    """The inputs of ``runs`` as a chart's subtitle: ``corpus: c4-demo.json.gz`` (file names,
    a glob with its folder), the first ``most`` and how many more when they differ."""
    names = list(dict.fromkeys(_input_name(p) for run in runs
                               for p in (run.input_pattern or "").split()))
    if not names:
        return "corpus: not recorded"
    shown = ", ".join(names[:most]) + (f" (+{len(names) - most} more)"
                                       if len(names) > most else "")
    return f"{'corpus' if len(names) == 1 else 'corpora'}: {shown}"


def stored_top_terms(run: RunData, level: int = 1) -> dict[str, list[str]]:
    """Top terms per cluster id that the run stored (``ClusterMetric.sizes_json``
    ``top_terms``: ``transforms.cluster.top_terms``), empty when it has none."""
    for row in run.clusters:
        stored = stored_sizes(row) if row["level"] == level else None
        terms = (stored or {}).get("top_terms")
        if isinstance(terms, dict):
            return {str(k): [str(t) for t in v] for k, v in terms.items()
                    if isinstance(v, list)}
    return {}


def recorded_document_sizes(run: RunData) -> tuple[list[int], list[int]] | None:
    """Kept documents per ``cluster_A`` and per (``cluster_A``, ``cluster_B``), largest
    first, from ``ClusterMetric.sizes_json`` (``{"sizes": {id: documents}, ...}``); None for
    runs recorded before these counts were stored."""
    levels: dict[int, list[int]] = {}
    for row in run.clusters:
        stored = stored_sizes(row)
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
        sizes = stored_sizes(row) if row["level"] == 1 else None
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
