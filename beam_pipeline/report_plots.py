"""The PNG plots of ``ndcl report``, one function per figure, each returning a ``Plot``.

Figures are drawn on matplotlib's Agg canvas without pyplot (no global state, no display), and
saved beside ``index.html`` under the names in ``PLOT_FILES``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from beam_pipeline.report_data import (
    RunData,
    corpus_name,
    evaluation_bins,
    is_truth_reference,
    kept_cluster_sizes,
    recorded_document_sizes,
    recorded_sample_sizes,
)

# Pipeline order of the stage counters (transforms/*: stage_counter), so that stacked bars and
# legends read in the order the work happens; unknown stages follow alphabetically.
STAGE_ORDER = ("read", "compute_features", "exact", "lsh", "verify", "components", "resolve",
               "embed", "cluster_fit", "scope", "write_outputs")
UNATTRIBUTED = "not in a stage"
# The run's named time parts outside the stages (beam_pipeline.timeline, recorded in
# parentheses): drawn in the whole-run bar, before and after the stages, not as stages.
PARTS_BEFORE = ("(start up)", "(prepare)", "(build graph)")
PARTS_AFTER = ("(runner overhead)", "(summarise)")
# Every file a report may write besides index.html: cleared before drawing, so that a plot
# with nothing to show leaves no PNG of an earlier report behind.
PLOT_FILES = ("stages.png", "documents.png", "retention.png", "cluster_sizes.png",
              "s_curve.png", "resources.png")
DPI = 110
WIDTH_IN = 10.0
# Measured S-curve points: one shape per run sharing a curve; bins with fewer truth pairs are
# drawn hollow (a rate of 2 out of 3 says little).
BIN_MARKERS = ("s", "^", "D", "v", "P", "X")
FEW_PAIRS = 5
# Runs per row of the resources chart's small multiples.
RESOURCE_COLUMNS = 4


@dataclass
class Plot:
    """One figure of the page: its file (None when there was nothing to draw) and caption."""

    title: str
    filename: str | None
    caption: str


def _figure(height: float, ncols: int = 1, **kw: Any) -> tuple[Any, Any]:
    # Figure without pyplot: Agg canvas, no global state, no display needed.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(WIDTH_IN, height), dpi=DPI, layout="constrained")
    axes = fig.subplots(1, ncols, **kw)
    return fig, axes


def run_palette() -> list[Any]:
    """20 distinct run colours: tab20's saturated half (tab10's colours, in its order), then
    its light half, so that up to 10 runs never get two shades of one hue."""
    from matplotlib import colormaps

    tab20 = colormaps["tab20"].colors
    return [*tab20[0::2], *tab20[1::2]]


def _colors(runs: Sequence[RunData]) -> dict[int, Any]:
    palette = run_palette()
    return {r.id: palette[i % len(palette)] for i, r in enumerate(runs)}


def _save(fig: Any, out: Path, name: str, runs: Sequence[RunData]) -> str:
    """Save ``fig``, naming the corpus of the ``runs`` it shows at its top."""
    fig.suptitle(corpus_name(runs), fontsize=9, color="0.3")
    fig.savefig(out / name, dpi=DPI)
    return name


def _bar_height(runs: Sequence[RunData]) -> float:
    return 1.4 + 0.42 * len(runs)


def _ordered_stages(runs: Sequence[RunData]) -> list[str]:
    seen = {s for r in runs for s in r.stages if not s.startswith("(")}
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
    greys = {"(start up)": "0.35", "(prepare)": "0.5", "(build graph)": "0.65",
             "(runner overhead)": "0.8", "(summarise)": "0.9"}
    top = 0.9 + 0.42 * len(timed)
    fig = Figure(figsize=(WIDTH_IN, top + 4.2), dpi=DPI, layout="constrained")
    ax_stack, ax_group = fig.subplots(2, 1, height_ratios=[top, 4.2])
    y = np.arange(len(timed))
    left = np.zeros(len(timed))
    for stage in [*PARTS_BEFORE, *stages, *PARTS_AFTER, UNATTRIBUTED]:
        if stage == UNATTRIBUTED:
            # Wall time neither the stage counters nor the recorded parts cover (runs
            # recorded before the parts were: start-up, the K-Means service, shuffles).
            values = np.array([max(0.0, (r.seconds or 0.0) - sum(r.stages.values()))
                               for r in timed])
            style = {"color": "white", "edgecolor": "0.55", "hatch": "///"}
        elif stage.startswith("("):
            values = np.array([r.stages.get(stage, 0.0) for r in timed])
            style = {"color": greys[stage], "edgecolor": "white"}
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
    ax_stack.set_title("whole run: start-up parts (grey), stages, the runner's overhead",
                       fontsize=10)
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
               "bundles and workers, from StageTiming). Top: one bar per run: the process's "
               "start-up, preparation (inputs, output, the K-Means service) and graph "
               "construction in grey, the stages, then the runner's overhead (worker start, "
               "data transfer, scheduling) and the summary; hatched, what older runs did not "
               "break down. Bottom: each stage for each run; no bar means the run has no such "
               "stage.")
    return Plot(title, _save(fig, out, "stages.png", timed), caption)


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
    return Plot(title, _save(fig, out, "documents.png", counted), caption)


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
    return Plot(title, _save(fig, out, "retention.png", counted), caption)


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
    return Plot(title, _save(fig, out, "cluster_sizes.png", [run for run, *_ in series]),
                caption)


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
    return Plot(title, _save(fig, out, "s_curve.png", banded), caption)


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
    """Small multiples: one CPU and one RSS panel per run (a row of CPU panels, then one of
    RSS panels, wrapped every ``RESOURCE_COLUMNS`` runs), the axes shared within a metric, so
    that many runs stay readable and comparable."""
    title = "Resource use over time"
    shown = [r for r in runs if len(r.samples) >= 2 or (
        r.resources and r.resources.get("cpu_percent_peak") is not None)]
    if not shown:
        return Plot(title, None, "No run among these recorded resource samples.")
    colors = _colors(runs)
    peak_rss = max([s.get("rss_bytes", 0) or 0 for r in shown for s in r.samples]
                   + [(r.resources or {}).get("rss_bytes_peak") or 0 for r in shown])
    unit, scale = ("GiB", 2**30) if peak_rss >= 2**30 else ("MiB", 2**20)
    from matplotlib.figure import Figure

    ncols = min(RESOURCE_COLUMNS, len(shown))
    nrows = -(-len(shown) // ncols)
    fig = Figure(figsize=(WIDTH_IN, 0.6 + 2.0 * 2 * nrows), dpi=DPI, layout="constrained")
    cpu_fig, rss_fig = fig.subfigures(2, 1)
    metrics = (
        (cpu_fig, "CPU % (process tree; 100 % = one core)", "cpu_percent",
         "cpu_percent_avg", "cpu_percent_peak", 1.0),
        (rss_fig, f"resident memory, {unit} (process tree)", "rss_bytes",
         "rss_bytes_avg", "rss_bytes_peak", scale))
    summary_only = [r for r in shown if len(r.samples) < 2]
    for sub, heading, key, avg_key, peak_key, div in metrics:
        axes = np.atleast_1d(sub.subplots(nrows, ncols, sharex=True, sharey=True,
                                          squeeze=False)).ravel()
        sub.suptitle(heading, fontsize=10)
        top = 0.0
        for ax, run in zip(axes, shown):
            color = colors[run.id]
            if len(run.samples) >= 2:
                t = [float(s.get("t", 0.0)) for s in run.samples]
                values = [float(s.get(key, 0.0) or 0.0) / div for s in run.samples]
                ax.plot(t, values, color=color, linewidth=1.2)
            else:  # no time series (older records): average and peak over the run
                res = run.resources or {}
                values = []
                for value, style in ((res.get(avg_key), "--"), (res.get(peak_key), ":")):
                    if value is not None:
                        values.append(value / div)
                        ax.hlines(value / div, 0, run.seconds or 1.0, colors=color,
                                  linestyles=style)
            top = max([top, *values])
            ax.set_title(run.label, fontsize=8, color=color)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
        # Shared axes: one range for the metric, from 0 to its highest value in any panel.
        axes[0].set_ylim(0, top * 1.05 if top > 0 else 1.0)
        for ax in axes[len(shown):]:
            ax.set_visible(False)
        sub.supxlabel("seconds since start", fontsize=8)
    caption = ("CPU % and RSS of the ndcl process and its children, sampled every 0.5 s "
               "while the run lasted (ResourceMetric.samples_json): one small panel per run "
               "and metric, the axes shared within a metric.")
    if summary_only:
        caption += (" Runs without samples show their stored average (dashed) and peak "
                    "(dotted): " + ", ".join(r.label for r in summary_only) + ".")
    return Plot(title, _save(fig, out, "resources.png", shown), caption)
