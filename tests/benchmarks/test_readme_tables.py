"""The README's throughput tables and ``benchmarks/readme_tables.py``, which renders them from
``benchmarks/nd_throughput.py``'s JSON (issue 14: regenerated from the output file)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import readme_tables
from benchmarks.nd_throughput import compare
from benchmarks.readme_tables import BEGIN, END, render, replace_block

TARGETS = {"end_to_end_docs_per_s_ratio_min": {"datasketch": 3.0, "rensa": 1.5},
           "cpu_s_ratio_max_vs_rensa": 1.0, "signature_docs_per_s_per_core_min": 50_000,
           "peak_rss_gib_all_shards_max": 3.0}


def _summary(wall: float, cpu: float, per_core: float, rss: float, found: int | list[int],
             docs: int = 1000) -> dict:
    return {"docs": docs, "wall_s": wall, "docs_per_s": docs / wall, "cpu_s": cpu,
            "signature_docs_per_s_per_core": per_core, "peak_rss_gib": rss,
            "duplicates": found}


def _results(without: tuple[str, str] | None = None) -> dict:
    """Two datasets' summaries and nd_throughput.py's comparisons of them; ``without``:
    ``(dataset, system)`` left out, as when all its runs failed."""
    one = {"datasketch": _summary(10.0, 10.0, 2000, 0.5, 30),
           "rensa": _summary(3.0, 3.0, 9000, 0.3, 31),
           "ndcl": _summary(2.5, 2.0, 49_999, 0.25, [29, 30])}
    all_four = {"datasketch": _summary(40.0, 40.0, 2000, 2.0, 120, docs=4000),
                "rensa": _summary(12.0, 12.0, 9000, 1.0, 125, docs=4000),
                "ndcl": _summary(6.0, 8.0, 52_000, 3.5, 118, docs=4000)}
    summaries = {"one": one, "all": all_four}
    if without is not None:
        del summaries[without[0]][without[1]]
    datasets = {
        name: {"summary": summary,
               "comparison": compare(name, summary["ndcl"],
                                     {k: v for k, v in summary.items() if k != "ndcl"})}
        for name, summary in summaries.items()}
    return {"config": {"cpu_count": 2, "repeats": 3, "commit": "abc1234",
                       "started": "2026-12-05 19:00 UTC", "targets": TARGETS},
            "datasets": datasets, "failures": []}


def test_render_gives_each_figure_and_its_verdict() -> None:
    text = render(_results())
    assert "2026-12-05 19:00 UTC, commit abc1234, 2 CPUs, medians of 3 runs" in text
    assert ("| one shard | **NDCL** | **2.5** | **400** | 2.0 | 49,999 | 0.25 "
            "| 29..30 (exact-verified) |") in text
    assert "| all four | rensa | 12.0 | 333 | 12.0 | 9,000 | 1.00 | 125 (unverified) |" in text
    # 400 / 100 docs/s = 4x datasketch; 400 / 333 = 1.2x rensa, under its 1.5x.
    assert "| end-to-end docs/s ≥ 3× datasketch | **4.00× ✔** | **6.67× ✔** |" in text
    assert "| end-to-end docs/s ≥ 1.5× rensa | 1.20× ✘ | **2.00× ✔** |" in text
    assert "| CPU seconds ≤ 1× rensa's | **0.67× ✔** | **0.67× ✔** |" in text
    assert "| `ComputeFeatures` ≥ 50k docs/s per CPU second | 50.0k ✘ | **52.0k ✔** |" in text
    assert "| peak RSS ≤ 3 GiB on all four shards | – | 3.50 GiB ✘ |" in text


def test_a_failed_run_is_said_and_a_missing_system_gives_no_ratio() -> None:
    results = _results(without=("one", "rensa"))
    results["failures"] = ["[one] rensa: exit status 1"]
    text = render(results)
    assert "Failed runs: [one] rensa: exit status 1." in text
    assert "| end-to-end docs/s ≥ 1.5× rensa | – | **2.00× ✔** |" in text


def test_replace_block_keeps_everything_outside_the_markers() -> None:
    readme = f"head\n{BEGIN}\nold table\n{END}\ntail\n"
    assert replace_block(readme, "new") == f"head\n{BEGIN}\nnew\n{END}\ntail\n"
    with pytest.raises(ValueError, match="marker lines"):
        replace_block("no markers here", "new")
    with pytest.raises(ValueError, match="marker lines"):
        replace_block(f"{END}\n{BEGIN}\n", "new")


def test_check_and_write(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results, readme = tmp_path / "results.json", tmp_path / "README.md"
    results.write_text(json.dumps(_results()))
    readme.write_text(f"# Title\n{BEGIN}\nstale\n{END}\n")
    paths = ["--json", str(results), "--readme", str(readme)]
    assert readme_tables.main([*paths, "--check"]) == 1
    assert "differ" in capsys.readouterr().err
    assert readme_tables.main([*paths, "--write"]) == 0
    assert readme_tables.main([*paths, "--check"]) == 0
    assert readme.read_text().startswith(f"# Title\n{BEGIN}\nFrom `benchmarks/")
    assert readme_tables.main(["--json", str(tmp_path / "absent.json"), "--check"]) == 2


def test_the_readme_holds_the_tables_of_the_results_file() -> None:
    """The committed README's tables are those the committed results render: a new benchmark
    run needs ``benchmarks/readme_tables.py --write``, and a hand edit fails here."""
    assert readme_tables.main(["--check"]) == 0
