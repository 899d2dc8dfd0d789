"""``beam_pipeline.report_plots``: colours and small multiples, the S-curve's measured bins,
and the cluster sizes and quality stored in the database."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from beam_pipeline import report_data, report_html, report_plots
from tests.beam_pipeline.conftest import INPUT, _record, _resources, _summary


def _run(run_id: int, seconds: float = 20.0) -> report_data.RunData:
    samples = json.loads(_resources(seconds, 50.0 + run_id)["samples_json"])
    return report_data.RunData(
        id=run_id, created_at=None, command="dedup", workflow=None, runner="direct",
        workers=1, input_pattern=INPUT, output=None, threshold=0.7, num_perm=256, bands=32,
        rows=8, k1=None, k2=None, read=100, kept=90, duplicates=10, duplicates_exact=5,
        duplicates_near=5, rejected=0, seconds=seconds, config_hash=None, notes=None,
        stages={"read": 1.0}, samples=samples)


def test_twenty_runs_get_twenty_colours_and_resources_small_multiples(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runs = [_run(i) for i in range(1, 21)]
    colours = report_plots._colors(runs)
    assert len(set(colours.values())) == 20
    assert colours[1] == pytest.approx((0x1F / 255, 0x77 / 255, 0xB4 / 255))  # tab10 blue
    figures: list[Any] = []
    save = report_plots._save
    monkeypatch.setattr(report_plots, "_save",
                        lambda fig, out, name, shown: figures.append(fig) or save(
                            fig, out, name, shown))
    plot = report_plots.plot_resources(runs, tmp_path)
    assert plot.filename == "resources.png" and "one small panel per run" in plot.caption
    shown = [ax for ax in figures[0].get_axes() if ax.get_visible()]
    # One CPU and one RSS panel per run, each titled with its run in the run's colour.
    assert len(shown) == 40
    assert sorted(ax.get_title() for ax in shown) == sorted(
        [r.label for r in runs] * 2)
    for ax in shown:
        run = next(r for r in runs if r.label == ax.get_title())
        assert ax.title.get_color() == colours[run.id]
        assert [tuple(line.get_color()) for line in ax.get_lines()] == [colours[run.id]]
        # Axes shared within a metric: no panel's line is cut off at the top.
        assert ax.get_ylim()[0] == 0 and ax.get_ylim()[1] >= max(ax.get_lines()[0].get_ydata())
    import matplotlib.image as mpimg

    height, width = mpimg.imread(str(tmp_path / "resources.png")).shape[:2]
    assert width >= 1000 and height >= 1500  # 5 rows of 4 panels per metric, still legible


def test_s_curve_draws_measured_bins(recorded: dict[str, Any],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from matplotlib.collections import PathCollection

    out_nd = recorded["tmp"] / "out-nd"
    # What `ndcl evaluate --truth` writes; an agreement with another run is not detection.
    (out_nd / "evaluation.json").write_text(json.dumps({"evaluations": [
        {"reference": "output:/x", "kind": "run",
         "by_similarity": [{"lo": 0.5, "hi": 0.55, "pairs": 9, "detected": 9, "rate": 1.0}]},
        {"reference": "truth.json", "kind": "truth", "by_similarity": [
            {"lo": 0.5, "hi": 0.55, "pairs": 40, "detected": 2, "rate": 0.05},
            {"lo": 0.55, "hi": 0.6, "pairs": 0, "detected": 0, "rate": None},
            {"lo": 0.6, "hi": 0.65, "pairs": 3, "detected": 1, "rate": 1 / 3},
            {"lo": 0.95, "hi": 1.0, "pairs": 250, "detected": 250, "rate": 1.0}]}]}))
    runs = report_data.load_runs(recorded["url"], [recorded["ids"]["nd"]])
    assert report_data.evaluation_bins(runs[0]) == [
        (pytest.approx(0.525), 0.05, 40), (pytest.approx(0.625), pytest.approx(1 / 3), 3),
        (pytest.approx(0.975), 1.0, 250)]  # the empty bin has no rate and is left out
    figures: list[Any] = []
    monkeypatch.setattr(report_plots, "_save",
                        lambda fig, out, name, runs: figures.append(fig) or name)
    plot = report_plots.plot_s_curve(runs, recorded["tmp"])
    ax = figures[0].axes[0]
    points = [c for c in ax.collections
              if isinstance(c, PathCollection) and len(c.get_offsets())]
    assert len(points) == 2
    filled, hollow = points
    assert np.allclose(filled.get_offsets(), [[0.525, 0.05], [0.975, 1.0]])
    assert filled.get_sizes()[1] > filled.get_sizes()[0]  # 250 pairs outweigh 40
    # Fewer than 5 pairs: hollow (white inside, the run's colour around).
    assert np.allclose(hollow.get_offsets(), [[0.625, 1 / 3]])
    assert hollow.get_facecolors()[0].tolist() == [1.0, 1.0, 1.0, 1.0]
    # The pair counts label a top axis at the bin centres.
    top = ax.child_axes[0]
    assert [t.get_text() for t in top.get_xticklabels()] == ["40", "3", "250"]
    assert ax.get_xlim()[0] <= 0.5
    assert "hollow when fewer than 5" in plot.caption and "--verify none" in plot.caption


def test_cluster_sizes_and_quality_come_from_the_database(
        recorded: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    # A run recorded with the measured sizes and quality, its output no longer on disk.
    summary = _summary("cl", 990, 0, 0, 22.0, {"read": 0.03, "cluster_fit": 15.0})
    sizes_b = {"0/0": 500, "0/1": 100, "1/0": 250, "1/1": 90, "1/2": 50}
    summary["cluster"] = {
        "k1": 2, "k2": 3, "backend": "local", "sample": 990, "label_field": "label",
        "labelled_docs": 800,
        "level_1": {"k": 2, "nmi": 0.4731, "ari": 0.3812, "silhouette": 0.0366,
                    "labelled_docs": 800, "sizes": {"count": 2, "min": 390, "median": 495,
                                                    "max": 600,
                                                    "sizes": {"0": 600, "1": 390}}},
        "level_2": {"k": 3, "fits": {}, "nmi": 0.5076, "ari": 0.1972, "silhouette": 0.0514,
                    "labelled_docs": 800, "sizes": {"count": 5, "min": 50, "median": 100,
                                                    "max": 500, "sizes": sizes_b}}}
    run_id = _record(recorded["url"], summary, "cluster", ["cluster"],
                     str(recorded["tmp"] / "gone"))
    (run,) = report_data.load_runs(recorded["url"], [run_id])
    assert report_data.recorded_document_sizes(run) == ([600, 390], [500, 250, 100, 90, 50])
    figures: list[Any] = []
    monkeypatch.setattr(report_plots, "_save",
                        lambda fig, out, name, runs: figures.append(fig) or name)
    plot = report_plots.plot_cluster_sizes([run], recorded["tmp"])
    ax_a, ax_b = figures[0].axes
    assert [line.get_ydata().tolist() for line in ax_a.get_lines()] == [[600, 390]]
    assert [line.get_ydata().tolist() for line in ax_b.get_lines()] == [
        [500, 250, 100, 90, 50]]
    assert "(kept documents)" in ax_a.get_legend().get_texts()[0].get_text()
    assert "stored in ClusterMetric" in plot.caption
    table = report_html.cluster_quality_table([run])
    assert table is not None
    cells = {cell for row in table.rows for cell in row}
    for text in ("0.473", "0.381", "0.037", "0.508", "0.197", "0.051", "990", "800"):
        assert text in cells
    # Runs recorded before: the sample sizes of the old rows, as before.
    (old,) = report_data.load_runs(recorded["url"], [recorded["ids"]["cluster"]])
    assert report_data.recorded_document_sizes(old) is None
    assert report_data.recorded_sample_sizes(old) == [400, 200, 150, 50]
