"""The README's throughput tables, rendered from ``benchmarks/nd_throughput.py``'s JSON.

Issue 14 asks that the README's Performance tables be regenerated from the benchmark's output
file, not copied by hand. This script reads that file (default
``benchmarks/results-nd-throughput.json``) and renders two Markdown tables: every system on
every dataset, and issue 14's targets with the values and verdicts nd_throughput.py gave them
(its ``comparison`` rows; nothing is judged again here). In ``README.md`` they sit between
the two marker lines below; ``--write`` replaces what is between them, ``--check`` exits 1
with one line when it differs (a test runs the check), and with neither it prints them.

    .venv/bin/python benchmarks/nd_throughput.py --repeats 3 \\
        --json benchmarks/results-nd-throughput.json --txt benchmarks/results-nd-throughput.txt
    .venv/bin/python benchmarks/readme_tables.py --write
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results-nd-throughput.json"
README = REPO / "README.md"
BEGIN = "<!-- begin: tables rendered by benchmarks/readme_tables.py; do not edit by hand -->"
END = "<!-- end: tables rendered by benchmarks/readme_tables.py -->"

DATASET_NAMES = {"one": "one shard", "all": "all four"}
SYSTEM_NAMES = {"datasketch": "datasketch", "rensa": "rensa", "ndcl": "**NDCL**"}
PASS, MISS = "✔", "✘"


def results_table(datasets: dict[str, Any]) -> list[str]:
    """One row per system and dataset: medians, the largest peak RSS, duplicates found."""
    lines = ["| dataset | system | wall s | docs/s | CPU s | signature docs/s per core "
             "| peak RSS GiB | duplicates |",
             "|---|---|---|---|---|---|---|---|"]
    for dataset, result in datasets.items():
        for system, row in result["summary"].items():
            name = SYSTEM_NAMES.get(system, system)
            found = row["duplicates"]
            found = (f"{found[0]:,}..{found[-1]:,}" if isinstance(found, list)
                     else f"{found:,}")
            found += " (exact-verified)" if system == "ndcl" else " (unverified)"
            wall, rate = f"{row['wall_s']:.1f}", f"{row['docs_per_s']:,.0f}"
            if system == "ndcl":
                wall, rate = f"**{wall}**", f"**{rate}**"
            lines.append(
                f"| {DATASET_NAMES.get(dataset, dataset)} | {name} | {wall} | {rate} "
                f"| {row['cpu_s']:.1f} | {row['signature_docs_per_s_per_core']:,.0f} "
                f"| {row['peak_rss_gib']:.2f} | {found} |")
    return lines


def _label(row: dict[str, Any]) -> str:
    """The target's words, from one of nd_throughput.py's comparison rows."""
    metric, target = row["metric"], row["target"]
    if metric == "NDCL signature docs/s per core":
        return f"`ComputeFeatures` ≥ {target / 1000:g}k docs/s per CPU second"
    if metric == "NDCL peak RSS GiB":
        return f"peak RSS ≤ {target:g} GiB on all four shards"
    what, _, baseline = metric.partition(" vs ")
    if row["kind"] == "ratio_max":
        return f"{what} ≤ {target:g}× {baseline}'s"
    return f"{what} ≥ {target:g}× {baseline}"


def _value(row: dict[str, Any]) -> str:
    if row["value"] is None:
        return "–"
    value = row["value"]
    text = (f"{value:.2f} GiB" if row["kind"] == "max" else
            f"{value / 1000:.1f}k" if row["kind"] == "min" else f"{value:.2f}×")
    return f"**{text} {PASS}**" if row["verdict"] == "PASS" else f"{text} {MISS}"


def targets_table(datasets: dict[str, Any]) -> list[str]:
    """Issue 14's targets per dataset: nd_throughput.py's own comparison rows (values and
    verdicts) that have a target, – where a dataset has none."""
    names = list(datasets)
    cells: dict[str, dict[str, str]] = {}
    for dataset, result in datasets.items():
        for row in result.get("comparison", []):
            if row["target"] is not None:
                cells.setdefault(_label(row), {})[dataset] = _value(row)
    header = "| target (issue 14) | " + " | ".join(DATASET_NAMES.get(n, n) for n in names) + " |"
    lines = [header, "|---|" + "---|" * len(names)]
    lines += [f"| {label} | " + " | ".join(values.get(n, "–") for n in names) + " |"
              for label, values in cells.items()]
    return lines


def render(results: dict[str, Any]) -> str:
    """The Markdown between the README's markers, from nd_throughput.py's JSON."""
    config = results["config"]
    lead = (f"From `benchmarks/results-nd-throughput.json`: "
            f"{config.get('started', 'time not recorded')}, commit "
            f"{config.get('commit', 'not recorded')}, {config['cpu_count']} CPUs, medians of "
            f"{config['repeats']} runs per system (peak RSS: the largest).")
    if results.get("failures"):
        lead += " Failed runs: " + "; ".join(results["failures"]) + "."
    return "\n".join([lead, "", *results_table(results["datasets"]), "",
                      *targets_table(results["datasets"])])


def replace_block(readme: str, block: str) -> str:
    """``readme`` with what lies between BEGIN and END replaced by ``block``."""
    if readme.count(BEGIN) != 1 or readme.count(END) != 1 or (
            readme.index(BEGIN) > readme.index(END)):
        raise ValueError(f"the README must hold the marker lines once each, in order:\n{BEGIN}"
                         f"\n{END}")
    head, rest = readme.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{block}\n{END}{tail}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, default=RESULTS, help="nd_throughput.py's JSON")
    parser.add_argument("--readme", type=Path, default=README)
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--write", action="store_true", help="replace the README's tables")
    action.add_argument("--check", action="store_true",
                        help="exit 1 when the README's tables differ from the JSON's")
    args = parser.parse_args(argv)
    try:
        block = render(json.loads(args.json.read_text()))
        readme = args.readme.read_text() if args.write or args.check else ""
        updated = replace_block(readme, block) if args.write or args.check else ""
    except (OSError, ValueError, KeyError) as error:
        print(f"readme_tables: {type(error).__name__}: {error}", file=sys.stderr)
        return 2
    if args.check:
        if updated != readme:
            print(f"readme_tables: {args.readme}'s tables differ from {args.json}; run "
                  f"benchmarks/readme_tables.py --write", file=sys.stderr)
            return 1
        return 0
    if args.write:
        args.readme.write_text(updated)
        return 0
    print(block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
