"""Benchmark database: one row per ``ndcl`` run, with its timings, resources and metrics.

What is stored (SQLAlchemy 2 models, any SQLAlchemy URL; SQLite by default):

* ``BenchmarkRun`` -- the run itself: command, workflow, runner, inputs, the effective
  configuration (full JSON plus its hash), the CLI arguments needed to repeat it, the
  document counts from the run summary, wall time and the code version.
* ``StageTiming`` -- seconds per pipeline stage (``summary["stage_seconds"]``).
* ``ResourceMetric`` -- CPU / RSS / disk / network usage sampled by
  ``beam_pipeline.resources.ResourceSampler``.
* ``AccuracyMetric`` -- precision / recall / F1 against a reference (filled by evaluation).
* ``ClusterMetric`` -- per K-Means level: k, NMI / ARI / silhouette when known, sizes.

Typical use from the CLI::

    url = database_url(args.db_url)          # --db-url, else $NDCL_DB_URL, else SQLite file
    with ResourceSampler() as sampler:       # beam_pipeline.resources
        summary = run_workflow(...)
    result = record_run(url, summary, command="run", argv=sys.argv[1:], input_patterns=inputs,
                        output=output, runner="DirectRunner", workers=4,
                        resources=sampler.result(), input_bytes=summary.get("input_bytes"))
    if not result.recorded:
        print(f"run NOT recorded ({result.error}); record written to {result.fallback_path}")

``record_run`` stores the rows ``beam_pipeline.run_record.build_record`` makes of the summary.
``list_runs`` / ``format_runs_table`` list past runs, ``get_run`` returns one run with its
parsed config and argv (for ``ndcl rerun``).  The schema is versioned with Alembic
(``beam_pipeline/migrations``): every function here brings the database to the head revision
the first time it opens it in a process, so a new database needs no setup and an old one is
upgraded in place.  Recording never raises: a database problem
must not turn a finished, possibly hours-long run into a failure, so the record goes to a
JSON fallback file instead.  URLs are only ever logged through ``redact``.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    create_engine,
    event,
    inspect,
    text,
)
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

from beam_pipeline.run_record import build_record

LOG = logging.getLogger("ndcl.db")

DEFAULT_DB_URL = "sqlite:///ndcl-benchmarks.db"
DB_URL_ENV = "NDCL_DB_URL"


# Byte counts pass 2**31 easily, so BIGINT on server databases; SQLite's INTEGER is 64-bit.
_BIG = BigInteger().with_variant(Integer(), "sqlite")


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    """Declarative base of the benchmark schema."""


class BenchmarkRun(Base):
    """One ``ndcl`` invocation and its summary numbers."""

    __tablename__ = "benchmark_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_utcnow)
    command: Mapped[str] = mapped_column(String(32))
    workflow: Mapped[str | None] = mapped_column(String(32))
    runner: Mapped[str | None] = mapped_column(String(64))
    workers: Mapped[int | None]
    input_pattern: Mapped[str | None] = mapped_column(Text)
    output: Mapped[str | None] = mapped_column(Text)
    threshold: Mapped[float | None] = mapped_column(Float)
    ngram: Mapped[int | None]
    num_perm: Mapped[int | None]
    bands: Mapped[int | None]
    rows: Mapped[int | None]
    k1: Mapped[int | None]
    k2: Mapped[int | None]
    docs_read: Mapped[int | None]
    docs_kept: Mapped[int | None]
    duplicates: Mapped[int | None]
    duplicates_exact: Mapped[int | None]
    duplicates_near: Mapped[int | None]
    rejected: Mapped[int | None]
    total_seconds: Mapped[float | None] = mapped_column(Float)
    input_bytes: Mapped[int | None] = mapped_column(_BIG)
    config_hash: Mapped[str | None] = mapped_column(String(64))
    config_json: Mapped[str | None] = mapped_column(Text)
    argv_json: Mapped[str | None] = mapped_column(Text)
    code_version: Mapped[str | None] = mapped_column(String(64))
    notes: Mapped[str | None] = mapped_column(Text)

    stage_timings: Mapped[list[StageTiming]] = relationship(
        back_populates="run", cascade="all, delete-orphan", passive_deletes=True)
    resource_metrics: Mapped[list[ResourceMetric]] = relationship(
        back_populates="run", cascade="all, delete-orphan", passive_deletes=True)
    accuracy_metrics: Mapped[list[AccuracyMetric]] = relationship(
        back_populates="run", cascade="all, delete-orphan", passive_deletes=True)
    cluster_metrics: Mapped[list[ClusterMetric]] = relationship(
        back_populates="run", cascade="all, delete-orphan", passive_deletes=True)


def _run_fk() -> Mapped[int]:
    return mapped_column(ForeignKey("benchmark_runs.id", ondelete="CASCADE"), index=True)


class StageTiming(Base):
    """Seconds spent in one pipeline stage of a run."""

    __tablename__ = "stage_timings"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = _run_fk()
    stage: Mapped[str] = mapped_column(String(64))
    seconds: Mapped[float] = mapped_column(Float)
    elements: Mapped[int | None] = mapped_column(_BIG)

    run: Mapped[BenchmarkRun] = relationship(back_populates="stage_timings")


class ResourceMetric(Base):
    """Process-tree CPU/RSS and system disk/network usage over a run."""

    __tablename__ = "resource_metrics"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = _run_fk()
    cpu_percent_avg: Mapped[float | None] = mapped_column(Float)
    cpu_percent_peak: Mapped[float | None] = mapped_column(Float)
    rss_bytes_avg: Mapped[int | None] = mapped_column(_BIG)
    rss_bytes_peak: Mapped[int | None] = mapped_column(_BIG)
    disk_read_bytes: Mapped[int | None] = mapped_column(_BIG)
    disk_write_bytes: Mapped[int | None] = mapped_column(_BIG)
    net_sent_bytes: Mapped[int | None] = mapped_column(_BIG)
    net_recv_bytes: Mapped[int | None] = mapped_column(_BIG)
    samples_json: Mapped[str | None] = mapped_column(Text)

    run: Mapped[BenchmarkRun] = relationship(back_populates="resource_metrics")


class AccuracyMetric(Base):
    """Duplicate-detection accuracy of a run against a reference."""

    __tablename__ = "accuracy_metrics"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = _run_fk()
    reference: Mapped[str] = mapped_column(Text)
    tp: Mapped[int | None] = mapped_column(_BIG)
    fp: Mapped[int | None] = mapped_column(_BIG)
    fn: Mapped[int | None] = mapped_column(_BIG)
    precision: Mapped[float | None] = mapped_column(Float)
    recall: Mapped[float | None] = mapped_column(Float)
    f1: Mapped[float | None] = mapped_column(Float)
    level: Mapped[str] = mapped_column(String(16))  # "pair" or "document"

    run: Mapped[BenchmarkRun] = relationship(back_populates="accuracy_metrics")


class ClusterMetric(Base):
    """Quality of one K-Means level (1 = top level, 2 = sub-clusters) of a run."""

    __tablename__ = "cluster_metrics"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = _run_fk()
    level: Mapped[int]
    k: Mapped[int | None]
    nmi: Mapped[float | None] = mapped_column(Float)
    ari: Mapped[float | None] = mapped_column(Float)
    silhouette: Mapped[float | None] = mapped_column(Float)
    sizes_json: Mapped[str | None] = mapped_column(Text)

    run: Mapped[BenchmarkRun] = relationship(back_populates="cluster_metrics")


# --------------------------------------------------------------------------- URLs


def database_url(cli_url: str | None) -> str:
    """The database URL: ``--db-url``, else ``$NDCL_DB_URL``, else a SQLite file in the cwd."""
    return cli_url or os.environ.get(DB_URL_ENV) or DEFAULT_DB_URL


def redact(url: str) -> str:
    """``url`` with its password hidden; safe to log or print."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        # Unparseable: show nothing of it rather than risk leaking a secret.
        return "<unparseable database URL>"


def _password(url: str) -> str | None:
    try:
        return make_url(url).password
    except (ArgumentError, ValueError):
        return None


def scrub_secrets(text: str, url: str) -> str:
    """Remove the URL's password from an error text (drivers sometimes echo DSNs)."""
    secret = _password(url)
    if secret:
        text = text.replace(str(secret), "***")
    return text


# --------------------------------------------------------------------------- schema

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# The revision that creates the schema the pre-migration code made with create_all().
BASELINE_REVISION = "0001"
_MIGRATED: set[str] = set()
_MIGRATE_LOCK = threading.Lock()
# Key of the PostgreSQL advisory lock held while migrating ("ndclmigr" as a bigint).
_PG_LOCK_KEY = int.from_bytes(b"ndclmigr", "big") & (2**63 - 1)


class SchemaVersionError(SQLAlchemyError):
    """The database's schema revision is unknown to this code (e.g. made by a newer ndcl)."""


def _alembic_config(connection: Connection) -> Any:
    from alembic.config import Config

    cfg = Config()  # no ini file: everything it needs is set here
    # ConfigParser would read "%" in the path as interpolation.
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    cfg.attributes["connection"] = connection
    return cfg


def _is_memory_db(url: str) -> bool:
    parsed = make_url(url)
    return parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:")


@contextmanager
def _quiet_alembic() -> Iterator[None]:
    # Alembic logs its plugins, dialect and DDL mode at INFO on every upgrade, i.e. on every
    # ndcl run; migrate logs what changed itself.  An explicitly set level is left alone.
    logger = logging.getLogger("alembic")
    if logger.level != logging.NOTSET:
        yield
        return
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(logging.NOTSET)


def _at_head(engine: Engine) -> bool:
    """Whether the database's recorded revision is already ``HEAD_REVISION`` (plain SQL)."""
    from beam_pipeline.migrations import HEAD_REVISION

    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return False
        rows = conn.execute(text("SELECT version_num FROM alembic_version")).all()
    return [row[0] for row in rows] == [HEAD_REVISION]


def migrate(engine: Engine) -> None:
    """Bring ``engine``'s database to the head revision (adopting a pre-migration one)."""
    if _at_head(engine):
        return
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from alembic.util.exc import CommandError

    shown = redact(engine.url.render_as_string(hide_password=False))
    # One transaction for the lock, the adoption stamp and the upgrade, so that on
    # PostgreSQL (transactional DDL) a failure leaves the schema and its version as they
    # were.  SQLite's driver commits DDL as it goes.
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Several runs opening a new database at once: one migrates, the others wait
            # here and then find it at head.
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        cfg = _alembic_config(conn)
        script = ScriptDirectory.from_config(cfg)
        head = script.get_current_head()
        before = MigrationContext.configure(conn).get_current_revision()
        if before == head:
            return
        if before is not None and before not in {r.revision for r in script.walk_revisions()}:
            raise SchemaVersionError(
                f"benchmark database {shown} is at schema revision {before!r}, which this "
                f"ndcl does not know (its newest is {head!r}): it was written by a newer "
                "ndcl; upgrade ndcl or use another --db-url")
        try:
            if before is None and inspect(conn).has_table(BenchmarkRun.__tablename__):
                # Made by create_all() before migrations existed: its tables are exactly the
                # baseline revision's (the models did not change before migrations came),
                # so record that revision instead of creating the tables again.
                LOG.info("benchmark database %s predates migrations: adopting it as "
                         "schema revision %s", shown, BASELINE_REVISION)
                command.stamp(cfg, BASELINE_REVISION)
            command.upgrade(cfg, "head")
        except CommandError as exc:
            raise SchemaVersionError(
                f"benchmark database {shown}: cannot migrate from schema revision "
                f"{before!r} to {head!r}: {exc}") from None
        LOG.info("benchmark database %s: schema revision %s (was %s)", shown, head,
                 before or "empty")


def open_engine(url: str) -> Engine:
    """An engine for ``url`` whose schema is at the head revision (migrated on first use)."""
    # In-memory SQLite is a new, empty database for every engine, so it is never "done".
    if not _is_memory_db(url):
        with _MIGRATE_LOCK:  # threads of one process: migrate once, the rest wait
            if url not in _MIGRATED:
                # A plain engine, without the foreign-key pragma below: with foreign keys
                # on, SQLite's DROP TABLE (which batch migrations use to rebuild a table)
                # would cascade-delete the child rows of every run.
                plain = create_engine(url)
                try:
                    with _quiet_alembic():
                        migrate(plain)
                finally:
                    plain.dispose()
                _MIGRATED.add(url)
    engine = create_engine(url)
    if engine.dialect.name == "sqlite":
        # SQLite enforces ON DELETE CASCADE only with foreign keys switched on per connection.
        @event.listens_for(engine, "connect")
        def _fk_on(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()
        if _is_memory_db(url):
            with _quiet_alembic():  # empty by definition, so the pragma cascades nothing
                migrate(engine)
    return engine


# --------------------------------------------------------------------------- recording


@dataclass(frozen=True)
class RecordResult:
    """Outcome of ``record_run``: either a database id or the fallback file and the error."""

    recorded: bool
    run_id: int | None
    fallback_path: str | None = None
    error: str | None = None


def _insert(url: str, record: dict[str, Any]) -> int:
    engine = open_engine(url)
    try:
        run_cols = dict(record["run"])
        run_cols["created_at"] = datetime.fromisoformat(run_cols["created_at"])
        run = BenchmarkRun(**run_cols)
        run.stage_timings = [StageTiming(**s) for s in record["stage_timings"]]
        if record["resource_metric"] is not None:
            run.resource_metrics = [ResourceMetric(**record["resource_metric"])]
        run.cluster_metrics = [ClusterMetric(**c) for c in record["cluster_metrics"]]
        with Session(engine) as session, session.begin():  # one transaction for all rows
            session.add(run)
            session.flush()
            return run.id
    finally:
        engine.dispose()


def _is_local_dir(path: str | None) -> bool:
    return bool(path) and "://" not in str(path) and os.path.isdir(str(path))


def _write_fallback(output: str | None, body: dict[str, Any]) -> tuple[str | None, str | None]:
    """Write ``body`` as JSON; returns (path, None) or (None, why it could not be written)."""
    stamp = _utcnow().strftime("%Y%m%dT%H%M%S%fZ")
    candidates = []
    if _is_local_dir(output):
        candidates.append(os.path.join(str(output), "run-record.json"))
    candidates.append(os.path.abspath(f"ndcl-unrecorded-{stamp}.json"))
    problems = []
    for path in candidates:
        try:
            with open(path, "w", encoding="utf-8") as fh:
                json.dump(body, fh, indent=2, sort_keys=True, default=str)
            return path, None
        except OSError as exc:
            problems.append(f"{path}: {exc}")
    return None, "; ".join(problems)


def record_run(url: str, summary: dict[str, Any], *, command: str, argv: list[str],
               input_patterns: list[str], output: str | None, runner: str | None,
               workers: int | None, resources: dict[str, Any] | None,
               input_bytes: int | None, code_version: str | None = None,
               notes: str | None = None) -> RecordResult:
    """Store a finished run (migrating the schema to head if needed); never raises.

    On any database error the record (and the raw summary) is written as JSON to
    ``<output>/run-record.json`` when ``output`` is a local directory, else to
    ``./ndcl-unrecorded-<timestamp>.json``, and ``recorded`` is False.
    """
    record = build_record(summary, command=command, argv=argv, input_patterns=input_patterns,
                          output=output, runner=runner, workers=workers, resources=resources,
                          input_bytes=input_bytes, code_version=code_version, notes=notes)
    try:
        run_id = _insert(url, record)
    except (SQLAlchemyError, ImportError, OSError, ValueError, TypeError) as exc:
        # ImportError: driver not installed; OSError/ValueError: bad paths or URL parts that
        # some drivers raise unwrapped.  Anything here means "not recorded", not "run failed".
        error = scrub_secrets(f"{type(exc).__name__}: {exc}", url)
        body = {"recorded": False, "error": error, "db_url": redact(url), **record,
                "summary": summary}
        path, write_error = _write_fallback(output, body)
        if write_error:
            error = f"{error}; fallback file not written: {write_error}"
        LOG.warning("run not recorded in %s (%s); record written to %s",
                    redact(url), error, path or "nowhere")
        return RecordResult(recorded=False, run_id=None, fallback_path=path, error=error)
    LOG.info("run recorded as #%d in %s", run_id, redact(url))
    return RecordResult(recorded=True, run_id=run_id)


# --------------------------------------------------------------------------- queries


def _as_utc(value: datetime | None) -> str | None:
    # SQLite drops the zone on read; values are always written in UTC, so say so.
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).isoformat()


def list_runs(url: str, limit: int = 50) -> list[dict[str, Any]]:
    """The ``limit`` most recent runs, newest first (raises SQLAlchemyError if unreachable)."""
    engine = open_engine(url)
    try:
        with Session(engine) as session:
            runs = session.query(BenchmarkRun).order_by(
                BenchmarkRun.created_at.desc(), BenchmarkRun.id.desc()).limit(limit).all()
            return [{
                "id": r.id, "created_at": _as_utc(r.created_at),
                "command": r.command, "workflow": r.workflow, "runner": r.runner,
                "docs_read": r.docs_read, "kept": r.docs_kept, "duplicates": r.duplicates,
                "rejected": r.rejected, "total_seconds": r.total_seconds,
                "input_pattern": r.input_pattern,
            } for r in runs]
    finally:
        engine.dispose()


def format_runs_table(rows: list[dict[str, Any]]) -> str:
    """A plain, column-aligned text table of ``list_runs`` rows."""
    if not rows:
        return "no runs recorded"
    columns = ["id", "created_at", "command", "workflow", "runner", "docs_read", "kept",
               "duplicates", "rejected", "total_seconds", "input_pattern"]

    def cell(value: Any) -> str:
        if value is None:
            return "-"
        text = f"{value:.1f}" if isinstance(value, float) else str(value)
        return text if len(text) <= 60 else text[:57] + "..."

    table = [columns] + [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip()
                     for line in table)


def get_run(url: str, run_id: int) -> dict[str, Any] | None:
    """One run's columns plus ``config`` / ``argv`` parsed from their JSON, or None."""
    engine = open_engine(url)
    try:
        with Session(engine) as session:
            run = session.get(BenchmarkRun, run_id)
            if run is None:
                return None
            out = {c.key: getattr(run, c.key) for c in inspect(BenchmarkRun).column_attrs}
            out["config"] = json.loads(run.config_json) if run.config_json else {}
            out["argv"] = json.loads(run.argv_json) if run.argv_json else []
            out["stage_seconds"] = {s.stage: s.seconds for s in run.stage_timings}
            return out
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- version


def code_version() -> str:
    """Short git commit of the source tree when available, else the package version."""
    repo = Path(__file__).resolve().parent.parent
    try:
        proc = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo,
                              capture_output=True, text=True, timeout=5, check=False)
        if proc.returncode == 0 and proc.stdout.strip():
            return proc.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    from beam_pipeline import __version__

    return __version__
