"""`ndcl report`: plots and HTML from runs recorded in a temporary benchmark database, rendered
by headless Chromium when one is installed."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy.orm import Session

from beam_pipeline import db, report_data, report_html, report_plots
from beam_pipeline.cli import main

NOTE = '<script>alert("x")</script> & more'
PNGS = ("stages.png", "documents.png", "retention.png", "cluster_sizes.png", "s_curve.png",
        "resources.png")
INPUT = "data/demo/c4-demo.00000-of-00001.json.gz"


def _summary(workflow: str | None, kept: int, exact: int, near: int, wall: float,
             stages: dict[str, float], clustered: bool = True) -> dict[str, Any]:
    """The shape of a real summary.json (beam_pipeline/run.py), with made-up numbers."""
    summary: dict[str, Any] = {
        "read": kept + exact + near + 10, "kept": kept, "duplicates": exact + near,
        "duplicates_exact": exact, "duplicates_near": near, "rejected": 10,
        "rejected_by_reason": {"bad_json": 10}, "threshold": 0.7, "num_perm": 256,
        "ngram": 5, "bands": 32, "rows": 8, "stage_seconds": stages, "wall_seconds": wall,
        "config": {"dedup": {"threshold": 0.7, "num_perm": 256, "ngram": 5}},
        "config_hash": "10492abc94529e98",
    }
    if workflow is not None:
        summary["workflow"] = workflow
    if clustered:
        summary["cluster"] = {
            "k1": 4, "k2": 3, "backend": "local", "sample": kept,
            "level_1": {"k": 4, "n": kept},
            "level_2": {str(a): {"k": 3, "n": n} for a, n in enumerate((400, 200, 150, 50))},
        }
    return summary


TOP_TERMS = {"0": ["orbit", "rocket", "nasa"], "1": ["recipe", "oven", "<b>flour</b>"]}


def _clustered(summary: dict[str, Any]) -> dict[str, Any]:
    """``summary`` with the cluster section of today's runs: kept sizes, fits, top terms."""
    summary["cluster"] = {
        "k1": 2, "k2": 2, "backend": "local", "sample": 830,
        "level_1": {"k": 2, "top_terms": TOP_TERMS, "sizes": {
            "count": 2, "min": 330, "median": 415, "max": 500, "sizes": {"0": 330, "1": 500}}},
        "level_2": {"k": 2, "fits": {"0": {"k": 1, "top_terms": {"0": ["orbit"]}},
                                     "1": {"k": 2, "top_terms": {"0": ["oven"], "1": ["bake"]}}},
                    "sizes": {"count": 3, "min": 200, "median": 300, "max": 330,
                              "sizes": {"0/0": 330, "1/0": 300, "1/1": 200}}}}
    return summary


def _resources(seconds: float, peak_cpu: float) -> dict[str, Any]:
    samples = [{"t": 0.5 * i, "cpu_percent": peak_cpu * (0.5 + 0.5 * math.sin(i / 3)),
                "rss_bytes": (300 + 15 * i) << 20} for i in range(int(seconds * 2))]
    return {"cpu_percent_avg": peak_cpu / 2, "cpu_percent_peak": peak_cpu,
            "rss_bytes_avg": 500 << 20, "rss_bytes_peak": samples[-1]["rss_bytes"],
            "samples_json": json.dumps(samples)}


def _record(url: str, summary: dict[str, Any], command: str, argv: list[str],
            output: str | None, resources: dict[str, Any] | None = None,
            notes: str | None = None) -> int:
    result = db.record_run(url, summary, command=command, argv=argv, input_patterns=[INPUT],
                           output=output, runner="direct", workers=1, resources=resources,
                           input_bytes=12345, code_version="abc1234", notes=notes)
    assert result.recorded, result.error
    assert result.run_id is not None
    return result.run_id


def _write_kept(out: Path, kept: int) -> None:
    """OUT/kept with cluster labels for ``kept`` documents (sizes 400/200/150/rest)."""
    (out / "kept").mkdir(parents=True)
    a = np.repeat(np.arange(4), [400, 200, 150, kept - 750])
    b = np.arange(kept) % 3
    pq.write_table(pa.table({"id": [f"d{i}" for i in range(kept)], "cluster_A": a,
                             "cluster_B": b}), out / "kept" / "part-0.parquet")


@pytest.fixture
def recorded(tmp_path: Path) -> dict[str, Any]:
    """A database with an old and a new ND→CL run, a CL→ND, a dedup-only and a cluster-only."""
    url = f"sqlite:///{tmp_path / 'bench.db'}"
    nd_stages = {"read": 0.03, "compute_features": 0.3, "exact": 0.001, "lsh": 0.005,
                 "verify": 0.06, "components": 0.0, "resolve": 0.02, "embed": 0.2,
                 "cluster_fit": 12.0, "write_outputs": 0.05}
    cl_stages = {**nd_stages, "scope": 0.002, "cluster_fit": 9.0}
    out_nd = tmp_path / "out-nd"
    ids = {
        "old_nd": _record(url, _summary("nd_cl", 790, 120, 80, 40.0, nd_stages), "run",
                          ["run", "--workflow", "nd_cl"], str(tmp_path / "old")),
        "nd": _record(url, _summary("nd_cl", 800, 120, 70, 30.0, nd_stages), "run",
                      ["run", "--workflow", "nd_cl", "--output", str(out_nd)], str(out_nd),
                      _resources(30.0, 110.0), notes=NOTE),
        "cl": _record(url, _clustered(_summary("cl_nd", 830, 110, 50, 25.0, cl_stages)), "run",
                      ["run", "--workflow", "cl_nd", "--dedup-scope", "cluster_B"],
                      str(tmp_path / "out-cl"), _resources(25.0, 100.0)),
        "dedup": _record(url, _summary(None, 800, 120, 70, 3.0, {
            k: v for k, v in nd_stages.items() if k not in ("embed", "cluster_fit")},
            clustered=False), "dedup", ["dedup"], str(tmp_path / "out-dd")),
        "cluster": _record(url, _summary("cl", 990, 0, 0, 22.0, {
            "read": 0.03, "embed": 0.2, "cluster_fit": 15.0}), "cluster", ["cluster"], None,
            _resources(22.0, 130.0)),
    }
    _write_kept(out_nd, 800)
    (out_nd / "evaluation.json").write_text(json.dumps({"evaluations": [{
        "reference": "truth.json", "kind": "truth",
        "pair": {"recall": 0.97, "by_similarity": [
            {"lo": 0.7, "hi": 0.8, "pairs": 40, "found": 36},
            {"lo": 0.8, "hi": 0.9, "pairs": 30, "found": 30}]}}]}))
    engine = db.open_engine(url)
    with Session(engine) as session, session.begin():
        session.add_all([
            db.AccuracyMetric(run_id=ids["nd"], reference="data/demo/truth.json", level="pair",
                              tp=97, fp=0, fn=3, precision=1.0, recall=0.97, f1=0.985),
            db.AccuracyMetric(run_id=ids["cl"], reference=f"run:{ids['nd']}", level="pair",
                              tp=80, fp=0, fn=20, precision=1.0, recall=0.8, f1=0.889),
        ])
    engine.dispose()
    return {"url": url, "ids": ids, "tmp": tmp_path}


def _colours(path: Path) -> int:
    import matplotlib.image as mpimg

    # RGB(A) floats → one integer per pixel: np.unique over rows of a big array is slow.
    pixels = (mpimg.imread(str(path))[..., :3] * 255).round().astype(np.uint32)
    return len(np.unique(pixels[..., 0] << 16 | pixels[..., 1] << 8 | pixels[..., 2]))


def _report(recorded: dict[str, Any], *extra: str) -> Path:
    out = recorded["tmp"] / "report"
    assert main(["-q", "--db-url", recorded["url"], "report", "--output", str(out),
                 *extra]) == 0
    return out


def test_report_writes_plots_and_escaped_html(recorded: dict[str, Any],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = _report(recorded)
    ids = recorded["ids"]
    assert f"({ids['nd']}, {ids['cl']}, {ids['dedup']}, {ids['cluster']})" in (
        capsys.readouterr().out)  # default: the newest run of each kind, not the old nd_cl
    import matplotlib.image as mpimg

    for name in PNGS:
        image = mpimg.imread(str(out / name))
        assert image.shape[0] >= 300 and image.shape[1] >= 800, name
        assert _colours(out / name) > 50, f"{name} looks empty"
    page = (out / "index.html").read_text(encoding="utf-8")
    assert sorted(re.findall(r'<img src="([^"]+)"', page)) == sorted(PNGS)
    assert "<script" not in page and "alert(&#34;x&#34;)" in page  # autoescape's &#34;
    assert "&lt;script&gt;" in page and "&amp; more" in page
    # The ordering comparison, the CL→ND scope from its argv, the cluster sizes from
    # OUT/kept, and measured points: recall from the truth row only, bins from evaluation.json.
    assert "ND→CL vs CL→ND" in page and "30 fewer duplicates" in page
    assert "CL→ND (in cluster_B)" in page
    assert "Open circles" in page and "measured detection rate per bin" in page
    assert "run:" in page  # the run-against-run accuracy row is listed in the table
    assert f"#{ids['old_nd']} " not in page
    # The top terms of the clustered run that stored them: one table, largest cluster first.
    heading = f"<h3>Top terms per cluster_A, #{ids['cl']} CL→ND</h3>"
    assert page.count("<h3>Top terms per cluster_A") == 1 and heading in page
    table = page[page.index(heading):].split("</table>")[0]
    assert table.index("recipe, oven, &lt;b&gt;flour&lt;/b&gt;") < table.index(
        "orbit, rocket, nasa")
    assert "<b>flour" not in page


def test_every_chart_names_the_corpus(recorded: dict[str, Any],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    titles: dict[str, str] = {}
    save = report_plots._save

    def spy(fig: Any, out: Path, name: str, runs: Any) -> str:
        saved = save(fig, out, name, runs)
        titles[name] = fig.get_suptitle()
        return saved

    monkeypatch.setattr(report_plots, "_save", spy)
    _report(recorded)
    assert sorted(titles) == sorted(PNGS)
    assert set(titles.values()) == {"corpus: c4-demo.00000-of-00001.json.gz"}
    runs = report_data.load_runs(recorded["url"], [recorded["ids"]["nd"]])
    runs[0].input_pattern = "a/x.json gs://b/c/*.json.gz d/y.parquet e/z.json"
    assert report_data.corpus_name(runs) == "corpora: x.json, c/*.json.gz, y.parquet (+1 more)"
    runs[0].input_pattern = None
    assert report_data.corpus_name(runs) == "corpus: not recorded"


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


def test_report_selection_and_db_url_after_the_command(recorded: dict[str, Any],
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    ids = recorded["ids"]
    out = recorded["tmp"] / "one"
    assert main(["report", "--output", str(out), "--db-url", recorded["url"], "--runs",
                 str(ids["dedup"])]) == 0
    page = (out / "index.html").read_text(encoding="utf-8")
    # A dedup-only run without resources: no cluster or resource plot, and a note instead.
    assert "cluster_sizes.png" not in page and "No run among these clustered" in page
    assert "resources.png" not in page and not (out / "resources.png").exists()
    assert (out / "s_curve.png").exists() and "No evaluation against a truth file" in page
    assert main(["-q", "--db-url", recorded["url"], "report", "--output", str(out),
                 "--last", "2"]) == 0
    assert f"({ids['dedup']}, {ids['cluster']})" in capsys.readouterr().out
    assert main(["-q", "--db-url", recorded["url"], "report", "--output", str(out),
                 "--runs", "999"]) == 2
    assert "no run(s) 999" in capsys.readouterr().err


def test_select_ids_defaults_to_the_newest_of_each_kind() -> None:
    rows = [(6, "run", "nd_cl"), (5, "dedup", None), (4, "run", "cl_nd"), (3, "run", "nd_cl"),
            (2, "cluster", "cl"), (1, "dedup", None)]
    assert report_data.select_ids(rows, None, None) == [2, 4, 5, 6]
    assert report_data.select_ids(rows, None, 3) == [4, 5, 6]
    assert report_data.select_ids(rows, [3, 1, 3], None) == [1, 3]
    with pytest.raises(report_data.ReportError, match="no run"):
        report_data.select_ids(rows, [7], None)


def test_empty_or_missing_database_exits_2(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "none.db"
    out = tmp_path / "report"
    assert main(["--db-url", f"sqlite:///{missing}", "report", "--output", str(out)]) == 2
    assert "no benchmark database" in capsys.readouterr().err
    assert not missing.exists() and not out.exists()  # nothing created by looking
    empty = tmp_path / "empty.db"
    db.Base.metadata.create_all(db.open_engine(f"sqlite:///{empty}"))
    assert main(["--db-url", f"sqlite:///{empty}", "report", "--output", str(out)]) == 2
    assert "no runs recorded" in capsys.readouterr().err
    assert not (out / "index.html").exists()


def test_page_never_shows_a_database_password(recorded: dict[str, Any]) -> None:
    runs = report_data.load_runs(recorded["url"], [recorded["ids"]["dedup"]])
    page = report_html.render_html(runs, [], "postgresql+pg8000://ndcl:s3cret@db.example/bench",
                              datetime.now(timezone.utc))
    assert "s3cret" not in page and "ndcl:***@db.example" in page


def test_page_escapes_database_text_exactly_once() -> None:
    # The label comes from the recorded workflow: markup there is shown as text, escaped by
    # the template alone (an escape in Python as well would show "&amp;lt;b&amp;gt;").
    nasty = '<b>&"'
    run = report_data.RunData(
        id=7, created_at=None, command="run", workflow=nasty, runner="direct", workers=1,
        input_pattern=nasty, output=None, threshold=None, num_perm=None, bands=None,
        rows=None, k1=None, k2=None, read=None, kept=None, duplicates=None,
        duplicates_exact=None, duplicates_near=None, rejected=None, seconds=None,
        config_hash=None, notes=nasty)
    plot = report_plots.Plot(nasty, "s_curve.png", nasty)
    page = report_html.render_html([run], [plot], "sqlite:///x.db", datetime.now(timezone.utc))
    once = "&lt;b&gt;&amp;&#34;"
    assert "<b>" not in page and "&amp;lt;" not in page and "&amp;amp;" not in page
    # Workflow cell, shared input, note label and text, plot heading, alt and caption.
    assert page.count(once) == 7
    assert f'<img src="s_curve.png" alt="{once}">' in page


CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable",
                  "headless_shell")
# Sets data-images on <body> to "src:naturalWidth ..." once every image has loaded or failed.
PROBE = """<script>
window.addEventListener("load", () => {
  document.body.setAttribute("data-images", Array.from(document.images)
    .map(i => i.getAttribute("src") + ":" + (i.complete ? i.naturalWidth : -1)).join(" "));
});
</script>"""


def _chromium(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=120, check=False)


def test_report_renders_in_headless_chromium(recorded: dict[str, Any]) -> None:
    binary = next((found for name in CHROMIUM_NAMES if (found := shutil.which(name))), None)
    if binary is None:
        pytest.skip("no Chromium binary on PATH (apt-get install chromium); the render "
                    "check needs a browser")
    out = _report(recorded)
    tmp = recorded["tmp"]
    shot = tmp / "shot.png"
    done = _chromium(binary, tmp / "profile", f"--screenshot={shot}", "--window-size=1280,2000",
                     (out / "index.html").as_uri())
    assert shot.exists(), done.stderr[-2000:]
    import matplotlib.image as mpimg

    pixels = mpimg.imread(str(shot))[..., :3]
    assert pixels.shape[:2] == (2000, 1280)
    assert _colours(shot) > 200, "the screenshot is (nearly) blank"
    # Plots, not only text, made it onto the page: the first run colour (tab10 blue).
    blue = np.abs(pixels - np.array([0x1F, 0x77, 0xB4]) / 255).max(axis=-1) < 0.03
    assert blue.sum() > 500
    # Every <img> loaded: a copy of the page with a probe script, read back with --dump-dom.
    probe = out / "probe.html"
    probe.write_text((out / "index.html").read_text(encoding="utf-8").replace(
        "</body>", PROBE + "</body>"), encoding="utf-8")
    dumped = _chromium(binary, tmp / "profile", "--virtual-time-budget=10000", "--dump-dom",
                       probe.as_uri())
    match = re.search(r'data-images="([^"]*)"', dumped.stdout)
    assert match, dumped.stderr[-2000:]
    loaded = dict(item.rsplit(":", 1) for item in match.group(1).split())
    assert sorted(loaded) == sorted(PNGS)
    assert all(int(width) > 0 for width in loaded.values()), loaded
    # The top-terms table is on the rendered page, its terms as text.
    assert "Top terms per cluster_A" in dumped.stdout
    assert "recipe, oven, &lt;b&gt;flour&lt;/b&gt;" in dumped.stdout


def test_report_replaces_only_its_own_files(recorded: dict[str, Any],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """A file the report would overwrite but did not write (an index.html, a plot name) is
    refused untouched; other files are left alone; an earlier report is replaced."""
    theirs = recorded["tmp"] / "theirs"
    theirs.mkdir()
    (theirs / "index.html").write_text("<html>the user's page</html>")
    assert main(["-q", "--db-url", recorded["url"], "report", "--output", str(theirs)]) == 2
    assert "not written by ndcl report" in capsys.readouterr().err
    assert (theirs / "index.html").read_text() == "<html>the user's page</html>"
    (theirs / "index.html").unlink()
    (theirs / "stages.png").write_bytes(b"the user's picture")
    assert main(["-q", "--db-url", recorded["url"], "report", "--output", str(theirs)]) == 2
    assert "stages.png" in capsys.readouterr().err
    assert (theirs / "stages.png").read_bytes() == b"the user's picture"
    (theirs / "stages.png").unlink()
    (theirs / "notes.txt").write_text("mine")  # not a name the report writes: left alone
    assert main(["-q", "--db-url", recorded["url"], "report", "--output", str(theirs)]) == 0
    assert (theirs / "notes.txt").read_text() == "mine"
    out = _report(recorded)
    assert 'name="generator" content="ndcl report"' in (out / "index.html").read_text()
    _report(recorded)  # its own earlier report is replaced
