"""Throughput and memory of ``ndcl dedup`` against two baselines: datasketch and rensa.

What it measures: for one shard (``blogs.00000.json.gz``) and for all four
shards (``blogs.0000[0-3].json.gz``) it runs, in the same invocation and
alternating repeat by repeat, the single-process datasketch baseline
(``benchmarks/datasketch_baseline.py``), the rensa baseline (``benchmarks/rensa_baseline.py``:
rensa 0.5's Rust MinHash and LSH behind the same Python reading and shingling) and
``ndcl dedup``, each as a
subprocess measured by ``benchmarks/_measure.run_measured`` (wall time of the
whole command, interpreter start included, and the peak summed RSS of its
process tree, Beam's worker processes included). The input files are read
once beforehand so that both systems find them in the page cache.

Reported per system and dataset (medians over ``--repeats``, peak RSS the
largest over the repeats, since its target is a ceiling):

- docs: records read (NDCL ``summary.json["read"]``; datasketch ``docs``);
- wall s, docs/s = docs / wall s, and docs/s per core, where NDCL uses
  ``--workers`` cores and datasketch one;
- signature docs/s per core: NDCL ``read / stage_cpu_seconds["compute_features"]``: the
  stage's CPU seconds, its DoFn thread's and its kernel threads', summed over the workers,
  so they are already core-seconds and are not divided by the workers again. Datasketch:
  ``signature_docs_per_s`` (tokenising, shingling and MinHash on one core;
  ``compute_features`` also computes exact-match hashes, so the ratio is, if
  anything, conservative for NDCL);
- peak RSS and duplicates found.

Then the ratios against the targets (issue 14): end-to-end docs/s at least 1.5x rensa's and
3x datasketch's, NDCL's CPU seconds (user + sys of the whole process tree) at most rensa's,
signature docs/s per core at least 2x datasketch's and at least 50,000, and NDCL's peak RSS
at most 3 GiB on all four shards, each marked PASS or MISS. Neither baseline verifies
candidates or writes output; NDCL does both. ``--txt`` writes the printed report under a line
naming the command, the time and the commit; ``benchmarks/readme_tables.py`` renders the
README's Performance tables from the ``--json`` file. The exit status is 0 even
on a MISS (this is a report), 1 when a run failed, and 0 with "skipped" when
the data is absent.

Run from the repository root::

    # both datasets, 3 repeats, NDCL on the in-memory FnApiRunner (one core)
    .venv/bin/python benchmarks/nd_throughput.py --json /tmp/nd.json
    # one shard, once, NDCL on 2 worker processes
    .venv/bin/python benchmarks/nd_throughput.py --only one --repeats 1 --workers 2

The baseline builds its 256 permutations once and shares them between documents (datasketch's
``permutations=`` argument), which is how the figures quoted in the ND issue were measured;
``--plain-baseline`` runs datasketch as it comes instead (about 1.5x slower). NDCL defaults to
one worker: on two cores the in-memory runner beat two worker processes (less copying between
processes), so the per-core figure is its whole throughput.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

try:
    from benchmarks._measure import Measurement, median, run_measured
except ImportError:  # run as a script: benchmarks/ itself is on sys.path
    from _measure import Measurement, median, run_measured  # type: ignore[no-redef]

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
DEFAULT_DATA_DIR = REPO_ROOT / ".." / "shared" / "data" / "blogs"
BASELINE_SCRIPTS = {"datasketch": BENCH_DIR / "datasketch_baseline.py",
                    "rensa": BENCH_DIR / "rensa_baseline.py"}
BASELINES = tuple(BASELINE_SCRIPTS)

DATASETS: dict[str, list[str]] = {
    "one": ["blogs.00000.json.gz"],
    "all": [f"blogs.0000{shard}.json.gz" for shard in range(4)],
}

# NDCL / baseline end-to-end docs/s (issue 14).
TARGET_END_TO_END_RATIO = {"datasketch": 3.0, "rensa": 1.5}
TARGET_SIGNATURE_PER_CORE_RATIO = 2.0  # against datasketch
# ComputeFeatures (tokenise, shingle, 256-permutation MinHash, exact hash) per CPU second.
TARGET_SIGNATURE_DOCS_PER_CPU_S = 50_000
TARGET_PEAK_RSS_GIB_ALL = 3.0

GIB = 1 << 30


class RunFailed(Exception):
    """A measured command exited non-zero or left no readable result."""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help="folder of blogs.0000N.json.gz",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="runs per system and dataset; medians reported",
    )
    parser.add_argument(
        "--plain-baseline",
        action="store_true",
        help="datasketch as it comes (permutations rebuilt per document); the default "
        "builds them once, the faster baseline, which matches the figures in the ND issue",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="NDCL worker processes (multi_processing DirectRunner); 1 = in-memory default runner",
    )
    parser.add_argument(
        "--only",
        choices=("one", "all", "both"),
        default="both",
        help="which dataset(s)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="scratch folder for outputs (default: a temporary one, removed)",
    )
    parser.add_argument("--json", type=Path, help="save the results here")
    parser.add_argument(
        "--txt",
        type=Path,
        help="also write the printed report here, under a line saying the command, the UTC "
        "time and the commit measured",
    )
    parser.add_argument(
        "--ndcl",
        type=Path,
        help="the ndcl executable (default: beside this Python, then PATH)",
    )
    parser.add_argument("--threshold", type=float, default=0.7)
    parser.add_argument("--num-perm", type=int, default=256)
    parser.add_argument("--ngram", type=int, default=5)
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.workers < 1:
        parser.error("--repeats and --workers must be at least 1")
    return args


def find_ndcl(explicit: Path | None) -> Path | None:
    if explicit is not None:
        return explicit if explicit.exists() else None
    beside_python = Path(sys.executable).parent / "ndcl"
    if beside_python.exists():
        return beside_python
    on_path = shutil.which("ndcl")
    return Path(on_path) if on_path else None


def param_args(args: argparse.Namespace) -> list[str]:
    return [
        "--threshold",
        str(args.threshold),
        "--num-perm",
        str(args.num_perm),
        "--ngram",
        str(args.ngram),
    ]


def baseline_command(
    system: str, files: Sequence[Path], result_json: Path, args: argparse.Namespace
) -> list[str]:
    shared = system == "datasketch" and not args.plain_baseline
    return [
        sys.executable,
        str(BASELINE_SCRIPTS[system]),
        *map(str, files),
        "--json",
        str(result_json),
        *param_args(args),
        *(["--shared-permutations"] if shared else []),
    ]


def ndcl_command(
    ndcl: Path, files: Sequence[Path], output: Path, args: argparse.Namespace
) -> list[str]:
    cmd = [
        str(ndcl),
        "dedup",
        "--input",
        *map(str, files),
        "--output",
        str(output),
        *param_args(args),
    ]
    if args.workers > 1:
        cmd += [
            f"--direct_num_workers={args.workers}",
            "--direct_running_mode=multi_processing",
        ]
    return cmd


def measure(cmd: list[str], result_path: Path) -> tuple[Measurement, dict[str, Any]]:
    """Run ``cmd`` and load the JSON it leaves at ``result_path``."""
    measurement = run_measured(cmd)
    if measurement["returncode"] != 0:
        raise RunFailed(
            f"exit status {measurement['returncode']}: {' '.join(cmd)}\n"
            f"{measurement['stderr_tail'][-2000:]}"
        )
    try:
        return measurement, json.loads(result_path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise RunFailed(
            f"no readable result at {result_path} ({error}): {' '.join(cmd)}"
        ) from error


def baseline_run(system: str, files: Sequence[Path], scratch: Path, args: argparse.Namespace
                 ) -> dict[str, Any]:
    result_json = scratch / f"{system}.json"
    measurement, result = measure(baseline_command(system, files, result_json, args),
                                  result_json)
    return {
        "measurement": measurement,
        "result": result,
        "docs": result["docs"],
        "duplicates": result["duplicates"],
        "signature_docs_per_s_per_core": result["signature_docs_per_s"],
    }


def ndcl_run(
    ndcl: Path, files: Sequence[Path], scratch: Path, args: argparse.Namespace
) -> dict[str, Any]:
    output = scratch / "ndcl"
    measurement, summary = measure(ndcl_command(ndcl, files, output, args), output / "summary.json")
    # CPU seconds of the stage, its kernel threads included (the stage's wall seconds are
    # fewer once the kernel runs on several threads); older summaries only have wall seconds.
    features_s = (summary.get("stage_cpu_seconds") or {}).get(
        "compute_features", summary["stage_seconds"]["compute_features"])
    notes = []
    if summary["stage_seconds"]["compute_features"] > summary["wall_seconds"] * args.workers:
        notes.append(
            "compute_features seconds exceed wall seconds x workers: "
            "check how stage_seconds are summed"
        )
    return {
        "measurement": measurement,
        "result": summary,
        "docs": summary["read"],
        "duplicates": summary["duplicates"],
        # CPU seconds summed over all workers and threads: docs per core-second already.
        "signature_docs_per_s_per_core": summary["read"] / features_s if features_s > 0 else 0.0,
        "notes": notes,
    }


def summarise(runs: list[dict[str, Any]], cores: int) -> dict[str, Any]:
    """Medians over the runs of one system on one dataset."""
    docs = runs[-1]["docs"]
    wall = median(run["measurement"]["wall_s"] for run in runs)
    docs_per_s = docs / wall if wall > 0 else 0.0
    duplicates = sorted({run["duplicates"] for run in runs})
    return {
        "runs": len(runs),
        "cores": cores,
        "docs": docs,
        "wall_s": wall,
        "docs_per_s": docs_per_s,
        "docs_per_s_per_core": docs_per_s / cores,
        "cpu_s": median(run["measurement"]["cpu_s"] for run in runs),
        "signature_docs_per_s_per_core": median(
            run["signature_docs_per_s_per_core"] for run in runs
        ),
        "peak_rss_gib": max(run["measurement"]["peak_rss_bytes"] for run in runs) / GIB,
        "duplicates": duplicates[0] if len(duplicates) == 1 else duplicates,
    }


def ratio(ndcl: dict[str, Any], baseline: dict[str, Any], key: str) -> float | None:
    return ndcl[key] / baseline[key] if baseline.get(key) else None


def compare(dataset: str, ndcl: dict[str, Any], baselines: dict[str, dict[str, Any]]
            ) -> list[dict[str, Any]]:
    """NDCL/baseline ratios, each with its target where there is one."""
    rows: list[dict[str, Any]] = []
    for name, baseline in baselines.items():
        rows += [
            {"metric": f"end-to-end docs/s vs {name}",
             "value": ratio(ndcl, baseline, "docs_per_s"),
             "target": TARGET_END_TO_END_RATIO[name], "kind": "ratio_min"},
            {"metric": f"CPU seconds vs {name}", "value": ratio(ndcl, baseline, "cpu_s"),
             "target": 1.0 if name == "rensa" else None, "kind": "ratio_max"},
        ]
    if "datasketch" in baselines:
        rows.append({"metric": "signature docs/s per core vs datasketch",
                     "value": ratio(ndcl, baselines["datasketch"],
                                    "signature_docs_per_s_per_core"),
                     "target": TARGET_SIGNATURE_PER_CORE_RATIO, "kind": "ratio_min"})
    rows.append({"metric": "NDCL signature docs/s per core",
                 "value": ndcl["signature_docs_per_s_per_core"],
                 "target": TARGET_SIGNATURE_DOCS_PER_CPU_S, "kind": "min"})
    if dataset == "all":
        rows.append({"metric": "NDCL peak RSS GiB", "value": ndcl["peak_rss_gib"],
                     "target": TARGET_PEAK_RSS_GIB_ALL, "kind": "max"})
    for row in rows:
        if row["target"] is None or row["value"] is None:
            row["verdict"] = "-"
        elif row["kind"] in ("max", "ratio_max"):
            row["verdict"] = "PASS" if row["value"] <= row["target"] else "MISS"
        else:
            row["verdict"] = "PASS" if row["value"] >= row["target"] else "MISS"
    return rows


def warm_page_cache(files: Sequence[Path]) -> None:
    for path in files:
        with path.open("rb") as stream:
            while stream.read(1 << 24):
                pass


def benchmark_dataset(
    dataset: str,
    files: list[Path],
    scratch: Path,
    ndcl: Path | None,
    args: argparse.Namespace,
) -> tuple[dict[str, Any], list[str]]:
    """All repeats of both systems on one dataset; returns results and failures."""
    warm_page_cache(files)
    runs: dict[str, list[dict[str, Any]]] = {system: [] for system in (*BASELINES, "ndcl")}
    failed: dict[str, str] = {}
    if ndcl is None:
        failed["ndcl"] = "executable not found (pass --ndcl, or install the package)"
    for repeat in range(args.repeats):
        for system in runs:
            if system in failed:
                continue  # it failed once already: do not repeat it
            run_dir = scratch / dataset / f"{system}-{repeat}"
            shutil.rmtree(run_dir, ignore_errors=True)  # a reused --out
            run_dir.mkdir(parents=True)
            try:
                if ndcl is not None and system == "ndcl":
                    run = ndcl_run(ndcl, files, run_dir, args)
                else:
                    run = baseline_run(system, files, run_dir, args)
            except RunFailed as error:
                failed[system] = str(error)
                continue
            except (KeyError, TypeError) as error:
                failed[system] = f"unexpected result: {error!r}"
                continue
            runs[system].append(run)
            measurement = run["measurement"]
            print(
                f"[{dataset}] {system} run {repeat + 1}/{args.repeats}: "
                f"{measurement['wall_s']:.1f} s, "
                f"peak RSS {measurement['peak_rss_bytes'] / GIB:.2f} GiB, docs {run['docs']}, "
                f"duplicates {run['duplicates']}",
                file=sys.stderr,
                flush=True,
            )
    cores = {**dict.fromkeys(BASELINES, 1), "ndcl": args.workers}
    summaries = {system: summarise(done, cores[system]) for system, done in runs.items() if done}
    result: dict[str, Any] = {
        "files": [str(path) for path in files],
        "summary": summaries,
        "runs": runs,
    }
    done = {name: summaries[name] for name in BASELINES if name in summaries}
    if "ndcl" in summaries and done:
        result["comparison"] = compare(dataset, summaries["ndcl"], done)
    return result, [f"[{dataset}] {system}: {reason}" for system, reason in failed.items()]


def format_report(results: dict[str, dict[str, Any]], workers: int) -> str:
    header = (
        f"{'dataset':<8}{'system':<12}{'cores':>6}{'docs':>9}{'wall s':>9}{'docs/s':>10}"
        f"{'docs/s/core':>13}{'CPU s':>8}{'sig docs/s/core':>17}{'peak GiB':>10}"
        f"{'duplicates':>14}"
    )
    lines = [header, "-" * len(header)]
    for dataset, result in results.items():
        for system, row in result["summary"].items():
            found = row["duplicates"]  # a list when the runs disagreed
            found = f"{found[0]}..{found[-1]}" if isinstance(found, list) else found
            lines.append(
                f"{dataset:<8}{system:<12}{row['cores']:>6}{row['docs']:>9}{row['wall_s']:>9.1f}"
                f"{row['docs_per_s']:>10.0f}{row['docs_per_s_per_core']:>13.0f}"
                f"{row['cpu_s']:>8.1f}"
                f"{row['signature_docs_per_s_per_core']:>17.0f}{row['peak_rss_gib']:>10.2f}"
                f"{found:>14}"
            )
    lines += [
        "",
        f"NDCL ({workers} worker{'s' if workers > 1 else ''}) / baselines (1 core each):",
    ]
    for dataset, result in results.items():
        if "comparison" not in result:
            lines.append(f"  {dataset:<6}no comparison: a system has no successful run")
        for row in result.get("comparison", []):
            value = (
                "n/a"
                if row["value"] is None
                else f"{row['value']:.2f} GiB" if row["kind"] == "max"
                else f"{row['value']:,.0f}" if row["kind"] == "min"
                else f"{row['value']:.2f}x"
            )
            target = (
                ""
                if row["target"] is None
                else (
                    f"<= {row['target']:.1f} GiB"
                    if row["kind"] == "max"
                    else f">= {row['target']:,}" if row["kind"] == "min"
                    else f"<= {row['target']:.1f}x" if row["kind"] == "ratio_max"
                    else f">= {row['target']:.1f}x"
                )
            )
            lines.append(
                f"  {dataset:<6}{row['metric']:<40}{value:>10}   "
                f"target {target or '-':<12}{row['verdict']}"
            )
    lines.append(
        "(medians of the runs; peak RSS is the largest over the runs, "
        "summed over the process tree; "
        "signature docs/s per core for NDCL = read / compute_features CPU seconds (all threads); "
        "a..b = the runs found different numbers of duplicates)"
    )
    return "\n".join(lines)


def measured_commit() -> str:
    """The checkout's short commit, with ``+changes`` when its tracked files differ from it
    (what the figures measured); ``unknown`` outside git."""
    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                              check=False)

    try:
        head = git("rev-parse", "--short", "HEAD")
        changed = git("status", "--porcelain", "--untracked-files=no")
    except OSError:
        return "unknown"
    if head.returncode != 0:
        return "unknown"
    return head.stdout.strip() + ("+changes" if changed.stdout.strip() else "")


def write_json(path: Path | None, payload: dict[str, Any]) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload, indent=2, default=str) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    data_dir = args.data_dir.resolve()
    wanted = ("one", "all") if args.only == "both" else (args.only,)
    datasets = {name: [data_dir / file for file in DATASETS[name]] for name in wanted}
    missing = sorted(
        {str(path) for files in datasets.values() for path in files if not path.is_file()}
    )
    if missing:
        reason = (
            f"data not found under {data_dir}: {', '.join(Path(path).name for path in missing)}"
        )
        print(f"skipped: {reason}")
        write_json(args.json, {"skipped": reason})
        return 0

    ndcl = find_ndcl(args.ndcl)
    cpus = os.cpu_count() or 1
    commit = measured_commit()
    started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    if args.workers > cpus:
        print(
            f"warning: {args.workers} workers on {cpus} CPUs; per-core figures will be pessimistic",
            file=sys.stderr,
        )
    scratch = args.out or Path(tempfile.mkdtemp(prefix="nd_throughput_"))
    scratch.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, Any]] = {}
    failures: list[str] = []
    try:
        for name, files in datasets.items():
            results[name], dataset_failures = benchmark_dataset(name, files, scratch, ndcl, args)
            failures += dataset_failures
    finally:
        if args.out is None:
            shutil.rmtree(scratch, ignore_errors=True)

    text = format_report(results, args.workers)
    print(text)
    if args.txt is not None:
        command = " ".join(["benchmarks/nd_throughput.py", *(argv if argv is not None
                                                              else sys.argv[1:])])
        args.txt.parent.mkdir(parents=True, exist_ok=True)
        args.txt.write_text(f"# {command}, {started} (commit {commit}, {cpus} CPUs; compare "
                            f"ratios within a run)\n{text}\n")
    for failure in failures:
        print(f"FAILED {failure}", file=sys.stderr)
    write_json(
        args.json,
        {
            "config": {
                "data_dir": str(data_dir),
                "repeats": args.repeats,
                "workers": args.workers,
                "cpu_count": cpus,
                "commit": commit,
                "started": started,
                "ndcl": str(ndcl) if ndcl else None,
                "params": {
                    "threshold": args.threshold,
                    "num_perm": args.num_perm,
                    "ngram": args.ngram,
                },
                "targets": {
                    "end_to_end_docs_per_s_ratio_min": TARGET_END_TO_END_RATIO,
                    "cpu_s_ratio_max_vs_rensa": 1.0,
                    "signature_docs_per_s_per_core_ratio_min": TARGET_SIGNATURE_PER_CORE_RATIO,
                    "signature_docs_per_s_per_core_min": TARGET_SIGNATURE_DOCS_PER_CPU_S,
                    "peak_rss_gib_all_shards_max": TARGET_PEAK_RSS_GIB_ALL,
                },
            },
            "datasets": results,
            "failures": failures,
        },
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
