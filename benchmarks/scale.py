"""Wall time, docs/s and peak memory of ``ndcl`` as the corpus grows (issue 11).

What it runs: ``ndcl dedup`` on the scale corpora of ``scripts/make_scale_corpus.py`` (a size-N
corpus is the first ceil(N / 50,000) shards; default sizes 100k, 200k, 450k and 900k), and with
``--workflows`` also ``ndcl run --workflow nd_cl`` and ``cl_nd`` (``--kmeans-backend local``,
default at 450k). Each command runs as a subprocess, alone, measured from outside:

- wall s: the whole command, interpreter start and pipeline construction included;
- docs/s: documents read (``OUT/summary.json["read"]``) / wall s;
- CPU s: user + system CPU of the process and every descendant it waited for
  (``getrusage(RUSAGE_CHILDREN)`` before and after);
- peak RSS: the largest sum of the RSS of the process and all its descendants, sampled every
  0.2 s (``benchmarks._measure.tree_rss``). A run whose tree passes ``--max-rss-gib``
  (default 20) is killed with its descendants and reported as "killed at N GiB"; larger sizes
  of the same command are then not run;
- growth B/doc: (peak RSS - peak RSS at the previous size) / (extra documents).

The code measured is chosen by where Python imports it from: every command is
``<this venv's python> -c 'from beam_pipeline.cli import main; ...'`` with ``cwd`` and
``PYTHONPATH`` at a source tree, the repository itself ("current") or, with ``--baseline-ref
REF``, a temporary ``git worktree`` of REF ("baseline", removed afterwards; ``--baseline-code
DIR`` uses an existing checkout instead). The script prints where ``beam_pipeline``,
``transforms`` and ``runners`` come from for each tree, and stops if that is not the tree meant.
With both trees it alternates baseline and current size by size and prints them side by side
with current/baseline ratios; ``--baseline-only`` measures the baseline alone.

Each run records itself in its own SQLite database under the scratch folder
(``--db-url sqlite:///<scratch>/runs.db``), so nothing lands in the working directory. Run
outputs go to ``--out`` (kept) or a temporary folder (each run's output deleted once measured).

Targets (issue 11), each reported PASS / FAIL / not run, for each tree measured:

- ``ndcl dedup`` peak RSS <= 1.5 GiB at 450k and <= 2.0 GiB at 900k;
- growth <= 1,000 bytes per extra document from 450k to 900k;
- docs/s at 900k >= 0.9 x docs/s at 450k;
- ``nd_cl`` and ``cl_nd`` peak RSS <= 2.5 GiB at 450k;
- a completed run of 1,000,000 documents or more (``--sizes ...,all``).

Results: a table on standard output and in ``--results`` (default
``benchmarks/results-scale.txt``), the same as JSON beside it (``.json``), and a PNG beside it
(``.png``: peak RSS and docs/s against documents, one line per tree and command). The exit
status is 0 when every run completed or was killed at the memory cap (failed targets are
reported, not errors), 1 when a run crashed, and 0 with "skipped" when there is no corpus and
``../shared/data`` is absent.

Run from the repository root::

    .venv/bin/python benchmarks/scale.py                                   # dedup, 4 sizes
    .venv/bin/python benchmarks/scale.py --workflows --baseline-ref 37afd8f
    .venv/bin/python benchmarks/scale.py --baseline-only --baseline-ref 37afd8f --workflows \\
        --results benchmarks/results-scale-baseline.txt
    .venv/bin/python benchmarks/scale.py --sizes 100k --workflows 100k     # a quick check
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import psutil

try:
    from benchmarks._measure import TAIL_CHARS, _kill_tree, tree_rss
    from benchmarks._measure import baseline_tree as measured_baseline_tree
except ImportError:  # run as a script: benchmarks/ itself is on sys.path
    from _measure import TAIL_CHARS, _kill_tree, tree_rss  # type: ignore[no-redef]
    from _measure import baseline_tree as measured_baseline_tree  # type: ignore[no-redef]

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
CORPUS_SCRIPT = REPO_ROOT / "scripts" / "make_scale_corpus.py"
DEFAULT_CORPUS = REPO_ROOT / ".ndcl" / "scale"
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data"
DEFAULT_RESULTS = BENCH_DIR / "results-scale.txt"
DEFAULT_SIZES = "100k,200k,450k,900k"
DEFAULT_WORKFLOW_SIZES = "450k"
WORKFLOWS = ("nd_cl", "cl_nd")
GIB = 1 << 30
SAMPLE_INTERVAL_S = 0.2

# Issue 11.
TARGET_DEDUP_RSS_GIB = {"450k": 1.5, "900k": 2.0}
TARGET_GROWTH_BYTES_PER_DOC = 1000
TARGET_DOCS_PER_S_RATIO = 0.9
TARGET_WORKFLOW_RSS_GIB = 2.5
TARGET_WORKFLOW_SIZE = "450k"
TARGET_BIG_RUN_DOCS = 1_000_000

# Imports the CLI of whatever tree is first on sys.path (cwd/PYTHONPATH), not the installed one.
CLI_LAUNCHER = "import sys; from beam_pipeline.cli import main; sys.exit(main())"
WHERE_FROM = ("import json, os, beam_pipeline, transforms, runners; print(json.dumps("
              "{m.__name__: os.path.dirname(os.path.dirname(os.path.abspath(m.__file__))) "
              "for m in (beam_pipeline, transforms, runners)}))")


class Crashed(Exception):
    """A run exited non-zero (not killed by us) or left no summary."""


# --------------------------------------------------------------------------- sizes and corpus


def parse_size(text: str) -> tuple[str, int | None]:
    """``"450k"`` → ("450k", 450000), ``"1m"`` → ("1m", 1000000), ``"all"`` → ("all", None)."""
    label = text.strip().lower()
    if label == "all":
        return label, None
    scale = {"k": 1000, "m": 1_000_000}.get(label[-1:], 1)
    number = label[:-1] if scale > 1 else label
    try:
        value = int(float(number) * scale)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 100k, 1m, all)") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"size must be positive: {text!r}")
    return label, value


def parse_sizes(text: str) -> list[tuple[str, int | None]]:
    sizes = [parse_size(part) for part in text.split(",") if part.strip()]
    return sorted(sizes, key=lambda size: math.inf if size[1] is None else size[1])


def load_corpus(corpus: Path, data: Path) -> dict[str, Any] | None:
    """The corpus manifest, building the corpus first when it is absent or incomplete; None
    when it cannot be built because the shared data is absent."""
    manifest_path = corpus / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        manifest = None
    if manifest is None or not manifest.get("complete"):
        if not data.is_dir():
            return None
        print(f"building the scale corpus in {corpus} (scripts/make_scale_corpus.py)",
              file=sys.stderr, flush=True)
        subprocess.run([sys.executable, str(CORPUS_SCRIPT), str(corpus), "--data", str(data)],
                       check=True, stdout=sys.stderr)
        manifest = json.loads(manifest_path.read_text())
    return manifest


def corpus_files(corpus: Path, manifest: dict[str, Any], size: int | None
                 ) -> tuple[list[Path], int]:
    """The first ceil(size / shard size) shards (all for None) and their document count."""
    shards = manifest["shards"]
    count = len(shards) if size is None else math.ceil(size / manifest["settings"]["shard_size"])
    if count > len(shards):
        total = sum(s["documents"] for s in shards)
        raise SystemExit(f"error: size {size:,} needs {count} shards; {corpus} has "
                         f"{len(shards)} ({total:,} documents)")
    chosen = shards[:count]
    return [corpus / s["file"] for s in chosen], sum(s["documents"] for s in chosen)


def warm_page_cache(files: Sequence[Path]) -> None:
    for path in files:
        with path.open("rb") as stream:
            while stream.read(1 << 24):
                pass


# --------------------------------------------------------------------------- code trees


def baseline_tree(args: argparse.Namespace, scratch: Path
                  ) -> AbstractContextManager[tuple[Path, str] | None]:
    """The baseline tree of ``--baseline-code`` / ``--baseline-ref`` (``_measure``)."""
    return measured_baseline_tree(REPO_ROOT, args.baseline_ref, args.baseline_code, scratch)


def git_describe(tree: Path) -> str:
    """``<commit>`` of ``tree``, with ``+ N uncommitted changes`` when it has any."""
    head = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short=12", "HEAD"],
                          capture_output=True, text=True)
    if head.returncode != 0:
        return "not a git checkout"
    status = subprocess.run(["git", "-C", str(tree), "status", "--porcelain",
                             "--untracked-files=no"], capture_output=True, text=True)
    changed = len(status.stdout.splitlines())
    return head.stdout.strip() + (f" + {changed} uncommitted changes" if changed else "")


def tree_env(tree: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(tree), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))])
    env.pop("NDCL_DB_URL", None)
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # leave no __pycache__ in a temporary worktree
    return env


def check_imports(name: str, tree: Path) -> dict[str, str]:
    """Where ``beam_pipeline``, ``transforms`` and ``runners`` come from under ``tree``'s
    cwd/PYTHONPATH; exits when any is not ``tree``."""
    done = subprocess.run([sys.executable, "-c", WHERE_FROM], cwd=tree, env=tree_env(tree),
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"error: cannot import the {name} code from {tree}:\n{done.stderr}")
    where = json.loads(done.stdout)
    for module, folder in where.items():
        print(f"{name}: {module} imported from {folder}", file=sys.stderr)
    wrong = {m: f for m, f in where.items() if Path(f).resolve() != tree.resolve()}
    if wrong:
        raise SystemExit(f"error: the {name} run would import {wrong}, not {tree}")
    return where


# --------------------------------------------------------------------------- one measured run


def run_capped(cmd: Sequence[str], cwd: Path, env: dict[str, str], max_rss: int,
               timeout: float | None, log: Path) -> dict[str, Any]:
    """Run ``cmd``, sampling its process tree's summed RSS every 0.2 s; kill the tree when it
    passes ``max_rss`` bytes or ``timeout`` seconds. Output goes to ``log``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with log.open("wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(list(cmd), cwd=cwd, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
        root = psutil.Process(proc.pid)
        peak = processes = samples = 0
        killed: str | None = None
        while proc.poll() is None:
            rss, counted = tree_rss(root)
            peak, processes, samples = max(peak, rss), max(processes, counted), samples + 1
            if rss > max_rss:
                killed = f"killed at {rss / GIB:.1f} GiB"
            elif timeout is not None and time.perf_counter() - start > timeout:
                killed = f"killed after {timeout:.0f} s"
            if killed:
                _kill_tree(root)
                proc.wait()
                break
            try:
                proc.wait(timeout=SAMPLE_INTERVAL_S)
            except subprocess.TimeoutExpired:
                pass
        wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"returncode": proc.returncode, "wall_s": wall, "cpu_s": cpu,
            "peak_rss_bytes": peak, "peak_processes": processes, "samples": samples,
            "killed": killed,
            "log_tail": log.read_bytes()[-TAIL_CHARS:].decode("utf-8", errors="replace")}


def command_for(kind: str, files: Sequence[Path], output: Path, db_url: str,
                args: argparse.Namespace) -> list[str]:
    """The command line (``python -c LAUNCHER ...``) for ``dedup``, ``nd_cl`` or ``cl_nd``."""
    head = [sys.executable, "-c", CLI_LAUNCHER, "--db-url", db_url]
    inputs = ["--input", *map(str, files), "--output", str(output)]
    if kind == "dedup":
        return [*head, "dedup", *inputs, *args.extra]
    return [*head, "run", "--workflow", kind, *inputs, "--kmeans-backend", "local",
            *args.extra, *args.workflow_extra]


def measure_one(code: str, tree: Path, kind: str, label: str, files: list[Path], docs: int,
                scratch: Path, args: argparse.Namespace) -> dict[str, Any]:
    run_dir = scratch / code / f"{kind}-{label}"
    shutil.rmtree(run_dir, ignore_errors=True)  # a reused --out
    run_dir.mkdir(parents=True)
    output = run_dir / "out"
    cmd = command_for(kind, files, output, f"sqlite:///{run_dir / 'runs.db'}", args)
    print(f"[{code}] {kind} {label} ({docs:,} documents) ...", file=sys.stderr, flush=True)
    measured = run_capped(cmd, tree, tree_env(tree), int(args.max_rss_gib * GIB),
                          args.timeout_s, run_dir / "log.txt")
    row: dict[str, Any] = {"code": code, "command": kind, "size": label, "documents": docs,
                           "files": len(files), **measured,
                           "cmd": shlex.join([*cmd[:1], "-c", "<launcher>", *cmd[3:]])}
    if measured["killed"] is None:
        if measured["returncode"] != 0:
            raise Crashed(f"[{code}] {kind} {label}: exit status {measured['returncode']}\n"
                          f"{measured['log_tail'][-2000:]}")
        try:
            summary = json.loads((output / "summary.json").read_text())
        except (OSError, ValueError) as error:
            raise Crashed(f"[{code}] {kind} {label}: no summary.json ({error})") from error
        row.update(read=summary["read"], kept=summary.get("kept"),
                   duplicates=summary.get("duplicates"), rejected=summary.get("rejected"),
                   inner_wall_s=summary.get("wall_seconds"),
                   stage_seconds=summary.get("stage_seconds"),
                   docs_per_s=summary["read"] / measured["wall_s"])
        if summary["read"] != docs:
            row["note"] = f"read {summary['read']:,} of {docs:,} documents"
    status = measured["killed"] or f"{measured['wall_s']:.1f} s"
    print(f"[{code}] {kind} {label}: {status}, peak RSS {measured['peak_rss_bytes'] / GIB:.2f} "
          f"GiB, CPU {measured['cpu_s']:.1f} s", file=sys.stderr, flush=True)
    if args.out is None:
        shutil.rmtree(output, ignore_errors=True)
    return row


# --------------------------------------------------------------------------- analysis


def completed(row: dict[str, Any] | None) -> bool:
    return row is not None and row.get("killed") is None and "read" in row


def add_growth(rows: list[dict[str, Any]]) -> None:
    """``growth_bytes_per_doc`` vs the previous size of the same code and command."""
    previous: dict[tuple[str, str], dict[str, Any]] = {}
    for row in sorted(rows, key=lambda r: (r["code"], r["command"], r["documents"])):
        key = (row["code"], row["command"])
        before = previous.get(key)
        if completed(row) and completed(before) and row["documents"] > before["documents"]:
            row["growth_bytes_per_doc"] = ((row["peak_rss_bytes"] - before["peak_rss_bytes"])
                                           / (row["documents"] - before["documents"]))
            row["growth_from"] = before["size"]
        if completed(row):
            previous[key] = row


def find(rows: list[dict[str, Any]], code: str, command: str, size: str
         ) -> dict[str, Any] | None:
    return next((r for r in rows if (r["code"], r["command"], r["size"]) == (code, command, size)),
                None)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def evaluate_targets(rows: list[dict[str, Any]], code: str) -> list[dict[str, Any]]:
    """Issue 11's targets for one tree: ``{"target", "value", "verdict"}`` each."""
    out: list[dict[str, Any]] = []

    def rss_target(command: str, size: str, limit: float) -> None:
        row = find(rows, code, command, size)
        name = f"{command} peak RSS at {size} <= {limit} GiB"
        if row is None:
            out.append({"target": name, "value": "not run", "verdict": "-"})
        elif row.get("killed"):
            out.append({"target": name, "value": row["killed"], "verdict": "FAIL"})
        else:
            gib = row["peak_rss_bytes"] / GIB
            out.append({"target": name, "value": f"{gib:.2f} GiB",
                        "verdict": verdict(gib <= limit)})

    for size, limit in TARGET_DEDUP_RSS_GIB.items():
        rss_target("dedup", size, limit)
    small, large = find(rows, code, "dedup", "450k"), find(rows, code, "dedup", "900k")
    name = f"dedup RSS growth 450k->900k <= {TARGET_GROWTH_BYTES_PER_DOC:,} B/doc"
    if completed(small) and completed(large):
        growth = ((large["peak_rss_bytes"] - small["peak_rss_bytes"])
                  / (large["documents"] - small["documents"]))
        out.append({"target": name, "value": f"{growth:,.0f} B/doc",
                    "verdict": verdict(growth <= TARGET_GROWTH_BYTES_PER_DOC)})
        ratio = large["docs_per_s"] / small["docs_per_s"]
        out.append({"target": f"dedup docs/s 900k / 450k >= {TARGET_DOCS_PER_S_RATIO}",
                    "value": f"{ratio:.2f}", "verdict": verdict(ratio >= TARGET_DOCS_PER_S_RATIO)})
    else:
        value = "killed" if (small or {}).get("killed") or (large or {}).get("killed") \
            else "not run"
        verdict_text = "FAIL" if value == "killed" else "-"
        out.append({"target": name, "value": value, "verdict": verdict_text})
        out.append({"target": f"dedup docs/s 900k / 450k >= {TARGET_DOCS_PER_S_RATIO}",
                    "value": value, "verdict": verdict_text})
    for workflow in WORKFLOWS:
        rss_target(workflow, TARGET_WORKFLOW_SIZE, TARGET_WORKFLOW_RSS_GIB)
    big = [r for r in rows if r["code"] == code and r["documents"] >= TARGET_BIG_RUN_DOCS]
    name = f"a run of >= {TARGET_BIG_RUN_DOCS:,} documents completes"
    if not big:
        out.append({"target": name, "value": "not run", "verdict": "-"})
    else:
        done = [r for r in big if completed(r)]
        value = (", ".join(f"{r['command']} {r['documents']:,}" for r in done) if done
                 else "; ".join(f"{r['command']} {r.get('killed') or 'failed'}" for r in big))
        out.append({"target": name, "value": value, "verdict": verdict(bool(done))})
    return out


# --------------------------------------------------------------------------- report


def fmt_row(row: dict[str, Any]) -> str:
    rss = row["peak_rss_bytes"] / GIB
    if row.get("killed"):
        return (f"{row['code']:<10}{row['command']:<8}{row['size']:>6}{row['documents']:>11,}"
                f"{'':>9}{'':>9}{row['cpu_s']:>9.0f}{rss:>10.2f}{'':>13}   {row['killed']}")
    growth = row.get("growth_bytes_per_doc")
    growth_text = f"{growth:,.0f}" if growth is not None else "-"
    note = f"   {row['note']}" if row.get("note") else ""
    return (f"{row['code']:<10}{row['command']:<8}{row['size']:>6}{row['documents']:>11,}"
            f"{row['wall_s']:>9.1f}{row['docs_per_s']:>9,.0f}{row['cpu_s']:>9.0f}{rss:>10.2f}"
            f"{growth_text:>13}{note}")


def _cell(row: dict[str, Any], key: str, spec: str) -> str:
    return "killed" if row.get("killed") else format(row[key], spec)


def _ratio(base: dict[str, Any], cur: dict[str, Any], key: str) -> str:
    if not (completed(base) and completed(cur)) or not base[key]:
        return "-"
    return f"{cur[key] / base[key]:.2f}"


def side_by_side(rows: list[dict[str, Any]]) -> list[str]:
    """Baseline and current per command and size, with current / baseline ratios."""
    header = (f"{'command':<8}{'size':>6}{'base s':>9}{'cur s':>9}{'x':>7}"
              f"{'base d/s':>10}{'cur d/s':>10}{'x':>7}{'base GiB':>10}{'cur GiB':>9}{'x':>7}")
    lines = [header, "-" * len(header)]
    keys = sorted({(r["command"], r["size"], r["documents"]) for r in rows},
                  key=lambda k: (k[0] != "dedup", k[0], k[2]))
    for command, size, _ in keys:
        base, cur = find(rows, "baseline", command, size), find(rows, "current", command, size)
        if base is None or cur is None:
            continue

        lines.append(
            f"{command:<8}{size:>6}{_cell(base, 'wall_s', '.1f'):>9}"
            f"{_cell(cur, 'wall_s', '.1f'):>9}{_ratio(base, cur, 'wall_s'):>7}"
            f"{_cell(base, 'docs_per_s', ',.0f'):>10}{_cell(cur, 'docs_per_s', ',.0f'):>10}"
            f"{_ratio(base, cur, 'docs_per_s'):>7}"
            f"{base['peak_rss_bytes'] / GIB:>10.2f}{cur['peak_rss_bytes'] / GIB:>9.2f}"
            f"{cur['peak_rss_bytes'] / base['peak_rss_bytes']:>7.2f}")
    return lines


def format_report(rows: list[dict[str, Any]], targets: dict[str, list[dict[str, Any]]],
                  trees: dict[str, str], failures: list[str]) -> str:
    header = (f"{'code':<10}{'command':<8}{'size':>6}{'documents':>11}{'wall s':>9}"
              f"{'docs/s':>9}{'CPU s':>9}{'peak GiB':>10}{'growth B/doc':>13}")
    lines = [f"{name}: {where}" for name, where in trees.items()]
    lines += ["", header, "-" * len(header)]
    order = {"baseline": 0, "current": 1}
    for row in sorted(rows, key=lambda r: (order.get(r["code"], 2), r["command"] != "dedup",
                                           r["command"], r["documents"])):
        lines.append(fmt_row(row))
    for code in trees:
        small, large = find(rows, code, "dedup", "450k"), find(rows, code, "dedup", "900k")
        if completed(small) and completed(large):
            lines.append(f"{code}: dedup docs/s 900k / 450k = "
                         f"{large['docs_per_s'] / small['docs_per_s']:.2f}")
    if len(trees) > 1:
        lines += ["", "current / baseline:", *side_by_side(rows)]
    for code, rows_of_code in targets.items():
        lines += ["", f"targets ({code}):"]
        for target in rows_of_code:
            lines.append(f"  {target['target']:<52}{target['value']:>26}   {target['verdict']}")
    for failure in failures:
        lines += ["", f"FAILED {failure.splitlines()[0]}"]
    lines += ["", "(wall s: the whole command; docs/s = documents read / wall s; CPU s: user + "
              "system of the process tree; peak GiB: largest summed RSS of the process tree, "
              f"sampled every {SAMPLE_INTERVAL_S} s; growth B/doc: peak RSS increase per extra "
              "document vs the previous size)"]
    return "\n".join(lines)


def draw(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_rss, ax_rate) = plt.subplots(1, 2, figsize=(12, 4.8))
    styles = {"baseline": {"linestyle": "--", "color": "tab:gray"},
              "current": {"linestyle": "-", "color": "tab:blue"}}
    markers = {"dedup": "o", "nd_cl": "s", "cl_nd": "^"}
    workflow_colors = {("baseline", "nd_cl"): "tab:brown", ("baseline", "cl_nd"): "tab:olive",
                       ("current", "nd_cl"): "tab:green", ("current", "cl_nd"): "tab:purple"}
    groups = sorted({(r["code"], r["command"]) for r in rows})
    for code, command in groups:
        series = sorted((r for r in rows if (r["code"], r["command"]) == (code, command)),
                        key=lambda r: r["documents"])
        style = dict(styles.get(code, {"linestyle": ":", "color": "black"}))
        if command != "dedup":
            style["color"] = workflow_colors.get((code, command), "black")
        label = f"{code} {command}"
        done = [r for r in series if completed(r)]
        ax_rss.plot([r["documents"] for r in done], [r["peak_rss_bytes"] / GIB for r in done],
                    marker=markers.get(command, "o"), label=label, **style)
        ax_rate.plot([r["documents"] for r in done], [r["docs_per_s"] for r in done],
                     marker=markers.get(command, "o"), label=label, **style)
        for row in series:
            if row.get("killed"):
                ax_rss.scatter([row["documents"]], [row["peak_rss_bytes"] / GIB], marker="x",
                               s=80, color=style["color"])
                ax_rss.annotate(row["killed"], (row["documents"], row["peak_rss_bytes"] / GIB),
                                textcoords="offset points", xytext=(-40, 8), fontsize=8)
    target_x = [450_000, 900_000]
    ax_rss.scatter(target_x, [TARGET_DEDUP_RSS_GIB["450k"], TARGET_DEDUP_RSS_GIB["900k"]],
                   marker="_", s=400, linewidths=3, color="tab:red", zorder=5,
                   label="dedup target")
    ax_rss.scatter([450_000], [TARGET_WORKFLOW_RSS_GIB], marker="_", s=400, linewidths=3,
                   color="tab:orange", zorder=5, label="nd_cl / cl_nd target")
    ax_rss.set_title("Peak RSS of the process tree")
    ax_rss.set_ylabel("GiB")
    ax_rate.set_title("Throughput (documents read / wall s)")
    ax_rate.set_ylabel("docs/s")
    for axis in (ax_rss, ax_rate):
        axis.set_xlabel("documents")
        axis.set_xlim(left=0)
        axis.set_ylim(bottom=0)
        axis.grid(True, alpha=0.3)
        axis.xaxis.set_major_formatter(
            matplotlib.ticker.FuncFormatter(lambda x, _: f"{x / 1000:.0f}k"))
        axis.legend(fontsize=8)
    fig.suptitle("ndcl at scale (scale corpora of scripts/make_scale_corpus.py)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS,
                        help="scale corpus folder (default .ndcl/scale; built when absent)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="shared data to build the corpus from (default ../shared/data)")
    parser.add_argument("--sizes", type=parse_sizes, default=parse_sizes(DEFAULT_SIZES),
                        help=f"ndcl dedup sizes, e.g. 100k,1m,all (default {DEFAULT_SIZES}; "
                        "'' for none)")
    parser.add_argument("--workflows", nargs="?", type=parse_sizes, default=[],
                        const=parse_sizes(DEFAULT_WORKFLOW_SIZES), metavar="SIZES",
                        help="also run nd_cl and cl_nd (--kmeans-backend local) at these sizes "
                        f"(default {DEFAULT_WORKFLOW_SIZES})")
    parser.add_argument("--baseline-ref", help="also measure the code of this git ref "
                        "(a temporary git worktree)")
    parser.add_argument("--baseline-code", type=Path,
                        help="also measure the code of this existing checkout")
    parser.add_argument("--baseline-only", action="store_true",
                        help="measure only the baseline (needs --baseline-ref or --baseline-code)")
    parser.add_argument("--out", type=Path, help="run outputs here (kept; default: a temporary "
                        "folder, removed)")
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS,
                        help="report file (default benchmarks/results-scale.txt); the JSON and "
                        "PNG go beside it (.json, .png)")
    parser.add_argument("--max-rss-gib", type=float, default=20.0,
                        help="kill a run whose process tree passes this RSS (default 20)")
    parser.add_argument("--timeout-s", type=float, help="kill a run after this many seconds")
    parser.add_argument("--extra", type=shlex.split, default=[],
                        help="more ndcl flags for every run, one string (e.g. '--tokenizer ascii')")
    parser.add_argument("--workflow-extra", type=shlex.split, default=[],
                        help="more flags for the nd_cl / cl_nd runs only (e.g. '--k1 4 --k2 2')")
    args = parser.parse_args(argv)
    if args.baseline_ref and args.baseline_code:
        parser.error("give --baseline-ref or --baseline-code, not both")
    if args.baseline_only and not (args.baseline_ref or args.baseline_code):
        parser.error("--baseline-only needs --baseline-ref or --baseline-code")
    if not args.sizes and not args.workflows:
        parser.error("nothing to run: no --sizes and no --workflows")
    return args


def plan(args: argparse.Namespace) -> list[tuple[str, str, int | None]]:
    """``(command, size label, size)`` in the order they run: by size, dedup first."""
    runs = [("dedup", label, size) for label, size in args.sizes]
    runs += [(workflow, label, size) for label, size in args.workflows for workflow in WORKFLOWS]
    return sorted(runs, key=lambda run: (math.inf if run[2] is None else run[2],
                                         run[0] != "dedup", run[0]))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    manifest = load_corpus(args.corpus.resolve(), args.data.resolve())
    if manifest is None:
        print(f"skipped: no scale corpus at {args.corpus} and no shared data at {args.data}")
        return 0
    corpus = args.corpus.resolve()
    scratch = (args.out or Path(tempfile.mkdtemp(prefix="ndcl-scale-"))).resolve()
    scratch.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    failures: list[str] = []
    trees: dict[str, str] = {}
    try:
        with baseline_tree(args, scratch) as baseline:
            codes: list[tuple[str, Path]] = []
            if baseline is not None:
                codes.append(("baseline", baseline[0]))
                trees["baseline"] = baseline[1]
            if not args.baseline_only:
                codes.append(("current", REPO_ROOT))
                trees["current"] = f"{REPO_ROOT} ({git_describe(REPO_ROOT)})"
            imports = {name: check_imports(name, tree) for name, tree in codes}
            skip: dict[tuple[str, str], str] = {}
            for kind, label, size in plan(args):
                files, docs = corpus_files(corpus, manifest, size)
                warm_page_cache(files)
                for code, tree in codes:
                    if (code, kind) in skip:
                        print(f"[{code}] {kind} {label}: not run ({skip[code, kind]} at a "
                              "smaller size)", file=sys.stderr)
                        continue
                    try:
                        row = measure_one(code, tree, kind, label, files, docs, scratch, args)
                    except Crashed as error:
                        failures.append(str(error))
                        print(f"FAILED {error}", file=sys.stderr)
                        skip[code, kind] = "crashed"
                        continue
                    rows.append(row)
                    if row.get("killed"):
                        skip[code, kind] = row["killed"]
    finally:
        if args.out is None:
            shutil.rmtree(scratch, ignore_errors=True)
    add_growth(rows)
    targets = {code: evaluate_targets(rows, code) for code in trees}
    report = format_report(rows, targets, trees, failures)
    print(report)
    results = args.results
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(report + "\n")
    results.with_suffix(".json").write_text(json.dumps({
        "config": {"corpus": str(corpus), "corpus_documents": manifest["documents"],
                   "shard_size": manifest["settings"]["shard_size"],
                   "variants": manifest["settings"]["variants"],
                   "sizes": [label for label, _ in args.sizes],
                   "workflow_sizes": [label for label, _ in args.workflows],
                   "extra": args.extra, "workflow_extra": args.workflow_extra,
                   "max_rss_gib": args.max_rss_gib,
                   "cpu_count": os.cpu_count(), "python": sys.executable,
                   "trees": trees, "imports": imports,
                   "recorded": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
        "runs": rows, "targets": targets, "failures": failures}, indent=2) + "\n")
    if rows:
        draw(rows, results.with_suffix(".png"))
    print(f"\nwrote {results}, {results.with_suffix('.json').name}"
          f"{', ' + results.with_suffix('.png').name if rows else ''}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
