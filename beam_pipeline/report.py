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
  the samples ``ResourceSampler`` stores in ``ResourceMetric.samples_json``: small multiples,
  one panel per run and metric.

Every chart names the corpus of its runs at its top (``report_data.corpus_name``); runs get
up to 20 distinct colours (``report_plots.run_palette``).

Then a table of the runs, the accuracy and cluster-quality rows (NMI/ARI against the input
labels, silhouette on the fitted sample) when present, the top terms of each ``cluster_A`` per
clustered run that stored them, and the ND→CL vs
CL→ND comparison in words when both orderings are among the runs. Runs: ``--runs``, or the
``--last N``, or by default the latest run of each kind (``run --workflow nd_cl``, ``run
--workflow cl_nd``, ``dedup``, ``cluster``). With no run to show (empty or missing database,
unknown ids) nothing is written and the exit status is 2. Every text shown is HTML-escaped (by
the template's autoescape) and the database URL is shown with its password hidden.

This module is the command: it selects the runs and writes the folder. What it shows comes from
``report_data`` (the database and run outputs), ``report_plots`` (the PNGs) and
``report_html`` (the page, from ``templates/report.html.j2``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from beam_pipeline.report_data import ReportError, RunData, load_runs
from beam_pipeline.report_html import PAGE_MARKERS, render_html
from beam_pipeline.report_plots import (
    PLOT_FILES,
    plot_cluster_sizes,
    plot_documents,
    plot_resources,
    plot_retention,
    plot_s_curve,
    plot_stages,
)


def write_report(runs: Sequence[RunData], output: str | Path, db_url: str) -> Path:
    """Draw the plots and write ``output/index.html``; returns its path."""
    if not runs:
        raise ReportError("no runs to report")
    from beam_pipeline.outputs import OutputError, check_report_folder

    try:
        check_report_folder(str(output), PLOT_FILES, PAGE_MARKERS)
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
