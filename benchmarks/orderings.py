"""ND→CL versus CL→ND on the blog corpus: time per stage, records kept and duplicates found.

Runs ``ndcl run --workflow nd_cl`` and ``--workflow cl_nd`` on ``../shared/data/blogs`` (one
shard by default, ``--all`` for the four) with the same parameters, in the same invocation,
and prints the two side by side, like the old report's central table (ND→CL 165 s vs CL→ND
388 s on 14.25M C4 documents, where CL→ND reported 0 duplicates because of a bug).

    .venv/bin/python benchmarks/orderings.py [--all] [--backend local|ray] [--json OUT]
    .venv/bin/python benchmarks/orderings.py --report docs/orderings-report

With ``--report DIR`` both runs are recorded in a fresh benchmark database (``DIR/runs.db``),
evaluated against the shard's truth (``ndcl truth``, one shard only, ASCII tokens as the
shared ``blogs.00000.truth.json``, so the runs use ``--tokenizer ascii``) and against each
other (``ndcl evaluate cl_nd --against nd_cl``: the duplicates CL→ND missed because they fell
in different clusters), and ``ndcl report`` draws them into ``DIR/index.html``.

Skips (exit 0, "skipped") without ``../shared/data/blogs``.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

try:
    from benchmarks._measure import run_measured
except ImportError:  # run as a script: benchmarks/ itself is on sys.path
    from _measure import run_measured  # type: ignore[no-redef]

REPO = Path(__file__).resolve().parents[1]


NDCL = str(Path(sys.executable).parent / "ndcl")


def run(workflow: str, inputs: list[Path], out: Path, backend: str,
        extra: list[str] | None = None, db_url: str | None = None) -> dict:
    cmd = [NDCL, "-q", *(["--db-url", db_url] if db_url else []), "run", "--workflow", workflow,
           "--input", *map(str, inputs), "--output", str(out), "--kmeans-backend", backend,
           *(extra or [])]
    measured = run_measured(cmd)
    if measured["returncode"] != 0:
        raise RuntimeError(f"{workflow} failed:\n{measured['stderr_tail']}")
    summary = json.loads((out / "summary.json").read_text())
    summary["process_wall_seconds"] = measured["wall_s"]
    # The whole process tree (ndcl, and the Ray head and workers it starts with --backend ray).
    summary["peak_rss_gib"] = measured["peak_rss_bytes"] / 2**30
    return summary


def fresh_benchmark_db(report_dir: Path) -> str:
    """``report_dir/runs.db``, emptied when it is a benchmark database of an earlier report;
    any other file of that name is the user's, and is left alone (an error instead)."""
    path = report_dir / "runs.db"
    if path.exists():
        try:
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
                tables = {row[0] for row in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.DatabaseError:
            tables = set()
        if "benchmark_runs" not in tables:
            raise SystemExit(f"{path} exists and is not an NDCL benchmark database; "
                             "choose another --report folder")
        path.unlink()
    return f"sqlite:///{path.resolve()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data" / "blogs")
    parser.add_argument("--all", action="store_true", help="all four shards")
    parser.add_argument("--backend", choices=("local", "ray"), default="local")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--report", type=Path, metavar="DIR",
                        help="record, evaluate and draw the two runs into DIR (see above)")
    args = parser.parse_args(argv)
    shards = sorted(args.data_dir.glob("blogs.0000*.json.gz"))
    if not shards:
        print(f"skipped: no blog shards under {args.data_dir}")
        return 0
    inputs = shards if args.all else shards[:1]
    results = {}
    db_url = extra = None
    if args.report:
        args.report.mkdir(parents=True, exist_ok=True)
        db_url = fresh_benchmark_db(args.report)
        extra = ["--tokenizer", "ascii"]
    with tempfile.TemporaryDirectory() as tmp:
        outs = {w: Path(tmp) / w for w in ("nd_cl", "cl_nd")}
        for workflow in ("nd_cl", "cl_nd"):
            print(f"running {workflow} ...", flush=True)
            results[workflow] = run(workflow, inputs, outs[workflow], args.backend, extra, db_url)
        if args.report:
            report(args, inputs, outs, db_url)
    stages = sorted({s for r in results.values() for s in r["stage_seconds"]})
    rows = [("documents read", "read"), ("kept", "kept"), ("duplicates", "duplicates"),
            ("  exact", "duplicates_exact"), ("  near", "duplicates_near"),
            ("rejected", "rejected"), ("wall seconds", "process_wall_seconds"),
            ("peak RSS GiB (process tree)", "peak_rss_gib")]
    print(f"\n{'':<28}{'ND→CL (nd_cl)':>16}{'CL→ND (cl_nd)':>16}")
    for label, key in rows:
        values = [results[w][key] for w in ("nd_cl", "cl_nd")]
        cells = [f"{v:>16.2f}" if key == "peak_rss_gib" else
                 f"{v:>16.1f}" if isinstance(v, float) else f"{v:>16,}" for v in values]
        print(f"{label:<28}{''.join(cells)}")
    for stage in stages:
        values = [results[w]["stage_seconds"].get(stage, 0.0) for w in ("nd_cl", "cl_nd")]
        print(f"{'  ' + stage + ' s':<28}{values[0]:>16.2f}{values[1]:>16.2f}")
    print(f"(input: {len(inputs)} shard(s); K-Means backend {args.backend}; stage seconds are "
          "DoFn time summed over workers)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def report(args: argparse.Namespace, inputs: list[Path], outs: dict[str, Path],
           db_url: str) -> None:
    """Evaluate both runs (truth file, and CL→ND against ND→CL) and draw the report."""
    steps = []
    if len(inputs) == 1:
        # `ndcl truth` rebuilds the shard's truth clusters (the same 1,384 as the shared file)
        # and adds the scored pairs that give the S-curve its measured points.
        truth = args.report / "truth.json"
        steps.append(["truth", str(inputs[0]), "--output", str(truth), "--tokenizer", "ascii"])
        steps += [["evaluate", str(outs[w]), "--truth", str(truth)] for w in ("nd_cl", "cl_nd")]
    steps.append(["evaluate", str(outs["cl_nd"]), "--against", str(outs["nd_cl"])])
    steps.append(["report", "--output", str(args.report)])
    for step in steps:
        proc = subprocess.run([NDCL, "--db-url", db_url, *step], capture_output=True, text=True)
        print(proc.stdout, end="")
        if proc.returncode != 0:
            raise RuntimeError(f"ndcl {' '.join(step)} failed:\n{proc.stderr[-3000:]}")


if __name__ == "__main__":
    sys.exit(main())
