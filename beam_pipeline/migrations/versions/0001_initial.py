"""Initial schema: runs, stage timings, resources, accuracy and cluster metrics.

Exactly what ``Base.metadata.create_all`` made before migrations existed, so a database made
by that code is adopted by stamping this revision (``beam_pipeline.db.migrate``).

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# Revision identifiers, used by Alembic.
revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Spelled out rather than imported from the models: a revision must keep describing the
# schema of its time when the models change later.
_BIG = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_CHILDREN = ("stage_timings", "resource_metrics", "accuracy_metrics", "cluster_metrics")


def _child(name: str, *columns: sa.Column) -> None:
    """A table of per-run rows: id, run_id (indexed, cascading delete), then ``columns``."""
    op.create_table(
        name,
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        *columns,
        sa.ForeignKeyConstraint(["run_id"], ["benchmark_runs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(f"ix_{name}_run_id", name, ["run_id"], unique=False)


def upgrade() -> None:
    op.create_table(
        "benchmark_runs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("command", sa.String(length=32), nullable=False),
        sa.Column("workflow", sa.String(length=32), nullable=True),
        sa.Column("runner", sa.String(length=64), nullable=True),
        sa.Column("workers", sa.Integer(), nullable=True),
        sa.Column("input_pattern", sa.Text(), nullable=True),
        sa.Column("output", sa.Text(), nullable=True),
        sa.Column("threshold", sa.Float(), nullable=True),
        sa.Column("ngram", sa.Integer(), nullable=True),
        sa.Column("num_perm", sa.Integer(), nullable=True),
        sa.Column("bands", sa.Integer(), nullable=True),
        sa.Column("rows", sa.Integer(), nullable=True),
        sa.Column("k1", sa.Integer(), nullable=True),
        sa.Column("k2", sa.Integer(), nullable=True),
        sa.Column("docs_read", sa.Integer(), nullable=True),
        sa.Column("docs_kept", sa.Integer(), nullable=True),
        sa.Column("duplicates", sa.Integer(), nullable=True),
        sa.Column("duplicates_exact", sa.Integer(), nullable=True),
        sa.Column("duplicates_near", sa.Integer(), nullable=True),
        sa.Column("rejected", sa.Integer(), nullable=True),
        sa.Column("total_seconds", sa.Float(), nullable=True),
        sa.Column("input_bytes", _BIG, nullable=True),
        sa.Column("config_hash", sa.String(length=64), nullable=True),
        sa.Column("config_json", sa.Text(), nullable=True),
        sa.Column("argv_json", sa.Text(), nullable=True),
        sa.Column("code_version", sa.String(length=64), nullable=True),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    _child(
        "stage_timings",
        sa.Column("stage", sa.String(length=64), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("elements", _BIG, nullable=True),
    )
    _child(
        "resource_metrics",
        sa.Column("cpu_percent_avg", sa.Float(), nullable=True),
        sa.Column("cpu_percent_peak", sa.Float(), nullable=True),
        sa.Column("rss_bytes_avg", _BIG, nullable=True),
        sa.Column("rss_bytes_peak", _BIG, nullable=True),
        sa.Column("disk_read_bytes", _BIG, nullable=True),
        sa.Column("disk_write_bytes", _BIG, nullable=True),
        sa.Column("net_sent_bytes", _BIG, nullable=True),
        sa.Column("net_recv_bytes", _BIG, nullable=True),
        sa.Column("samples_json", sa.Text(), nullable=True),
    )
    _child(
        "accuracy_metrics",
        sa.Column("reference", sa.Text(), nullable=False),
        sa.Column("tp", _BIG, nullable=True),
        sa.Column("fp", _BIG, nullable=True),
        sa.Column("fn", _BIG, nullable=True),
        sa.Column("precision", sa.Float(), nullable=True),
        sa.Column("recall", sa.Float(), nullable=True),
        sa.Column("f1", sa.Float(), nullable=True),
        sa.Column("level", sa.String(length=16), nullable=False),
    )
    _child(
        "cluster_metrics",
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("k", sa.Integer(), nullable=True),
        sa.Column("nmi", sa.Float(), nullable=True),
        sa.Column("ari", sa.Float(), nullable=True),
        sa.Column("silhouette", sa.Float(), nullable=True),
        sa.Column("sizes_json", sa.Text(), nullable=True),
    )


def downgrade() -> None:
    for name in reversed(_CHILDREN):
        op.drop_index(f"ix_{name}_run_id", table_name=name)
        op.drop_table(name)
    op.drop_table("benchmark_runs")
