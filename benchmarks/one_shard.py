"""``ndcl dedup`` on one blog shard: this tree against another checkout, in one run.

The bounded-memory rework (issue 11) reads the input more than once; its target is that the
end-to-end docs/s on one blog shard stays within 10% of the code before it. This script runs
``ndcl dedup`` on ``../shared/data/blogs/blogs.00000.json.gz`` alternately with the code of
``--baseline`` (a checkout, e.g. ``git worktree add /tmp/ndcl-before 3b459c6``) and of this
repository, ``--repeats`` times each, and prints the median wall time, docs/s, CPU seconds and
peak RSS (``benchmarks._measure``) of each with the ratio current / baseline. The code measured
is chosen by the working directory of ``python -m beam_pipeline.cli`` (the tree's own packages
come first on ``sys.path``).

    .venv/bin/python benchmarks/one_shard.py --baseline /tmp/ndcl-before [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._measure import run_measured  # noqa: E402

SHARD = REPO.parent / "shared" / "data" / "blogs" / "blogs.00000.json.gz"


# The tree's packages first on sys.path, whatever this process's working directory is.
LAUNCH = ("import os, sys; tree = sys.argv.pop(1); os.chdir(tree); sys.path.insert(0, tree); "
          "from beam_pipeline.cli import main; sys.exit(main(sys.argv[1:]))")


def run(tree: Path, scratch: Path, index: int) -> dict[str, float]:
    out = scratch / f"out-{tree.name}-{index}"
    command = [sys.executable, "-c", LAUNCH, str(tree), "-q", "--db-url",
               f"sqlite:///{scratch / 'runs.db'}", "dedup", "--input", str(SHARD), "--output",
               str(out)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = run_measured(command)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result["returncode"] != 0:
        raise RuntimeError(f"{tree}: ndcl exited {result['returncode']}: "
                           f"{result['stderr_tail'][-2000:]}")
    read = json.loads((out / "summary.json").read_text())["read"]
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall": result["wall_s"], "cpu": cpu, "rss": result["peak_rss_bytes"] / 2**30,
            "docs_per_s": read / result["wall_s"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", type=Path, required=True, help="the other checkout")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" /
                        "results-one-shard.txt")
    args = parser.parse_args(argv)
    if not SHARD.is_file():
        print(f"skipped: {SHARD} is absent")
        return 0
    runs: dict[str, list[dict[str, float]]] = {"baseline": [], "current": []}
    with tempfile.TemporaryDirectory(prefix="ndcl-one-shard-") as tmp:
        for i in range(args.repeats):
            for name, tree in (("baseline", args.baseline.resolve()), ("current", REPO)):
                runs[name].append(run(tree, Path(tmp), i))
                print(f"{name} run {i + 1}: {runs[name][-1]}", flush=True)
    medians = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
               for name, rs in runs.items()}
    lines = [f"ndcl dedup on {SHARD.name}, {args.repeats} alternating runs each, medians",
             f"baseline: {args.baseline}", "",
             f"{'code':<9} {'wall s':>7} {'docs/s':>7} {'CPU s':>6} {'peak GiB':>9}"]
    for name, m in medians.items():
        lines.append(f"{name:<9} {m['wall']:7.2f} {m['docs_per_s']:7,.0f} {m['cpu']:6.1f} "
                     f"{m['rss']:9.2f}")
    ratio = medians["current"]["docs_per_s"] / medians["baseline"]["docs_per_s"]
    lines.append(f"\ncurrent / baseline docs/s = {ratio:.2f} (target >= 0.90: "
                 f"{'PASS' if ratio >= 0.9 else 'FAIL'})")
    text = "\n".join(lines) + "\n"
    print(text)
    args.results.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
