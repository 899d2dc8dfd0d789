"""`ndcl report` (``beam_pipeline.report``): plots and HTML from runs recorded in a temporary
benchmark database, rendered by headless Chromium when one is installed."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from beam_pipeline import db, report_data, report_plots
from beam_pipeline.cli import main

PNGS = ("stages.png", "documents.png", "retention.png", "cluster_sizes.png", "s_curve.png",
        "resources.png")


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
