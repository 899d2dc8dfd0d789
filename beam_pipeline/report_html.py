"""The HTML page of ``ndcl report``: its tables and words as data, rendered by Jinja2.

The markup lives in ``templates/report.html.j2``; this module only decides what the page says.
Every value reaches the page through the template, whose autoescape escapes it exactly once, so
text from the database (run notes, input paths, references) can never add markup to the page.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from beam_pipeline.report_data import KIND_LABELS, RunData, stored_sizes, stored_top_terms
from beam_pipeline.report_plots import Plot

if TYPE_CHECKING:
    from jinja2 import Environment

TITLE = "NDCL benchmark report"
# Marks a page as ndcl report's own, so a later report may replace it (beam_pipeline.outputs).
GENERATOR = '<meta name="generator" content="ndcl report">'
# How an earlier page of this report is recognised; pages from before the generator tag are
# known by their title.
PAGE_MARKERS = (GENERATOR, f"<title>{TITLE}</title>")
TEMPLATE = "report.html.j2"


@dataclass(frozen=True)
class Table:
    """A table of the page: ``columns`` are ``(header, css classes)``, ``rows`` the cell texts."""

    columns: list[tuple[str, str]]
    rows: list[list[str]]

    @property
    def headers(self) -> list[tuple[str, str]]:
        """``(header, class)``: headers take only the alignment of their column, not its
        wrapping, so that a narrow column's header still breaks between words."""
        return [(name, "text" if "text" in css.split() else "") for name, css in self.columns]

    @property
    def body(self) -> list[list[tuple[str, str]]]:
        """Each row as ``(css classes, text)`` per cell."""
        return [[(css, value) for (_, css), value in zip(self.columns, row)]
                for row in self.rows]


def _table(columns: Sequence[tuple[str, str]], rows: Sequence[Sequence[Any]]) -> Table:
    return Table(list(columns),
                 [["" if value is None else str(value) for value in row] for row in rows])


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


def shared_input(runs: Sequence[RunData]) -> str | None:
    """The input every run read ("–" if unrecorded), or None when they differ: one shared
    input is said once above the table, where a long path does not squeeze the numbers."""
    inputs = {run.input_pattern for run in runs}
    return (inputs.pop() or "–") if len(inputs) == 1 else None


def runs_table(runs: Sequence[RunData]) -> Table:
    """The runs, one row each; the input column is left out when ``shared_input`` says it."""
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
    if shared_input(runs) is not None:
        columns, rows = columns[:4] + columns[5:], [row[:4] + row[5:] for row in rows]
    return _table(columns, rows)


def run_notes(runs: Sequence[RunData]) -> list[tuple[str, str]]:
    """``(run label, notes)`` of the runs with free-text notes, listed below the table."""
    return [(run.label, run.notes) for run in runs if run.notes]


def accuracy_table(runs: Sequence[RunData]) -> Table | None:
    rows = [[run.label, a["reference"], a["level"], _num(a["tp"]), _num(a["fp"]),
             _num(a["fn"]), _num(a["precision"], 4), _num(a["recall"], 4), _num(a["f1"], 4)]
            for run in runs for a in run.accuracy]
    if not rows:
        return None
    return _table([("run", "text"), ("reference", "text wrap"), ("level", "text"), ("TP", ""),
                   ("FP", ""), ("FN", ""), ("precision", ""), ("recall", ""), ("F1", "")],
                  rows)


def cluster_quality_table(runs: Sequence[RunData]) -> Table | None:
    """NMI/ARI (against the input labels, over the labelled kept documents) and silhouette
    (on the fitted sample) per level, with the kept and labelled document counts."""
    rows = []
    for run in runs:
        for c in run.clusters:
            if all(c[m] is None for m in ("nmi", "ari", "silhouette")):
                continue
            stored = stored_sizes(c) or {}
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


def top_terms_tables(runs: Sequence[RunData]) -> list[tuple[str, Table]]:
    """One table per clustered run that stored top terms: each ``cluster_A`` (largest
    first, by kept documents when stored), its kept documents and its top terms."""
    tables = []
    for run in runs:
        terms = stored_top_terms(run)
        if not terms:
            continue
        level_1 = next((c for c in run.clusters if c["level"] == 1), None)
        stored = (stored_sizes(level_1) or {}) if level_1 else {}
        sizes = stored.get("sizes") if isinstance(stored.get("sizes"), dict) else {}
        order = sorted(terms, key=lambda cid: (-(sizes.get(cid) or 0),
                                               int(cid) if cid.isdigit() else 0, cid))
        rows = [[cid, _num(sizes.get(cid)), ", ".join(terms[cid]) or "–"] for cid in order]
        tables.append((f"Top terms per cluster_A, {run.label}",
                       _table([("cluster_A", "text"), ("kept docs", ""),
                               ("top terms", "text wrap terms")], rows)))
    return tables


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


@lru_cache(maxsize=1)
def _environment() -> Environment:
    # jinja2 is imported here, not at the top: the CLI imports the report modules to build its
    # parser, and only `ndcl report` itself needs the template engine.
    from jinja2 import Environment, PackageLoader, StrictUndefined

    # autoescape=True rather than select_autoescape(): its default extensions do not match
    # "report.html.j2", and this package has no template that is not HTML. StrictUndefined:
    # a misspelt name in the template fails the report instead of leaving a blank.
    return Environment(loader=PackageLoader("beam_pipeline", "templates"), autoescape=True,
                       undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                       keep_trailing_newline=True)


def render_html(runs: Sequence[RunData], plots: Sequence[Plot], db_url: str,
                generated: datetime) -> str:
    """The page; every text reaches it through the template's autoescape."""
    from markupsafe import Markup

    from beam_pipeline.db import redact

    # Tables shown under the figure they belong to, when that figure was drawn.
    tables_under: dict[str, list[tuple[str, Table]]] = {}
    for filename, heading, table in (
            ("s_curve.png", "Accuracy (AccuracyMetric)", accuracy_table(runs)),
            ("cluster_sizes.png", "Cluster quality (ClusterMetric)",
             cluster_quality_table(runs)),
            *(("cluster_sizes.png", heading, table)
              for heading, table in top_terms_tables(runs))):
        if table is not None:
            tables_under.setdefault(filename, []).append((heading, table))
    return _environment().get_template(TEMPLATE).render(
        # GENERATOR is this module's own constant: the one piece of markup not escaped.
        title=TITLE, generator=Markup(GENERATOR), run_count=len(runs), db_url=redact(db_url),
        generated=_when(generated), shared_input=shared_input(runs), runs_table=runs_table(runs),
        notes=run_notes(runs), comparison=comparison(runs), plots=plots,
        tables_under=tables_under)
