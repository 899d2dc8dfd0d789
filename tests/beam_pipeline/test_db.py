"""Benchmark database (beam_pipeline.db): models, migrations, recording, fallback, queries.

Every test taking ``url`` runs twice: on a fresh SQLite file and on a fresh database of the
PostgreSQL server at ``$NDCL_TEST_PG_URL`` (``make test`` starts one and sets it; without it
the PostgreSQL variants skip).
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from beam_pipeline import db

PG_URL_ENV = "NDCL_TEST_PG_URL"

# Shape of a real `ndcl run --workflow nd_cl` summary.json (level_2 trimmed to two parents).
SUMMARY = {
    "read": 1308, "kept": 1031, "duplicates": 277, "duplicates_exact": 136,
    "duplicates_near": 141, "rejected": 0, "rejected_by_reason": {},
    "threshold": 0.7, "num_perm": 256, "ngram": 5, "bands": 32, "rows": 8,
    "cc_rounds": 2, "input_files": 1,
    "stage_seconds": {"cluster_fit": 11.014, "components": 0.0, "compute_features": 0.299,
                      "embed": 0.154, "exact": 0.002, "lsh": 0.005, "read": 0.032},
    "wall_seconds": 15.054,
    "config": {
        "dedup": {"threshold": 0.7, "num_perm": 256, "ngram": 5, "bands": None, "rows": None,
                  "seed": 1, "verify": "exact"},
        "cluster": {"k1": 10, "k2": 10, "backend": "local", "seed": 1},
    },
    "config_hash": "10492abc94529e98",
    "workflow": "nd_cl",
    "cluster": {
        "k1": 10, "k2": 10, "backend": "local", "sample": 1031,
        "level_1": {"inertia": 864.46, "k": 10, "n": 1031, "n_iter": 16, "seconds": 1.745},
        "level_2": {
            "0": {"inertia": 107.49, "k": 10, "n": 155, "n_iter": 7, "seconds": 1.22},
            "1": {"inertia": 78.99, "k": 10, "n": 115, "n_iter": 5, "seconds": 1.08},
        },
    },
}

ARGV = ["run", "--workflow", "nd_cl", "--kmeans-backend", "local",
        "--input", "data/demo/c4-demo.00000-of-00001.json.gz", "--output", "/tmp/dby"]


def _record(url: str, summary: dict | None = None, output: str | None = "/tmp/dby",
            **kw) -> db.RecordResult:
    args = {"command": "run", "argv": ARGV,
            "input_patterns": ["data/demo/c4-demo.00000-of-00001.json.gz"], "output": output,
            "runner": "DirectRunner", "workers": 4,
            "resources": {"cpu_percent_avg": 50.0, "cpu_percent_peak": 99.0,
                          "rss_bytes_avg": 10, "rss_bytes_peak": 20, "samples_json": "[]"},
            "input_bytes": 12345, "code_version": "abc1234"}
    args.update(kw)
    return db.record_run(url, summary or SUMMARY, **args)


def _fresh_pg_database() -> Iterator[str]:
    """URL of a new, empty database on the test server, dropped afterwards."""
    base = os.environ.get(PG_URL_ENV)
    if not base:
        pytest.skip(f"{PG_URL_ENV} is unset: no PostgreSQL server to test against "
                    "(`make test` starts one and sets it)")
    name = f"ndcl_t_{uuid.uuid4().hex[:12]}"
    # CREATE/DROP DATABASE cannot run inside a transaction.
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield make_url(base).set(database=name).render_as_string(hide_password=False)
        with admin.connect() as conn:
            # FORCE: a test that failed mid-way may have left a connection open.
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database (a new URL per test, so each is migrated from scratch)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'bench.db'}"
    else:
        yield from _fresh_pg_database()


@pytest.fixture
def pg_url() -> Iterator[str]:
    yield from _fresh_pg_database()


def _revision(url: str) -> str | None:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def _schema_diff(url: str) -> list:
    """Alembic autogenerate's differences between the database and the models."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return compare_metadata(MigrationContext.configure(conn), db.Base.metadata)
    finally:
        engine.dispose()


def _head() -> str:
    return ScriptDirectory(str(db.MIGRATIONS_DIR)).get_current_head()


def test_migrated_schema_matches_models(url: str) -> None:
    db.open_engine(url).dispose()
    assert _revision(url) == _head()
    assert _schema_diff(url) == []


def test_migrations_run_once_per_url(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = db.migrate
    monkeypatch.setattr(db, "migrate", lambda engine: calls.append(1) or real(engine))
    for _ in range(3):
        db.open_engine(url).dispose()
    assert _record(url).recorded and db.list_runs(url)
    assert len(calls) == 1


def test_head_revision_constant_is_alembics_head() -> None:
    from beam_pipeline.migrations import HEAD_REVISION

    assert HEAD_REVISION == _head()


def test_database_at_head_opens_without_alembic(tmp_path: Path) -> None:
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'runs.db'}"
    db.open_engine(url).dispose()  # migrated once, here
    probe = ("import sys; from beam_pipeline import db; db.open_engine(sys.argv[1]).dispose(); "
             "print('alembic' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", probe, url], capture_output=True, text=True,
                          check=True)
    assert proc.stdout.strip() == "False"


def test_downgrade_to_base_and_upgrade_again(url: str) -> None:
    db.open_engine(url).dispose()
    engine = create_engine(url)
    with engine.begin() as conn:
        command.downgrade(db._alembic_config(conn), "base")
    with engine.connect() as conn:
        assert set(db.Base.metadata.tables).isdisjoint(
            conn.dialect.get_table_names(conn))
    with engine.begin() as conn:
        command.upgrade(db._alembic_config(conn), "head")
    engine.dispose()
    assert _revision(url) == _head() and _schema_diff(url) == []


def test_pre_migration_database_is_adopted(url: str, caplog: pytest.LogCaptureFixture) -> None:
    # What the code before migrations did: create_all, no alembic_version table.
    engine = create_engine(url)
    db.Base.metadata.create_all(engine)
    with Session(engine) as session, session.begin():
        session.add(db.BenchmarkRun(command="dedup", docs_read=7))
    engine.dispose()
    assert _revision(url) is None
    caplog.set_level(logging.INFO, logger="ndcl.db")
    assert [r["docs_read"] for r in db.list_runs(url)] == [7]  # kept, not recreated
    assert any("predates migrations" in r.getMessage() for r in caplog.records)
    assert _revision(url) == _head() and _schema_diff(url) == []
    assert _record(url).recorded and len(db.list_runs(url)) == 2


def test_unknown_schema_revision_is_refused(url: str, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    db.open_engine(url).dispose()
    engine = create_engine(url)
    with engine.begin() as conn:  # as if a newer ndcl had migrated it further
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    monkeypatch.setattr(db, "_MIGRATED", set())  # a new process: nothing migrated yet
    with pytest.raises(db.SchemaVersionError, match=r"'9999'.*newer ndcl"):
        db.list_runs(url)
    out = tmp_path / "out"
    out.mkdir()
    result = _record(url, output=str(out))
    assert not result.recorded and "9999" in result.error
    assert result.fallback_path == str(out / "run-record.json")
    assert _revision(url) == "9999"  # left alone


def test_in_memory_sqlite_is_migrated_every_time() -> None:
    # Each engine on sqlite:// is a new empty database, so no "already migrated" cache.
    assert _record("sqlite://").recorded
    assert db.list_runs("sqlite://") == []


def test_models_create_insert_query(url: str) -> None:
    engine = db.open_engine(url)  # the schema comes from the migrations
    with Session(engine) as session, session.begin():
        run = db.BenchmarkRun(command="dedup", docs_read=10, docs_kept=8)
        run.stage_timings = [db.StageTiming(stage="read", seconds=0.5, elements=10)]
        run.accuracy_metrics = [db.AccuracyMetric(reference="gold", tp=3, fp=1, fn=0,
                                                  precision=0.75, recall=1.0, f1=0.857,
                                                  level="pair")]
        session.add(run)
    with Session(engine) as session:
        got = session.scalars(select(db.BenchmarkRun)).one()
        assert got.command == "dedup" and got.docs_kept == 8
        assert got.created_at is not None
        assert [(s.stage, s.elements) for s in got.stage_timings] == [("read", 10)]
        assert got.accuracy_metrics[0].level == "pair"
    engine.dispose()


def test_cascade_delete_removes_children(url: str) -> None:
    result = _record(url)
    assert result.recorded
    engine = db.open_engine(url)
    with Session(engine) as session, session.begin():
        session.delete(session.get(db.BenchmarkRun, result.run_id))
    with Session(engine) as session:
        for model in (db.StageTiming, db.ResourceMetric, db.ClusterMetric):
            assert session.scalar(select(func.count()).select_from(model)) == 0
    engine.dispose()


def test_db_level_cascade_on_raw_delete(url: str) -> None:
    # ondelete=CASCADE must also hold for deletes that bypass the ORM (SQLite FK pragma).
    result = _record(url)
    engine = db.open_engine(url)
    with engine.begin() as conn:
        conn.execute(db.BenchmarkRun.__table__.delete())
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(db.StageTiming)) == 0
    engine.dispose()
    assert result.run_id is not None


def test_record_run_stores_summary(url: str) -> None:
    result = _record(url, notes="demo")
    assert result == db.RecordResult(recorded=True, run_id=result.run_id)
    engine = db.open_engine(url)
    with Session(engine) as session:
        run = session.get(db.BenchmarkRun, result.run_id)
        assert (run.command, run.workflow, run.runner, run.workers) == (
            "run", "nd_cl", "DirectRunner", 4)
        assert (run.docs_read, run.docs_kept, run.duplicates, run.duplicates_near) == (
            1308, 1031, 277, 141)
        assert (run.threshold, run.bands, run.rows, run.k1, run.k2) == (0.7, 32, 8, 10, 10)
        assert run.total_seconds == 15.054 and run.input_bytes == 12345
        assert json.loads(run.config_json) == SUMMARY["config"]
        assert run.code_version == "abc1234" and run.notes == "demo"
        assert {s.stage: s.seconds for s in run.stage_timings} == SUMMARY["stage_seconds"]
        assert run.resource_metrics[0].cpu_percent_peak == 99.0
        levels = sorted(run.cluster_metrics, key=lambda c: c.level)
        assert [(c.level, c.k, c.nmi, c.ari) for c in levels] == [
            (1, 10, None, None), (2, 10, None, None)]
        assert json.loads(levels[0].sizes_json) == {"0": 155, "1": 115}
    engine.dispose()


def test_record_run_stores_cluster_quality(url: str) -> None:
    # The summary.json shape since quality is measured (beam_pipeline.run.cluster_section).
    sizes_1 = {"count": 2, "min": 400, "median": 515.5, "max": 631,
               "sizes": {"0": 631, "1": 400}}
    sizes_2 = {"count": 3, "min": 100, "median": 300, "max": 631,
               "sizes": {"0/0": 631, "1/0": 300, "1/1": 100}}
    summary = dict(SUMMARY, cluster={
        "k1": 2, "k2": 2, "backend": "local", "sample": 1031, "label_field": "label",
        "documents": 1031, "labelled_docs": 900,
        "level_1": {"k": 2, "n": 1031, "nmi": 0.61, "ari": 0.52, "silhouette": 0.04,
                    "labelled_docs": 900, "sizes": sizes_1},
        "level_2": {"k": 2, "fits": {"0": {"k": 1, "n": 600}, "1": {"k": 2, "n": 431}},
                    "nmi": 0.55, "ari": 0.31, "silhouette": 0.03, "labelled_docs": 900,
                    "sizes": sizes_2}})
    result = _record(url, summary=summary)
    engine = db.open_engine(url)
    with Session(engine) as session:
        levels = sorted(session.get(db.BenchmarkRun, result.run_id).cluster_metrics,
                        key=lambda c: c.level)
        assert [(c.level, c.k, c.nmi, c.ari, c.silhouette) for c in levels] == [
            (1, 2, 0.61, 0.52, 0.04), (2, 2, 0.55, 0.31, 0.03)]
        assert json.loads(levels[0].sizes_json) == {**sizes_1, "labelled_docs": 900}
        assert json.loads(levels[1].sizes_json) == {**sizes_2, "labelled_docs": 900}
    engine.dispose()


def test_record_run_stores_cluster_top_terms(url: str) -> None:
    # Top terms of the fit (transforms.cluster.top_terms) go into each level's sizes_json.
    summary = dict(SUMMARY, cluster={
        "k1": 2, "k2": 2, "backend": "local", "sample": 10,
        "level_1": {"k": 2, "n": 10, "top_terms": {"0": ["orbit", "moon"], "1": ["oven"]},
                    "sizes": {"count": 2, "sizes": {"0": 6, "1": 4}}},
        "level_2": {"k": 2, "fits": {"0": {"k": 1, "top_terms": {"0": ["orbit"]}},
                                     "1": {"k": 2, "top_terms": {"0": ["oven"], "1": ["bake"]}}},
                    "sizes": {"count": 3, "sizes": {"0/0": 6, "1/0": 3, "1/1": 1}}}})
    result = _record(url, summary=summary)
    engine = db.open_engine(url)
    with Session(engine) as session:
        levels = sorted(session.get(db.BenchmarkRun, result.run_id).cluster_metrics,
                        key=lambda c: c.level)
        assert json.loads(levels[0].sizes_json)["top_terms"] == {"0": ["orbit", "moon"],
                                                                 "1": ["oven"]}
        assert json.loads(levels[1].sizes_json)["top_terms"] == {
            "0/0": ["orbit"], "1/0": ["oven"], "1/1": ["bake"]}
        assert json.loads(levels[1].sizes_json)["sizes"] == {"0/0": 6, "1/0": 3, "1/1": 1}
    engine.dispose()


def test_record_run_dedup_only_has_no_cluster_metrics(url: str) -> None:
    summary = {k: v for k, v in SUMMARY.items() if k not in ("cluster", "workflow")}
    summary["config"] = SUMMARY["config"]["dedup"]  # dedup-only runs carry a flat config
    result = _record(url, summary=summary, command="dedup", resources=None)
    run = db.get_run(url, result.run_id)
    assert run["workflow"] is None and run["threshold"] == 0.7 and run["k1"] is None
    engine = db.open_engine(url)
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(db.ClusterMetric)) == 0
        assert session.scalar(select(func.count()).select_from(db.ResourceMetric)) == 0
    engine.dispose()


def test_unreachable_db_falls_back_without_leaking(tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "out"
    out.mkdir()
    caplog.set_level(logging.DEBUG)
    result = _record("postgresql+psycopg://u:secret@127.0.0.1:1/x", output=str(out))
    assert result.recorded is False and result.run_id is None and result.error
    assert result.fallback_path == str(out / "run-record.json")
    body = json.loads(Path(result.fallback_path).read_text())
    assert body["summary"] == SUMMARY and body["recorded"] is False
    assert body["run"]["argv_json"] == json.dumps(ARGV)
    assert any("not recorded" in r.getMessage() for r in caplog.records)
    for shown in (result.error, result.fallback_path, repr(result),
                  Path(result.fallback_path).read_text(),
                  *(r.getMessage() for r in caplog.records)):
        assert "secret" not in shown


def test_fallback_to_cwd_when_output_is_remote(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = _record(f"sqlite:///{tmp_path / 'no' / 'such' / 'x.db'}",
                     output="gs://bucket/out")
    assert not result.recorded
    path = Path(result.fallback_path)
    assert path.parent == tmp_path and path.name.startswith("ndcl-unrecorded-")
    assert json.loads(path.read_text())["summary"]["kept"] == 1031


def test_redact_and_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    shown = db.redact("postgresql+pg8000://u:secret@db.example:5432/bench")
    assert "secret" not in shown and "u:***@db.example:5432/bench" in shown
    assert db.redact("sqlite:///x.db") == "sqlite:///x.db"
    monkeypatch.delenv(db.DB_URL_ENV, raising=False)
    assert db.database_url(None) == "sqlite:///ndcl-benchmarks.db"
    monkeypatch.setenv(db.DB_URL_ENV, "sqlite:///env.db")
    assert db.database_url(None) == "sqlite:///env.db"
    assert db.database_url("sqlite:///cli.db") == "sqlite:///cli.db"


def test_wrong_password_falls_back_without_leaking(pg_url: str, tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    # A real server rejecting the login: its error text must not carry the password.
    wrong = make_url(pg_url).set(password="Wr0ngSecret").render_as_string(hide_password=False)
    caplog.set_level(logging.DEBUG)
    result = _record(wrong, output=str(tmp_path))
    assert not result.recorded and "password authentication failed" in result.error
    texts = [result.error, Path(result.fallback_path).read_text(),
             *(r.getMessage() for r in caplog.records)]
    assert not [t for t in texts if "Wr0ngSecret" in t]


def test_password_never_logged(url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # everything: ndcl, alembic, SQLAlchemy, the driver
    result = _record(url)
    assert db.get_run(url, result.run_id)["id"] == result.run_id
    assert db.list_runs(url)
    messages = [r.getMessage() for r in caplog.records]
    assert f"run recorded as #{result.run_id} in {db.redact(url)}" in messages
    password = make_url(url).password
    if password:  # the PostgreSQL server's; SQLite URLs have none
        assert not [m for m in messages if str(password) in m]


def test_list_runs_newest_first_and_table(url: str) -> None:
    assert db.list_runs(url) == []  # a new database: migrated on open, no runs yet
    ids = [_record(url, notes=str(i)).run_id for i in range(3)]
    # Make the first run the newest to check ordering is by created_at, not by id.
    engine = db.open_engine(url)
    with Session(engine) as session, session.begin():
        session.get(db.BenchmarkRun, ids[0]).created_at = (
            datetime.now(timezone.utc) + timedelta(hours=1))
    engine.dispose()
    rows = db.list_runs(url)
    assert [r["id"] for r in rows] == [ids[0], ids[2], ids[1]]
    assert rows[0]["kept"] == 1031 and rows[0]["input_pattern"].endswith(".json.gz")
    assert [r["id"] for r in db.list_runs(url, limit=1)] == [ids[0]]
    table = db.format_runs_table(rows).splitlines()
    assert table[0].split()[:3] == ["id", "created_at", "command"]
    assert len(table) == 4 and len({line.index("command") for line in table[:1]}) == 1
    assert db.format_runs_table([]) == "no runs recorded"


def test_get_run_returns_argv_and_config(url: str) -> None:
    run_id = _record(url).run_id
    run = db.get_run(url, run_id)
    assert run["argv"] == ARGV and run["config"] == SUMMARY["config"]
    assert run["command"] == "run" and run["id"] == run_id
    assert run["stage_seconds"]["embed"] == 0.154
    assert db.get_run(url, run_id + 100) is None


def test_code_version_is_nonempty() -> None:
    assert db.code_version()
