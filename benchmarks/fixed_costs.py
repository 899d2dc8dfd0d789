"""Fixed costs of ``ndcl dedup`` on the bundled demo corpus (1,308 documents), where the work
itself is a small part: start-up, graph construction and the runner's overhead (issue 14's
target: at most 2 s together), read from each run's ``summary.json`` ``time_parts``, and the
whole process's wall time and peak RSS (recording the run and the exit included).

With ``--baseline-ndcl`` (another checkout's ``ndcl``, e.g. a ``git worktree`` of an older
commit with its own ``make install``) the two programs run alternately, ``--repeats`` times
each, on the same machine in the same minutes; medians are printed side by side.
``--baseline-start-error`` subtracts a constant from the baseline's ``start_up``: commits
before 4f37d5e read the process start time from psutil, which rounds the boot time down to
whole seconds (``python -c 'import time; print(time.time() - time.monotonic())'`` against
``btime`` in ``/proc/stat`` gives the error on this machine).

    .venv/bin/python benchmarks/fixed_costs.py [--repeats 5] [--baseline-ndcl PATH]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._measure import report, run_measured  # noqa: E402

DEMO = REPO / "data" / "demo" / "c4-demo.00000-of-00001.json.gz"
PARTS = ("start_up", "build_graph", "runner_overhead", "fixed", "process_wall", "peak_rss_gib")
TARGET_S = 2.0


def one_run(ndcl: str, out: Path) -> dict[str, float]:
    """The figures of one ``ndcl dedup`` of the demo corpus (its outputs under ``out``)."""
    shutil.rmtree(out, ignore_errors=True)
    measured = run_measured([ndcl, "dedup", "--input", str(DEMO), "--output", str(out / "o"),
                             "--db-url", f"sqlite:///{out}.db", "-q"])
    if measured["returncode"] != 0:
        raise RuntimeError(f"{ndcl} failed: {measured['stderr_tail'][-500:]}")
    summary = json.loads((out / "o" / "summary.json").read_text())
    parts = summary["time_parts"]
    figures = {"start_up": parts["start_up"], "build_graph": parts["build_graph"],
               "runner_overhead": summary["runner_overhead_seconds"],
               "process_wall": measured["wall_s"],
               "peak_rss_gib": measured["peak_rss_bytes"] / 2**30}
    figures["fixed"] = figures["start_up"] + figures["build_graph"] + figures["runner_overhead"]
    return figures


def medians(runs: list[dict[str, float]]) -> dict[str, float]:
    return {part: statistics.median(run[part] for run in runs) for part in PARTS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ndcl", default=str(Path(sys.executable).parent / "ndcl"))
    parser.add_argument("--baseline-ndcl", help="another ndcl, run alternately")
    parser.add_argument("--baseline-label", default="baseline")
    parser.add_argument("--baseline-start-error", type=float, default=0.0,
                        help="seconds to subtract from the baseline's start_up")
    parser.add_argument("--results", type=Path,
                        default=REPO / "benchmarks" / "results-fixed-costs.txt")
    args = parser.parse_args(argv)
    programs = {"this checkout": args.ndcl}
    if args.baseline_ndcl:
        programs[args.baseline_label] = args.baseline_ndcl
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in programs}
    with tempfile.TemporaryDirectory(prefix="ndcl-fixed-") as tmp:
        for repeat in range(args.repeats):
            for name, ndcl in programs.items():
                figures = one_run(ndcl, Path(tmp) / f"{repeat}-{len(runs[name])}")
                if name != "this checkout":
                    figures["start_up"] -= args.baseline_start_error
                    figures["fixed"] -= args.baseline_start_error
                runs[name].append(figures)
                print(f"{name} run {repeat + 1}/{args.repeats}: "
                      + ", ".join(f"{k} {v:.2f}" for k, v in figures.items()), flush=True)
    lines = [f"# benchmarks/fixed_costs.py --repeats {args.repeats}, "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: ndcl dedup of the demo "
             f"corpus (1,308 documents), medians; seconds unless named; the programs alternate",
             f"{'program':<16}" + "".join(f"{p:>17}" for p in PARTS)]
    for name, values in runs.items():
        m = medians(values)
        lines.append(f"{name:<16}" + "".join(f"{m[p]:>17.2f}" for p in PARTS))
    current = medians(runs["this checkout"])["fixed"]
    lines.append(f"fixed = start_up + build_graph + runner_overhead; target <= {TARGET_S:.1f} s: "
                 f"{'PASS' if current <= TARGET_S else 'MISS'} ({current:.2f} s)")
    if args.baseline_ndcl and args.baseline_start_error:
        lines.append(f"the baseline's start_up has {args.baseline_start_error:.2f} s of "
                     "psutil start-time error taken off")
    return report(lines, args.results)


if __name__ == "__main__":
    sys.exit(main())
