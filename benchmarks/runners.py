"""One graph, several runners: ``ndcl dedup`` on the four blog shards (184k posts) on each.

Runs, one after the other on this machine (each a fresh ``ndcl`` process):

- ``direct``: Beam's FnApiRunner (the baseline of every ratio);
- ``flink-embedded-p1`` / ``-p2``: ``--runner flink --parallelism N`` (Beam's Flink job server
  with an embedded MiniCluster, LOOPBACK SDK workers: one process per slot at N > 1);
- ``flink-cluster-p2``: the standalone cluster of ``runners/flink/cluster.sh`` (2 slots, its
  own SDK worker pool), started before and stopped after the measured run;
- ``prism``: ``--runner prism`` (skipped when ``make prism`` has not installed it);
- ``flink-cluster-p2-2g``: the same with ``taskmanager.memory.process.size: 2g``;
- ``direct-demo`` / ``flink-embedded-p2-demo``: the same on the bundled demo corpus (1,308
  documents), three runs each, the median kept: the runner's fixed cost;
- with ``--big``: ``dedup`` of 900,000 documents (``.ndcl/scale``, ``scripts/make_scale_corpus.py``)
  on the standalone cluster with ``--big-tm-memory`` (default 2g) and the RocksDB state backend
  (keyed state off the heap).

For each: wall seconds, documents per second, CPU seconds (user + system of every process of
the run, in all and by kind of process: the larger of the kernel's total for ``ndcl``'s reaped
tree and the sum of the per-process samples, since ``ndcl`` does not wait for the job server
JVM it stops; the cluster's processes as sampled), peak RSS of every kind
of process (``ndcl``, job server, JobManager, TaskManager, SDK workers, Prism) and of all of
them together (``benchmarks._measure``), and whether ``kept/``, ``duplicates/``, ``rejected/``
are byte-identical to the direct runner's. Targets (issue 12): Flink p2 ≥ 1.6 × p1 in docs/s,
and Flink p2's wall no longer than the direct runner's. With the demo rows it also prints a
lower bound on p2's wall on this machine's cores (:func:`wall_bound`) and what that leaves of
p2 / p1.

    .venv/bin/python benchmarks/runners.py [--only direct,flink-embedded-p1] [--big]

Writes ``benchmarks/results-runners.{txt,json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._measure import run_measured  # noqa: E402
from runners.flink import cluster, dist  # noqa: E402
from tests.digests import output_digest  # noqa: E402

BLOGS = REPO.parent / "shared" / "data" / "blogs"
SCALE = REPO / ".ndcl" / "scale"
# A case name ending in -demo runs on the bundled demo corpus (1,308 documents): its wall is
# almost all the runner's fixed cost (start-up, translation, deployment), the part of a run
# that more cores do not shorten.
DEMO = REPO / "data" / "demo" / "c4-demo.00000-of-00001.json.gz"
NDCL = [sys.executable, "-m", "beam_pipeline.cli"]
RESULTS = REPO / "benchmarks" / "results-runners"
CASES = ("direct", "flink-embedded-p1", "flink-embedded-p2", "flink-cluster-p2",
         "flink-cluster-p2-2g", "prism", "direct-demo", "flink-embedded-p2-demo")
# TaskManager process memory per cluster case. Before the combines were folded per bundle and
# the writer read its own batches (transforms.combine, transforms.read.ReadThenFn) the
# 184k-post dedup needed 8g and failed at 4g with "OutOfMemoryError: Java heap space".
CLUSTER_TM_MEMORY = {"flink-cluster-p2": "4g", "flink-cluster-p2-2g": "2g"}
REST, RPC, POOL = 18181, 16223, 15100  # the cluster's ports (not Flink's defaults)


def _ndcl(inputs: list[str], out: Path, db: Path, flags: list[str]) -> list[str]:
    return [*NDCL, "-q", "--db-url", f"sqlite:///{db}", "dedup", "--input", *inputs,
            "--output", str(out), *flags]


def _cluster_flags(parallelism: int) -> list[str]:
    return ["--runner", "flink", "--flink-master", f"localhost:{REST}", "--parallelism",
            str(parallelism), "--environment-config", f"localhost:{POOL}"]


def run_case(name: str, inputs: list[str], work: Path, tm_memory: str | None = None,
             state_backend: str = "hashmap", timeout: float | None = None) -> dict[str, Any]:
    out, db = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=work)) / "out", work / "runs.db"
    if name.endswith("-demo"):
        inputs = [str(DEMO)]
    flags = {"direct": [], "flink-embedded-p1": ["--runner", "flink", "--parallelism", "1"],
             "flink-embedded-p2": ["--runner", "flink", "--parallelism", "2"],
             "prism": ["--runner", "prism"]}.get(name.removesuffix("-demo"))
    state = None
    if flags is None:  # a standalone cluster run
        spec = cluster.ClusterSpec(slots=2, rest_port=REST, rpc_port=RPC,
                                   worker_pool_port=POOL,
                                   tm_memory=tm_memory or CLUSTER_TM_MEMORY.get(name, "4g"),
                                   state_backend=state_backend)
        begun = time.monotonic()
        try:
            state = cluster.start(spec, work / f"{name}-cluster")
        except cluster.ClusterError as exc:  # a row that says why, not a lost benchmark
            return {"case": name, "measured_at": time.strftime("%Y-%m-%d %H:%M UTC",
                                                                time.gmtime()),
                    "returncode": None, "tm_memory": spec.tm_memory,
                    "state_backend": spec.state_backend, "error": f"cluster start: {exc}"}
        print(f"  cluster up in {time.monotonic() - begun:.1f} s", flush=True)
        flags = _cluster_flags(2)
    try:
        measured = run_measured(_ndcl(inputs, out, db, flags), interval=0.5, timeout=timeout,
                                extra_pids=list(state.pids.values()) if state else ())
    finally:
        if state:
            cluster.stop(Path(state.state_dir))
    row: dict[str, Any] = {"case": name, "measured_at": time.strftime("%Y-%m-%d %H:%M UTC",
                                                                      time.gmtime()),
                           "returncode": measured["returncode"],
                           "tm_memory": state.spec.tm_memory if state else None,
                           "state_backend": state.spec.state_backend if state else None,
                           "wall_s": round(measured["wall_s"], 1),
                           "cpu_s": round(measured["cpu_s"], 1),
                           "cpu_s_by_kind": {k: round(v, 1) for k, v in
                                             measured["cpu_s_by_kind"].items()},
                           "peak_rss_gib": round(measured["peak_rss_bytes"] / 2**30, 2),
                           "peak_rss_gib_by_kind": {k: round(v / 2**30, 2) for k, v in
                                                    measured["peak_rss_by_kind"].items()}}
    if measured["returncode"] != 0:
        row["error"] = measured["stderr_tail"][-600:]
        return row
    summary = json.loads((out / "summary.json").read_text())
    row.update(read=summary["read"], kept=summary["kept"], duplicates=summary["duplicates"],
               docs_per_s=round(summary["read"] / measured["wall_s"], 1),
               digest=output_digest(out))
    return row


def available(name: str) -> str | None:
    """Why ``name`` cannot run here, or None."""
    if name.startswith("flink"):
        if dist.java_major() is None or not dist.job_server_jar().is_file():
            return "no Java or no `make flink` job server"
        if "cluster" in name and not (dist.flink_home() / "bin").is_dir():
            return "no `make flink` Flink distribution"
    if name == "prism":
        try:
            from runners.prism import prism_binary
        except ImportError:
            return "no runners.prism"
        if not prism_binary().is_file():
            return "no `make prism` binary"
    return None


def table(rows: list[dict[str, Any]]) -> str:
    kinds = sorted({k for r in rows for k in r.get("peak_rss_gib_by_kind", {})})
    head = ["case", "read", "wall s", "docs/s", "CPU s", "peak RSS GiB", "same bytes"] + \
        [f"{k} GiB" for k in kinds]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if r["returncode"] is None:  # never ran: the cluster did not start
            lines.append(f"| {r['case']} | not run: {r['error'][:200]} | | | |")
            continue
        if r["returncode"] == -9:
            lines.append(f"| {r['case']} | timed out: killed after {r['wall_s']:.0f} s | | "
                         f"{r['cpu_s']:.0f} | {r['peak_rss_gib']:.2f} |")
            continue
        if r["returncode"] != 0:
            cause = r.get("error", "").split("failed in state FAILED: ")[-1].split(";")[0]
            lines.append(f"| {r['case']} | failed (exit {r['returncode']}: {cause.strip()}) "
                         f"after {r['wall_s']:.1f} s | | {r['cpu_s']:.0f} | "
                         f"{r['peak_rss_gib']:.2f} |")
            continue
        # A row kept from an earlier run (--merge) was compared with that run's direct row.
        same = r.get("same") or ("baseline of its run" if r["case"] == "direct"
                                 else "not compared (an earlier run)")
        cells = [r["case"], f"{r['read']:,}", f"{r['wall_s']:.1f}", f"{r['docs_per_s']:,.0f}",
                 f"{r['cpu_s']:.0f}", f"{r['peak_rss_gib']:.2f}", same]
        cells += [f"{r['peak_rss_gib_by_kind'].get(k, 0):.2f}" for k in kinds]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def mark_same_bytes(rows: list[dict[str, Any]]) -> None:
    """Whether each run's outputs are byte-identical to the direct runner's of this run."""
    direct = next((r for r in rows if r["case"] == "direct" and r["returncode"] == 0), {})
    for r in rows:
        if r["returncode"] != 0:
            continue
        if r is direct:
            r["same"] = "baseline"
        elif not direct:
            r["same"] = "n/a (no direct run)"
        elif r["read"] != direct["read"]:
            r["same"] = "n/a (other input)"
        else:
            r["same"] = "yes" if r["digest"] == direct["digest"] else "no"


def cpu_table(rows: list[dict[str, Any]]) -> str:
    """CPU seconds by kind of process, for the runs that report them."""
    rows = [r for r in rows if r.get("returncode") == 0 and r.get("cpu_s_by_kind")]
    kinds = sorted({k for r in rows for k in r["cpu_s_by_kind"]})
    lines = ["| case | CPU s | " + " | ".join(f"{k} CPU s" for k in kinds) + " |",
             "|" + "---|" * (len(kinds) + 2)]
    for r in rows:
        lines.append(f"| {r['case']} | {r['cpu_s']:.1f} | "
                     + " | ".join(f"{r['cpu_s_by_kind'].get(k, 0):.1f}" for k in kinds) + " |")
    return "\n".join(lines)


def wall_bound(run: dict[str, Any], demo: dict[str, Any], cores: int) -> float:
    """The shortest wall ``run`` could have on ``cores`` cores: its fixed cost (the wall of the
    same runner on the demo corpus) plus the CPU seconds the larger input added, spread
    perfectly over every core."""
    return demo["wall_s"] + max(run["cpu_s"] - demo["cpu_s"], 0.0) / cores


def ratios(rows: list[dict[str, Any]], cores: int | None = None) -> list[str]:
    by = {r["case"]: r for r in rows if r["returncode"] == 0}
    out = []
    cores = cores or os.cpu_count() or 1
    p2, p2_demo, direct = (by.get(c) for c in ("flink-embedded-p2", "flink-embedded-p2-demo",
                                               "direct"))
    if p2 and p2_demo and direct:
        bound = wall_bound(p2, p2_demo, cores)
        out.append(f"flink-embedded-p2 wall lower bound on {cores} cores: fixed "
                   f"{p2_demo['wall_s']:.1f} s (its demo-corpus wall) + (CPU {p2['cpu_s']:.1f} s"
                   f" - demo CPU {p2_demo['cpu_s']:.1f} s) / {cores} = {bound:.1f} s; direct "
                   f"wall {direct['wall_s']:.1f} s: bound / direct {bound / direct['wall_s']:.2f}")
        if "flink-embedded-p1" in by:
            out.append(f"so p2 / p1 docs/s can be at most {by['flink-embedded-p1']['wall_s']:.1f}"
                       f" / {bound:.1f} = {by['flink-embedded-p1']['wall_s'] / bound:.2f} with "
                       "the CPU p2 spends")
    if "flink-embedded-p1" in by and "flink-embedded-p2" in by:
        speedup = by["flink-embedded-p2"]["docs_per_s"] / by["flink-embedded-p1"]["docs_per_s"]
        out.append(f"Flink embedded p2 / p1 docs/s: {speedup:.2f} (target >= 1.6)")
    for p2 in ("flink-embedded-p1", "flink-embedded-p2", "flink-cluster-p2", "prism"):
        # A row kept from an earlier run (--merge) is not compared with this run's direct row.
        if p2 in by and "direct" in by and by[p2].get("same") is not None:
            out.append(f"{p2} wall / direct wall: {by[p2]['wall_s'] / by['direct']['wall_s']:.2f}"
                       + (" (target <= 1.0)" if p2.startswith("flink") else ""))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(CASES),
                        help=f"comma-separated cases (default: {','.join(CASES)})")
    parser.add_argument("--big", action="store_true",
                        help="also 900,000 documents on the cluster (--big-tm-memory)")
    parser.add_argument("--big-tm-memory", default="2g,3g",
                        help="TaskManager process memory of each --big run (default: 2g,3g)")
    parser.add_argument("--big-timeout", type=float, default=600.0,
                        help="seconds before a --big run is killed (default: 600)")
    parser.add_argument("--merge", action="store_true",
                        help="keep the rows of the previous results file for cases not run now")
    parser.add_argument("--big-shards", type=int, default=18,
                        help="scale-corpus shards of 50,000 for --big (default: 18)")
    args = parser.parse_args(argv)
    inputs = [str(p) for p in sorted(BLOGS.glob("*.json.gz"))]
    cases = [c for c in args.only.split(",") if c]
    if not inputs:
        print(f"no blog shards in {BLOGS}", file=sys.stderr)
        return 2
    rows = []
    with tempfile.TemporaryDirectory(prefix="ndcl-runners-") as tmp:
        for name in cases:
            reason = available(name)
            if reason:
                print(f"{name}: skipped ({reason})", flush=True)
                continue
            print(f"{name} ...", flush=True)
            if name.endswith("-demo"):  # a few seconds each, and noisy: the median of 3
                runs = sorted((run_case(name, inputs, Path(tmp)) for _ in range(3)),
                              key=lambda r: r.get("wall_s") or float("inf"))
                row = {**runs[1], "walls_s": [r.get("wall_s") for r in runs]}
            else:
                row = run_case(name, inputs, Path(tmp))
            print(f"  {json.dumps(row)}", flush=True)
            rows.append(row)
        if args.big:
            shards = sorted(SCALE.glob("*.json.gz"))[:args.big_shards]
            for memory in args.big_tm_memory.split(","):
                name = f"flink-cluster-p2-{memory}-rocksdb-{len(shards) * 50}k"
                print(f"{name} on {len(shards)} scale shards ...", flush=True)
                row = run_case(name, [str(p) for p in shards], Path(tmp), tm_memory=memory,
                               state_backend="rocksdb", timeout=args.big_timeout)
                print(f"  {json.dumps(row)}", flush=True)
                rows.append(row)
    mark_same_bytes(rows)
    if args.merge and RESULTS.with_suffix(".json").is_file():
        now = {r["case"] for r in rows}
        earlier = json.loads(RESULTS.with_suffix(".json").read_text())
        rows = [r for r in earlier if r["case"] not in now] + rows
    text = "\n".join([
        f"# benchmarks/runners.py, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"# ndcl dedup on {len(inputs)} blog shards ({', '.join(Path(p).name for p in inputs)})"
        "; one run each, one after the other, on this 2-core machine"
        + ("; rows kept from an earlier run of this script (--merge) carry their measured_at in "
           "the JSON file" if args.merge else ""),
        *(["# *-900k: dedup of 900,000 scale-corpus documents (.ndcl/scale) on the standalone "
           f"cluster, RocksDB state backend, killed after {args.big_timeout:.0f} s"]
          if args.big else []), "",
        table(rows), "", "CPU seconds by kind of process (sampled every 0.5 s):", "",
        cpu_table(rows), "", *ratios(rows), ""])
    print(text)
    RESULTS.with_suffix(".txt").write_text(text)
    RESULTS.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
