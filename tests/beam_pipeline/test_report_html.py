"""``beam_pipeline.report_html``: the page never shows a database password and escapes the
database's text exactly once."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from beam_pipeline import report_data, report_html, report_plots


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
