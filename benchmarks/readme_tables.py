"""The README's throughput tables, rendered from ``benchmarks/nd_throughput.py``'s JSON.

Issue 14 asks that the README's Performance tables be regenerated from the benchmark's output
file, not copied by hand. This script reads that file (default
``benchmarks/results-nd-throughput.json``) and renders two Markdown tables: every system on
every dataset, and issue 14's targets with their verdicts. In ``README.md`` they sit between
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
# The targets issue 14 set, as nd_throughput.py checks them (its "targets" in the JSON).
PASS, MISS = "✔", "✘"


def verdict(passed: bool, text: str) -> str:
    return f"**{text} {PASS}**" if passed else f"{text} {MISS}"


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


def targets_table(datasets: dict[str, Any], targets: dict[str, Any]) -> list[str]:
    """Issue 14's targets per dataset, each value with its verdict (– where it has none)."""
    ratios = targets["end_to_end_docs_per_s_ratio_min"]
    cpu_max = targets["cpu_s_ratio_max_vs_rensa"]
    per_cpu_min = targets["signature_docs_per_s_per_core_min"]
    rss_max = targets["peak_rss_gib_all_shards_max"]
    names = list(datasets)
    rows: list[tuple[str, dict[str, str]]] = []

    def cells(compute: Any) -> dict[str, str]:
        return {dataset: compute(result["summary"]) for dataset, result in datasets.items()}

    def speed(baseline: str, least: float) -> Any:
        def compute(summary: dict[str, Any]) -> str:
            if "ndcl" not in summary or baseline not in summary:
                return "–"
            value = summary["ndcl"]["docs_per_s"] / summary[baseline]["docs_per_s"]
            return verdict(value >= least, f"{value:.2f}×")
        return compute

    def cpu(summary: dict[str, Any]) -> str:
        if "ndcl" not in summary or "rensa" not in summary:
            return "–"
        value = summary["ndcl"]["cpu_s"] / summary["rensa"]["cpu_s"]
        return verdict(value <= cpu_max, f"{value:.2f}×")

    def per_cpu(summary: dict[str, Any]) -> str:
        if "ndcl" not in summary:
            return "–"
        value = summary["ndcl"]["signature_docs_per_s_per_core"]
        return verdict(value >= per_cpu_min, f"{value / 1000:.1f}k")

    for baseline in ("datasketch", "rensa"):
        rows.append((f"end-to-end docs/s ≥ {ratios[baseline]:g}× {baseline}",
                     cells(speed(baseline, ratios[baseline]))))
    rows.append((f"CPU seconds ≤ {cpu_max:g}× rensa's", cells(cpu)))
    rows.append((f"`ComputeFeatures` ≥ {per_cpu_min / 1000:g}k docs/s per CPU second",
                 cells(per_cpu)))
    rows.append((f"peak RSS ≤ {rss_max:g} GiB on all four shards", {
        dataset: (verdict(result["summary"]["ndcl"]["peak_rss_gib"] <= rss_max,
                           f"{result['summary']['ndcl']['peak_rss_gib']:.2f} GiB")
                  if dataset == "all" and "ndcl" in result["summary"] else "–")
        for dataset, result in datasets.items()}))
    header = "| target (issue 14) | " + " | ".join(DATASET_NAMES.get(n, n) for n in names) + " |"
    lines = [header, "|---|" + "---|" * len(names)]
    lines += [f"| {label} | " + " | ".join(values[n] for n in names) + " |"
              for label, values in rows]
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
                      *targets_table(results["datasets"], config["targets"])])


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
