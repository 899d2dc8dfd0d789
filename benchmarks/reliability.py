"""Reliability table: bad inputs tried, faults injected, records lost, outputs identical.

Every case runs the ``ndcl`` command line in a temporary folder, on the first 400 documents of
the bundled demo corpus (given explicit ids ``demo-N``, split over ``a.json``, ``b.json.gz``
and ``c.json``, ``--batch-size 64`` so each file has several batches), and is checked
independently of the pipeline's own summary:

- records in: counted from the input files here (lines of each JSON-lines file, a
  truncated gzip's unreadable rest counting as one record, Parquet rows);
- accounted: rows of ``kept/`` + ``duplicates/`` + lines of ``rejected/`` in the committed
  output; lost = records in - accounted (must be 0), and the summary's ``read`` must agree;
- identical: bad input: the demo documents' ``kept``/``duplicates`` rows (sorted by id) equal
  those of the clean run, i.e. the rest of the corpus is processed as if the bad input were
  not there; determinism and faults: the output part files are byte-identical to the clean
  run's (the ``nd_cl`` ones to a clean ``nd_cl`` run).

Kinds of case: bad input (one per reject reason and more: a 50 MB line, NUL bytes, repeated
ids, mixed plain/gzip files in one glob, an empty file, a pattern that matches nothing), bound
(the document and bucket caps, counted in the summary),
faults (injected through ``NDCL_FAULTS``, see ``transforms/faults.py``: a bundle failing after
its side effects, with and without a retrying runner; the process killed mid-write, with and
without a finished earlier output; the Ray K-Means actor killed between fit and predict, with
and without a restart), output safety (the input's own folder, a plain file, an earlier
output holding a file NDCL did not write, an input inside OUT, OUT under a file: each must
exit 2 before any work with one line and leave the user's files byte for byte as they were
(``identical``), nothing ``*.ndcl-old``/``*.ndcl-staging`` beside them; a rerun over an
earlier output), usage (a misspelt flag, the corpus piped into ``--input -``, a binary file as
the only input: exit 4, every line in ``rejected/``) and determinism (2 and 3 worker
processes, the portable runner, input files in reverse order, an ``nd_cl`` rerun).

    .venv/bin/python benchmarks/reliability.py [--no-ray] [--keep DIR]

Prints the table; exit status 1 when any record is lost, any output differs or any case does
not end as expected. About 5 minutes on two cores (``--no-ray`` skips the two Ray cases).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "data" / "demo" / "c4-demo.00000-of-00001.json.gz"
DOCS = 400
BATCH = ["--batch-size", "64"]
ND_CL = ["--workflow", "nd_cl", "--k1", "4", "--k2", "2"]
BIG_LINE_BYTES = 50 * 2**20


@dataclass
class Case:
    name: str
    kind: str
    records_in: int | None = None
    accounted: int | None = None
    identical: bool | None = None
    result: str = ""
    ok: bool = False

    @property
    def lost(self) -> int | None:
        if self.records_in is None or self.accounted is None:
            return None
        return self.records_in - self.accounted


# --------------------------------------------------------------------------------------------
# Inputs, runs and outputs
# --------------------------------------------------------------------------------------------


def demo_lines() -> list[bytes]:
    with gzip.open(DEMO, "rb") as handle:
        records = [json.loads(next(handle)) for _ in range(DOCS)]
    return [json.dumps({"id": f"demo-{i:04d}", **r}).encode() for i, r in enumerate(records)]


def write_lines(path: Path, lines: list[bytes]) -> None:
    body = b"".join(line + b"\n" for line in lines)
    path.write_bytes(gzip.compress(body, mtime=0) if path.suffix == ".gz" else body)


def write_corpus(folder: Path, extra: dict[str, list[bytes]] | None = None) -> Path:
    """The demo documents in three files; ``extra`` lines are inserted in the middle of the
    named file. Returns the folder (the input pattern is ``folder/*``)."""
    folder.mkdir(parents=True)
    lines = demo_lines()
    third = len(lines) // 3
    parts = {"a.json": lines[:third], "b.json.gz": lines[third: 2 * third],
             "c.json": lines[2 * third:]}
    for name, inserted in (extra or {}).items():
        if name in parts:
            middle = len(parts[name]) // 2
            parts[name] = parts[name][:middle] + inserted + parts[name][middle:]
        else:
            parts[name] = inserted
    for name, body in parts.items():
        write_lines(folder / name, body)
    return folder


def count_records(files: list[Path]) -> int:
    """Records in the input, counted without the pipeline's reader: lines (an unterminated
    last line too), one more for the unreadable rest of a damaged gzip; Parquet rows."""
    total = 0
    for path in files:
        if path.suffix == ".parquet":
            total += pq.ParquetFile(path).metadata.num_rows
            continue
        opener: Callable[..., Any] = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as handle:
            try:
                for _ in handle:
                    total += 1
            except (OSError, EOFError):
                total += 1
    return total


def ndcl(args: list[str], env: dict[str, str] | None = None, timeout: float = 600,
         python: list[str] | None = None) -> subprocess.CompletedProcess:
    cmd = python or [sys.executable, "-m", "beam_pipeline.cli", "-q", *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def output_files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes()
            for sub in ("kept", "duplicates", "rejected") if (out / sub).is_dir()
            for p in sorted((out / sub).iterdir())}


def output_rows(out: Path) -> dict[str, list[dict]]:
    rows = {}
    for sub in ("kept", "duplicates"):
        table = pq.read_table(out / sub).to_pylist() if (out / sub).is_dir() else []
        rows[sub] = sorted(table, key=lambda r: r["id"])
    rows["rejected"] = [json.loads(line) for f in sorted((out / "rejected").glob("*.jsonl"))
                        for line in f.read_text().splitlines()] if (out / "rejected").is_dir() \
        else []
    return rows


def accounted(out: Path) -> int:
    """Rows in the committed output; the summary must say the same."""
    rows = output_rows(out)
    total = len(rows["kept"]) + len(rows["duplicates"]) + len(rows["rejected"])
    summary = json.loads((out / "summary.json").read_text())
    if summary["read"] != total or summary["read"] != (
            summary["kept"] + summary["duplicates"] + summary["rejected"]):
        raise AssertionError(f"{out}: summary {summary['read']} vs {total} output rows")
    if not (out / "_SUCCESS").is_file():
        raise AssertionError(f"{out}: no _SUCCESS")
    return total


def demo_rows(out: Path) -> dict[str, list[dict]]:
    rows = output_rows(out)
    return {sub: [r for r in rows[sub] if str(r["id"]).startswith("demo-")]
            for sub in ("kept", "duplicates")}


def snapshot(path: Path) -> dict[str, bytes]:
    """Every file at ``path`` (a file or a folder) with its bytes."""
    if path.is_file():
        return {"": path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file()}


def reasons(out: Path) -> dict[str, int]:
    return json.loads((out / "summary.json").read_text())["rejected_by_reason"]


def staging(out: Path) -> Path:
    return Path(str(out) + ".ndcl-staging")


# --------------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------------


class Runner:
    def __init__(self, root: Path, ray: bool) -> None:
        self.root = root
        self.ray = ray
        self.cases: list[Case] = []
        self.corpus = write_corpus(root / "corpus")
        self.files = sorted(self.corpus.iterdir())
        self.clean = root / "clean"
        self.dedup(self.clean, [str(self.corpus / "*")])
        self.clean_nd_cl = root / "clean-nd-cl"
        self.run_nd_cl(self.clean_nd_cl, "local")

    # -- runs -----------------------------------------------------------------------------
    def dedup(self, out: Path, inputs: list[str], *extra: str,
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        proc = ndcl(["dedup", "--input", *inputs, "--output", str(out), *BATCH, *extra],
                    env=env)
        if proc.returncode != 0 and env is None:
            raise RuntimeError(f"ndcl dedup failed:\n{proc.stderr[-3000:]}")
        return proc

    def run_nd_cl(self, out: Path, backend: str, env: dict[str, str] | None = None
                  ) -> subprocess.CompletedProcess:
        proc = ndcl(["run", *ND_CL, "--kmeans-backend", backend, "--input",
                     str(self.corpus / "*"), "--output", str(out), *BATCH], env=env)
        if proc.returncode != 0 and env is None:
            raise RuntimeError(f"ndcl run failed:\n{proc.stderr[-3000:]}")
        return proc

    def case(self, name: str, kind: str, check: Callable[[Case], None]) -> None:
        case = Case(name, kind)
        started = time.perf_counter()
        try:
            check(case)
        except Exception as exc:  # a failed check is a row of the table, not a crash
            case.ok = False
            case.result = f"ERROR {type(exc).__name__}: {str(exc).splitlines()[0][:80]}"
        seconds = time.perf_counter() - started
        self.cases.append(case)
        lost = "-" if case.lost is None else case.lost
        print(f"  {case.kind:<12} {case.name:<34} lost={lost} identical={case.identical} "
              f"{'ok' if case.ok else 'FAILED'} ({seconds:.0f} s)", flush=True)

    # -- bad input --------------------------------------------------------------------------
    def bad_input(self, name: str, extra: dict[str, list[bytes]] | None, expected: str,
                  pattern: str = "*", count: int = 1, files: Callable[[Path], None] | None
                  = None, note: str = "") -> None:
        def check(case: Case) -> None:
            folder = write_corpus(self.root / f"in-{name}", extra)
            if files is not None:
                files(folder)
            out = self.root / f"out-{name}"
            self.dedup(out, [str(folder / pattern)])
            case.records_in = count_records(sorted(folder.iterdir()))
            case.accounted = accounted(out)
            case.identical = demo_rows(out) == demo_rows(self.clean)
            got = reasons(out)
            if expected == "kept":
                case.ok = got == reasons(self.clean)
                case.result = note
            else:
                case.ok = got.get(expected, 0) == count
                case.result = f"rejected: {expected}" if case.ok else f"reasons {got}"
            case.ok = case.ok and case.lost == 0 and bool(case.identical)

        self.case(name, "bad input", check)

    def bad_inputs(self) -> None:
        good = json.dumps({"id": "extra-1", "text": "an extra good document"}).encode()
        self.bad_input("non-JSON line", {"a.json": [b"this is not json"]}, "bad_json")
        self.bad_input("JSON that is not an object", {"a.json": [b'["a", 1]', b'"s"', b"7"]},
                       "not_object", count=3)
        self.bad_input("missing text", {"b.json.gz": [b'{"url": "u"}']}, "missing_text")
        self.bad_input("non-string text", {"c.json": [b'{"text": 5}', b'{"text": null}']},
                       "text_not_string", count=2)
        self.bad_input("invalid UTF-8", {"a.json": [b'{"text": "caf\xe9"}']}, "invalid_utf8")
        self.bad_input("raw NUL bytes", {"a.json": [b'{"text": "a\x00b"}',
                                                    b'\x00{\x00"\x00t\x00']}, "nul_byte", count=2)
        self.bad_input("escaped NUL (\\u0000) in text",
                       {"c.json": [b'{"id": "nul-1", "text": "a \\u0000 b"}']}, "kept",
                       note="kept: a NUL character is data")
        self.bad_input("lone surrogate escape", {"b.json.gz": [b'{"text": "\\ud800"}']},
                       "invalid_unicode")
        self.bad_input("id neither string nor int", {"c.json": [b'{"id": 1.5, "text": "t"}']},
                       "bad_id")
        self.bad_input("blank line", {"a.json": [b"   "]}, "blank_line")
        self.bad_input("50 MB single line",
                       {"b.json.gz": [b'{"text": "' + b"x" * BIG_LINE_BYTES + b'"}']},
                       "too_large")
        self.bad_input("repeated ids (in and across files)",
                       {"a.json": [good, good], "c.json": [
                           json.dumps({"id": "demo-0000", "text": "other text"}).encode()]},
                       "duplicate_id", count=2)
        self.bad_input("empty files", {"d.json": [], "e.json.gz": []}, "kept",
                       note="read, nothing to reject")

        def truncated(folder: Path) -> None:
            body = b"".join(json.dumps({"id": f"t-{i}", "text": f"doc {i} " * 20}).encode()
                            + b"\n" for i in range(500))
            blob = gzip.compress(body)
            (folder / "t.json.gz").write_bytes(blob[: len(blob) // 2])

        self.bad_input("truncated gzip", None, "read_error", files=truncated)

        def parquet(folder: Path) -> None:
            pq.write_table(pa.Table.from_pylist([{"id": "pq-1", "text": "parquet text"},
                                                 {"id": "pq-2", "text": None}]),
                           folder / "p.parquet")

        self.bad_input("Parquet row without text", None, "text_not_string", files=parquet)

        def mixed(case: Case) -> None:
            out = self.root / "out-mixed"
            self.dedup(out, [str(p) for p in reversed(self.files)])
            case.records_in = count_records(self.files)
            case.accounted = accounted(out)
            case.identical = output_files(out) == output_files(self.clean)
            case.ok = case.lost == 0 and case.identical
            case.result = "one glob = explicit list"

        self.case("mixed .json/.json.gz in one glob", "bad input", mixed)

        def no_match(case: Case) -> None:
            pattern = str(self.root / "nothing-*.json")
            out = self.root / "out-nothing"
            proc = ndcl(["run", "--input", pattern, "--output", str(out)], timeout=120)
            case.ok = (proc.returncode == 2 and "matches no file" in proc.stderr
                       and pattern in proc.stderr and not out.exists()
                       and not staging(out).exists())
            case.result = f"exit {proc.returncode} before the job, pattern named"

        self.case("pattern matching nothing", "bad input", no_match)

    def bounds(self) -> None:
        def caps(case: Case) -> None:
            out = self.root / "out-caps"
            self.dedup(out, [str(self.corpus / "*")], "--max-doc-bytes", "3000",
                       "--max-bucket-size", "2")
            summary = json.loads((out / "summary.json").read_text())
            case.records_in = count_records(self.files)
            case.accounted = accounted(out)
            too_large = summary["rejected_by_reason"].get("too_large", 0)
            case.ok = case.lost == 0 and too_large > 0 and summary["buckets_capped"] > 0
            case.result = (f"too_large={too_large}, buckets_capped={summary['buckets_capped']}"
                           f" (members dropped {summary['bucket_members_dropped']})")

        self.case("--max-doc-bytes 3000 --max-bucket-size 2", "bound", caps)

    # -- faults -------------------------------------------------------------------------------
    def faults(self) -> None:
        def retried(case: Case) -> None:
            out = self.root / "out-retried"
            marker = self.root / "marker-retried"
            code = ("import sys; from beam_pipeline.config import DedupConfig; "
                    "from beam_pipeline.run import run_dedup; "
                    f"run_dedup([{str(self.corpus / '*')!r}], {str(out)!r}, "
                    "DedupConfig(batch_size=64), ['--runner=BundleBasedDirectRunner'])")
            proc = ndcl([], env={"NDCL_FAULTS": f"write_fail={marker}"},
                        python=[sys.executable, "-c", code])
            case.records_in = count_records(self.files)
            case.accounted = accounted(out)
            case.identical = output_files(out) == output_files(self.clean)
            case.ok = (proc.returncode == 0 and marker.exists() and case.lost == 0
                       and case.identical)
            case.result = "bundle retried by the runner"

        self.case("bundle fails after writing (retry)", "fault", retried)

        def not_retried(case: Case) -> None:
            out = self.root / "out-failed"
            marker = self.root / "marker-failed"
            failed = self.dedup(out, [str(self.corpus / "*")],
                                env={"NDCL_FAULTS": f"write_fail={marker}"})
            nothing = not out.exists() and not (staging(out) / "_SUCCESS").exists()
            self.dedup(out, [str(self.corpus / "*")])
            case.records_in = count_records(self.files)
            case.accounted = accounted(out)
            case.identical = output_files(out) == output_files(self.clean)
            case.ok = (failed.returncode != 0 and "fault injected at write" in failed.stderr
                       and nothing and case.lost == 0 and case.identical)
            case.result = "run failed, nothing committed; rerun ok"

        self.case("bundle fails, FnApiRunner (no retry)", "fault", not_retried)

        def killed(case: Case) -> None:
            out = self.root / "out-killed"
            self.crash(out, self.root / "marker-kill-1")
            first = not out.exists() and not (staging(out) / "_SUCCESS").exists()
            self.dedup(out, [str(self.corpus / "*")])
            finished = (out / "summary.json").read_text()
            self.crash(out, self.root / "marker-kill-2")
            second = (out / "summary.json").read_text() == finished
            case.records_in = count_records(self.files)
            case.accounted = accounted(out)
            case.identical = output_files(out) == output_files(self.clean)
            case.ok = first and second and case.lost == 0 and case.identical
            case.result = "no OUT / old OUT kept; rerun ok"

        self.case("process SIGKILLed mid-write (x2)", "fault", killed)
        if not self.ray:
            return

        def actor_restarted(case: Case) -> None:
            out = self.root / "out-actor"
            proc = self.run_nd_cl(out, "ray",
                                  env={"NDCL_FAULTS": f"kmeans_kill={self.root / 'k1'}"})
            case.records_in = count_records(self.files)
            case.accounted = accounted(out)
            case.identical = output_files(out) == output_files(self.clean_nd_cl)
            case.ok = (proc.returncode == 0 and "K-Means actor restarted" in proc.stderr
                       and case.lost == 0 and case.identical)
            case.result = "actor restarted, models reloaded"

        self.case("Ray K-Means actor killed", "fault", actor_restarted)

        def actor_gone(case: Case) -> None:
            out = self.root / "out-actor-gone"
            proc = self.run_nd_cl(out, "ray", env={
                "NDCL_FAULTS": f"kmeans_kill_for_good={self.root / 'k2'}"})
            last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""
            # Nothing is committed, so there is no output to count or compare.
            case.ok = (proc.returncode == 3 and not out.exists()
                       and last.startswith("ndcl: K-Means service unavailable"))
            case.result = f"exit {proc.returncode}: service unavailable"

        self.case("Ray K-Means actor killed for good", "fault", actor_gone)

    def crash(self, out: Path, marker: Path) -> None:
        env = {**os.environ, "NDCL_FAULTS": f"write_stall={marker}"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "beam_pipeline.cli", "-q", "dedup", "--input",
             str(self.corpus / "*"), "--output", str(out), *BATCH], cwd=REPO, env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 300
            while not marker.exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the run ended before it could be killed")
                time.sleep(0.05)
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()

    # -- output safety and usage -------------------------------------------------------------
    def refused(self, case: Case, args: list[str], watched: Path, expect: str,
                status: int = 2) -> None:
        """A run that must stop before any work: exit ``status``, one line saying ``expect``,
        ``watched`` (the user's files) byte for byte as before, nothing left beside it."""
        before = snapshot(watched)
        proc = ndcl(args, timeout=120)
        lines = [line for line in proc.stderr.splitlines() if line.startswith("ndcl:")]
        case.identical = snapshot(watched) == before
        left = [p.name for p in watched.parent.iterdir()
                if p.name in (f"{watched.name}.ndcl-old", f"{watched.name}.ndcl-staging")]
        case.ok = (proc.returncode == status and len(lines) == 1 and expect in lines[0]
                   and bool(case.identical) and not left)
        case.result = f"exit {proc.returncode}: {lines[0][6:80] if lines else proc.stderr[-80:]}"

    def output_safety(self) -> None:
        inputs = [str(self.corpus / "*")]

        def input_folder(case: Case) -> None:
            folder = self.root / "safety-corpus"
            shutil.copytree(self.corpus, folder)
            (folder / "notes.txt").write_text("the user's notes")
            self.refused(case, ["dedup", "--input", str(folder / "a.json"), "--output",
                                str(folder)], folder, "not an NDCL output")

        self.case("OUT = the input's folder (+ notes.txt)", "output safety", input_folder)

        def plain_file(case: Case) -> None:
            afile = self.root / "safety-afile"
            afile.write_text("a file of the user's")
            self.refused(case, ["dedup", "--input", *inputs, "--output", str(afile)], afile,
                         "is a file")

        self.case("OUT = an existing plain file", "output safety", plain_file)

        def foreign_in_output(case: Case) -> None:
            out = self.root / "safety-foreign"
            shutil.copytree(self.clean, out)
            (out / "kept" / "mine.txt").write_text("the user's")
            self.refused(case, ["dedup", "--input", *inputs, "--output", str(out)], out,
                         "did not write")

        self.case("earlier output + a file NDCL did not write", "output safety",
                  foreign_in_output)

        def input_inside(case: Case) -> None:
            out = self.root / "safety-inside"
            shutil.copytree(self.clean, out)
            self.refused(case, ["dedup", "--input", str(out / "kept" / "*"), "--output",
                                str(out)], out, "inside the output folder")

        self.case("input file inside OUT", "output safety", input_inside)

        def unwritable(case: Case) -> None:
            afile = self.root / "safety-parent"
            afile.write_text("x")
            self.refused(case, ["dedup", "--input", *inputs, "--output", str(afile / "out")],
                         afile, "cannot write the output")

        self.case("OUT under a file (not writable)", "output safety", unwritable)

        def replaced(case: Case) -> None:
            out = self.root / "safety-rerun"
            shutil.copytree(self.clean, out)
            self.dedup(out, inputs)
            left = [p.name for p in self.root.iterdir()
                    if p.name.startswith("safety-rerun.")]
            self.compare(case, out, self.clean)
            case.ok = case.ok and not left
            case.result = "earlier output replaced; no .ndcl-old/.ndcl-staging left"

        self.case("rerun over an earlier output", "output safety", replaced)

        def misspelt(case: Case) -> None:
            out = self.root / "safety-flag"
            proc = ndcl(["dedup", "--input", *inputs, "--output", str(out),
                         "--treshold=0.8"], timeout=120)
            case.ok = (proc.returncode == 2 and "--treshold" in proc.stderr
                       and "--threshold" in proc.stderr and not out.exists())
            case.result = f"exit {proc.returncode}: {proc.stderr.strip()[6:80]}"

        self.case("misspelt flag --treshold=0.8", "usage", misspelt)

        def piped(case: Case) -> None:
            out = self.root / "safety-stdin"
            data = b"".join((gzip.decompress(p.read_bytes()) if p.suffix == ".gz"
                             else p.read_bytes()) for p in self.files)
            proc = subprocess.run([sys.executable, "-m", "beam_pipeline.cli", "-q", "dedup",
                                   "--input", "-", "--output", str(out), *BATCH], cwd=REPO,
                                  input=data, capture_output=True, timeout=300)
            case.records_in = count_records(self.files)
            case.accounted = accounted(out) if proc.returncode == 0 else None
            case.identical = proc.returncode == 0 and demo_rows(out) == demo_rows(self.clean)
            case.ok = case.lost == 0 and bool(case.identical)
            case.result = "read once from standard input; same rows as from files"

        self.case("--input - (the corpus piped in)", "usage", piped)

        def binary(case: Case) -> None:
            folder = self.root / "safety-binary"
            folder.mkdir()
            (folder / "photo.json").write_bytes(bytes(range(256)) * 64 + b"\x00\n" * 5)
            out = self.root / "safety-binary-out"
            proc = ndcl(["dedup", "--input", str(folder / "photo.json"), "--output", str(out)])
            case.records_in = count_records([folder / "photo.json"])
            case.accounted = accounted(out) if (out / "_SUCCESS").exists() else None
            case.ok = (proc.returncode == 4 and "every record was rejected" in proc.stderr
                       and case.lost == 0)
            case.result = f"exit {proc.returncode}: all rejected, rejected/ committed"

        self.case("binary file as the only input", "usage", binary)

    # -- determinism --------------------------------------------------------------------------
    def determinism(self) -> None:
        variants = {
            "2 worker processes": ["--direct_num_workers=2",
                                   "--direct_running_mode=multi_processing"],
            "3 worker processes": ["--direct_num_workers=3",
                                   "--direct_running_mode=multi_processing"],
            "portable runner (embedded)": ["--runner", "portable", "--job-endpoint", "embed"],
        }
        for name, extra in variants.items():
            def check(case: Case, extra: list[str] = extra, name: str = name) -> None:
                out = self.root / f"out-{name.replace(' ', '-')}"
                self.dedup(out, [str(self.corpus / "*")], *extra)
                self.compare(case, out, self.clean)
                case.result = "byte-identical to in-memory"

            self.case(name, "determinism", check)

        def reversed_order(case: Case) -> None:
            out = self.root / "out-reversed"
            self.dedup(out, [str(p) for p in reversed(self.files)])
            self.compare(case, out, self.clean)
            case.result = "byte-identical"

        self.case("input files in reverse order", "determinism", reversed_order)

        def rerun(case: Case) -> None:
            out = self.root / "out-nd-cl-rerun"
            self.run_nd_cl(out, "local")
            self.compare(case, out, self.clean_nd_cl)
            case.result = "labels and files identical"

        self.case("nd_cl rerun (cluster labels)", "determinism", rerun)

    def compare(self, case: Case, out: Path, reference: Path) -> None:
        case.records_in = count_records(self.files)
        case.accounted = accounted(out)
        case.identical = output_files(out) == output_files(reference)
        case.ok = case.lost == 0 and case.identical


def print_table(cases: list[Case]) -> None:
    header = ("case", "kind", "records in", "kept+dups+rejected", "lost", "identical", "result")
    rows = [(c.name, c.kind, "-" if c.records_in is None else f"{c.records_in:,}",
             "-" if c.accounted is None else f"{c.accounted:,}",
             "-" if c.lost is None else str(c.lost),
             "-" if c.identical is None else ("yes" if c.identical else "NO"),
             ("ok: " if c.ok else "FAILED: ") + c.result) for c in cases]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: tuple) -> str:
        return "  ".join(f"{cell:<{w}}" for cell, w in zip(cells, widths)).rstrip()

    print(line(header))
    print(line(tuple("-" * w for w in widths)))
    for row in rows:
        print(line(row))
    kinds = {k: sum(c.kind == k for c in cases)
             for k in ("bad input", "fault", "output safety", "usage", "determinism")}
    lost = sum(c.lost or 0 for c in cases)
    compared = [c for c in cases if c.identical is not None]
    print(f"\n{kinds['bad input']} bad inputs tried, {kinds['fault']} faults injected, "
          f"{kinds['output safety']} output-safety and {kinds['usage']} usage cases, "
          f"{kinds['determinism']} determinism comparisons; records lost: {lost}; outputs "
          f"identical: {sum(bool(c.identical) for c in compared)}/{len(compared)} compared "
          f"(runs that must commit nothing: '-'); cases ok: {sum(c.ok for c in cases)}/"
          f"{len(cases)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-ray", action="store_true", help="skip the two Ray actor cases")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    args = parser.parse_args(argv)
    root = args.keep or Path(tempfile.mkdtemp(prefix="ndcl-reliability-"))
    if args.keep:
        # Only ever delete what this script made: a --keep folder must be new or empty.
        if root.exists() and any(root.iterdir()):
            parser.error(f"--keep {root} is not empty; give a new or empty folder")
        root.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("NDCL_DB_URL", f"sqlite:///{root / 'runs.db'}")
    started = time.perf_counter()
    try:
        print(f"clean reference runs in {root} ...", flush=True)
        runner = Runner(root, ray=not args.no_ray)
        runner.bad_inputs()
        runner.bounds()
        runner.faults()
        runner.output_safety()
        runner.determinism()
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(f"\nNDCL reliability ({DOCS} demo documents in 3 files, --batch-size 64; "
          f"{time.perf_counter() - started:.0f} s)\n")
    print_table(runner.cases)
    bad = [c for c in runner.cases if not c.ok or c.lost or c.identical is False]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
