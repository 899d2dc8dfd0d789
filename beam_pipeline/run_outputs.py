"""The runs ``ndcl evaluate`` scores: a finished output directory or a run id of the benchmark
database, what the evaluation reads from it, and where it writes and stores the scores.

A run's output is read from ``OUT/kept`` and ``OUT/duplicates`` (``id``, ``duplicate_of``) and
``OUT/summary.json``; scores go to ``OUT/evaluation.json`` and, when the run is recorded in the
benchmark database, to one ``AccuracyMetric`` row per level.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pyarrow.parquet as pq
from apache_beam.io.filesystem import BeamIOError, CompressionTypes
from apache_beam.io.filesystems import FileSystems

from beam_pipeline.metrics import LEVELS
from beam_pipeline.truth import EvaluationError

# One logger for `ndcl evaluate` and `ndcl truth`, so their log lines read as before the split.
LOG = logging.getLogger("ndcl.evaluate")


# --------------------------------------------------------------------------- output directories


@dataclass(frozen=True)
class RunOutput:
    """What the evaluation needs from an output directory."""

    path: str
    # Removed document → the kept document of its cluster (OUT/duplicates).
    duplicate_of: dict[str, str]
    # Every document of the run: kept and removed.
    doc_ids: frozenset[str]
    summary: dict[str, Any] = field(default_factory=dict)
    # Ids written more than once (the input repeats them); the evaluation keys by id.
    repeated_ids: int = 0


def _join(out: str, name: str) -> str:
    return f"{out.rstrip('/')}/{name}"


def _parts(out: str, sub: str) -> list[str]:
    try:
        result = FileSystems.match([_join(out, f"{sub}/*.parquet")])[0]
    except BeamIOError:
        return []
    return sorted(m.path for m in result.metadata_list)


def _read_columns(paths: list[str], columns: list[str]) -> dict[str, list[Any]]:
    data: dict[str, list[Any]] = {c: [] for c in columns}
    for path in paths:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
            table = pq.read_table(fh, columns=columns)
        for column in columns:
            data[column].extend(table.column(column).to_pylist())
    return data


def read_output(out: str) -> RunOutput:
    """The duplicate rows and document ids of a finished ``ndcl`` output directory."""
    if not FileSystems.exists(_join(out, "_SUCCESS")):
        what = "does not exist" if not FileSystems.exists(out) else "has no _SUCCESS marker"
        raise EvaluationError(f"{out} {what}: not the output directory of a finished ndcl run")
    summary: dict[str, Any] = {}
    if FileSystems.exists(_join(out, "summary.json")):
        with FileSystems.open(_join(out, "summary.json")) as handle:
            summary = json.loads(handle.read().decode("utf-8"))
    dups = _read_columns(_parts(out, "duplicates"), ["id", "duplicate_of"])
    kept = _read_columns(_parts(out, "kept"), ["id"])["id"]
    duplicate_of: dict[str, str] = {}
    for doc_id, target in zip(dups["id"], dups["duplicate_of"]):
        # A repeated input id can be its own duplicate; the id cannot tell the copies apart.
        if doc_id != target:
            duplicate_of[doc_id] = target
    all_ids = [*kept, *dups["id"]]
    doc_ids = frozenset(all_ids)
    chained = sorted(t for t in set(duplicate_of.values()) if t in duplicate_of)
    if chained:
        raise EvaluationError(f"{out}: duplicate_of {chained[0]!r} is itself a removed document "
                              f"({len(chained)} such); OUT/duplicates must point at kept "
                              "documents")
    return RunOutput(out, duplicate_of, doc_ids, summary, len(all_ids) - len(doc_ids))


# --------------------------------------------------------------------------- benchmark database


@dataclass(frozen=True)
class Target:
    """An evaluated or reference run: its output directory and, if known, its run id."""

    output: str
    run_id: int | None
    # Why the run id is unknown (so results cannot be stored), or how it was found.
    note: str = ""


def _same_path(a: str, b: str) -> bool:
    if "://" in a or "://" in b:
        return a.rstrip("/") == b.rstrip("/")
    return os.path.realpath(a) == os.path.realpath(b)


def _same_contents(row: Any, summary: Mapping[str, Any]) -> bool:
    """Whether a recorded run wrote this summary (its counts and wall time match)."""
    if not summary:
        return False
    if row.docs_read != summary.get("read") or row.duplicates != summary.get("duplicates"):
        return False
    wall = summary.get("wall_seconds")
    return row.total_seconds is None or wall is None or math.isclose(
        row.total_seconds, wall, abs_tol=1e-6)


def find_run(url: str, output: str, summary: Mapping[str, Any]) -> Target:
    """The newest recorded run that wrote the current contents of ``output``."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from beam_pipeline import db
    from beam_pipeline.db import BenchmarkRun

    engine = db.open_engine(url)
    try:
        with Session(engine) as session:
            rows = session.execute(
                select(BenchmarkRun.id, BenchmarkRun.output, BenchmarkRun.docs_read,
                       BenchmarkRun.duplicates, BenchmarkRun.total_seconds)
                .where(BenchmarkRun.output.is_not(None))
                .order_by(BenchmarkRun.id.desc())).all()
    finally:
        engine.dispose()
    same_path = [r for r in rows if _same_path(r.output, output)]
    match = next((r for r in same_path if _same_contents(r, summary)), None)
    if match is not None:
        return Target(output, match.id, f"run {match.id}")
    if same_path:
        ids = ", ".join(str(r.id) for r in same_path[:5])
        return Target(output, None, f"run(s) {ids} wrote to {output}, but its summary.json is "
                                    "from none of them (a later run that was not recorded?)")
    # No match by contents alone: a copied (and perhaps edited) output keeps its summary.json.
    return Target(output, None, f"no run recorded in the database wrote {output}")


def resolve_target(spec: str, url: str) -> tuple[Target, RunOutput]:
    """A run id of the benchmark database, or an output directory, with its output read."""
    from sqlalchemy.exc import SQLAlchemyError

    from beam_pipeline.db import get_run, redact, scrub_secrets

    if spec.isdigit():
        try:
            run = get_run(url, int(spec))
        except (SQLAlchemyError, ImportError, OSError) as exc:
            raise EvaluationError(f"cannot read run {spec} from {redact(url)}: "
                                  f"{scrub_secrets(str(exc), url)}") from None
        if run is None and not FileSystems.exists(spec):
            raise EvaluationError(f"no run {spec} in the benchmark database {redact(url)}")
        if run is not None:
            if not run.get("output"):
                raise EvaluationError(f"run {spec} has no recorded output directory")
            try:
                output = read_output(run["output"])
            except EvaluationError as exc:
                raise EvaluationError(f"run {spec}: {exc}") from None
            row = SimpleNamespace(docs_read=run["docs_read"], duplicates=run["duplicates"],
                                  total_seconds=run["total_seconds"])
            if not _same_contents(row, output.summary):
                return Target(run["output"], None, f"{run['output']} no longer holds run "
                              f"{spec}'s output (its summary.json differs)"), output
            return Target(run["output"], int(spec), f"run {spec}"), output
    output = read_output(spec)
    try:
        return find_run(url, spec, output.summary), output
    except (SQLAlchemyError, ImportError, OSError) as exc:
        why = f"{type(exc).__name__}: {scrub_secrets(str(exc), url)}"
        return Target(spec, None, f"the benchmark database {redact(url)} could not be read "
                                  f"({why})"), output


def store_accuracy(url: str, run_id: int, reference: str, result: Mapping[str, Any]) -> None:
    """One ``AccuracyMetric`` row per level, replacing earlier rows of this run and reference."""
    from sqlalchemy import delete
    from sqlalchemy.orm import Session

    from beam_pipeline import db
    from beam_pipeline.db import AccuracyMetric

    engine = db.open_engine(url)
    try:
        with Session(engine) as session, session.begin():
            session.execute(delete(AccuracyMetric).where(
                AccuracyMetric.run_id == run_id, AccuracyMetric.reference == reference))
            for level in LEVELS:
                counts = result[level]
                session.add(AccuracyMetric(
                    run_id=run_id, reference=reference, level=level, tp=counts["tp"],
                    fp=counts["fp"], fn=counts["fn"], precision=counts["precision"],
                    recall=counts["recall"], f1=counts["f1"]))
    finally:
        engine.dispose()


def write_evaluation(output: str, entry: dict[str, Any]) -> str:
    """Add ``entry`` to ``OUT/evaluation.json`` (replacing one with the same reference)."""
    path = _join(output, "evaluation.json")
    entries: list[dict[str, Any]] = []
    if FileSystems.exists(path):
        try:
            with FileSystems.open(path) as handle:
                entries = list(json.loads(handle.read().decode("utf-8"))["evaluations"])
        except (ValueError, KeyError, TypeError) as exc:
            LOG.warning("replacing unreadable %s (%s)", path, exc)
    entries = [e for e in entries if e.get("reference") != entry["reference"]] + [entry]
    body = {"output": output, "evaluations": sorted(entries, key=lambda e: e["reference"])}
    with FileSystems.create(path) as handle:
        handle.write((json.dumps(body, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
    return path

