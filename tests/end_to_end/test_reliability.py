"""Reliability (issue 6): nothing lost, nothing different, clear failures.

- Bad input: every kind of broken line ends in its rejected reason and the rest of the corpus
  is processed (NUL bytes, a 50 MB line read with bounded memory, repeated ids, mixed plain
  and gzip files in one glob, truncated gzip, empty files, a pattern matching nothing).
- Determinism: byte-identical ``kept/``, ``duplicates/`` and ``rejected/`` files across the
  in-memory runner, 2 and 3 worker processes, the portable runner, input files in another
  order, and ``nd_cl`` reruns (cluster labels included).
- Faults: a bundle that fails after writing its files (retried by a retrying runner; on the
  FnApiRunner, which does not retry, the run fails and commits nothing), a process killed
  mid-run, a crash during the commit itself, a Ray K-Means actor killed between fit and
  predict (restarted, or gone for good).
- Accounting ``read = kept + duplicates + rejected`` on every run here, and a mismatch fails
  the run without committing; the document and bucket caps are counted in the summary.

Faults are injected through ``transforms.faults`` (``NDCL_FAULTS``). About 2.5 minutes on two
cores, most of it process and Ray start-up. The pieces tested without a run live beside their
modules: the 50 MB line and the id scan in ``tests/transforms/test_records.py``, id names and
repeated ids in ``tests/transforms/test_read.py``, the fault markers in
``tests/transforms/test_faults.py``, the accounting check and the service error in
``tests/beam_pipeline/test_run.py``, the crash during the commit in
``tests/beam_pipeline/test_outputs.py``.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beam_pipeline import run as run_module
from beam_pipeline.cli import main
from beam_pipeline.config import DedupConfig
from beam_pipeline.run import run_dedup
from tests.conftest import REPO
from tests.fixtures import planted_records, write_corpus, write_lines
from transforms import faults

BATCH = ["--batch-size", "16"]  # several batches per file: more bundles, parts and shuffles
OUTPUT_DIRS = ("kept", "duplicates", "rejected")


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def output_files(out: Path) -> dict[str, bytes]:
    """Every part file of ``kept/``, ``duplicates/`` and ``rejected/`` by relative path."""
    return {str(p.relative_to(out)): p.read_bytes()
            for sub in OUTPUT_DIRS if (out / sub).is_dir()
            for p in sorted((out / sub).iterdir())}


def sorted_rows(out: Path) -> dict[str, list[dict]]:
    """``kept`` and ``duplicates`` rows sorted by id (ids are unique in the output)."""
    rows = {}
    for sub in ("kept", "duplicates"):
        table = pq.read_table(out / sub).to_pylist() if (out / sub).is_dir() else []
        rows[sub] = sorted(table, key=lambda r: r["id"])
    return rows


def rejected_rows(out: Path) -> list[dict]:
    return [json.loads(line) for f in sorted((out / "rejected").glob("*.jsonl"))
            for line in f.read_text().splitlines()] if (out / "rejected").is_dir() else []


def accounted(out: Path) -> dict[str, Any]:
    """The run's summary, after checking that it accounts for every record, file by file."""
    assert (out / "_SUCCESS").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["read"] == summary["kept"] + summary["duplicates"] + summary["rejected"]
    rows = sorted_rows(out)
    assert len(rows["kept"]) == summary["kept"]
    assert len(rows["duplicates"]) == summary["duplicates"]
    assert len(rejected_rows(out)) == summary["rejected"]
    ids = [r["id"] for r in rows["kept"] + rows["duplicates"]]
    assert len(ids) == len(set(ids)), "ids must be unique in the output"
    return summary


def assert_same_output(out: Path, reference: Path) -> None:
    assert output_files(out) == output_files(reference)  # byte for byte
    assert sorted_rows(out) == sorted_rows(reference)


def dedup(inputs: list[Path] | list[str], out: Path, *extra: str) -> dict[str, Any]:
    assert main(["-q", "dedup", "--input", *map(str, inputs), "--output", str(out), *BATCH,
                 *extra]) == 0
    return accounted(out)


def cli_process(*args: str, env: dict[str, str] | None = None, **kwargs: Any
                ) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "beam_pipeline.cli", "-q", *args], cwd=REPO,
                          capture_output=True, text=True, env=env, **kwargs)


def staging(out: Path) -> Path:
    return Path(str(out) + ".ndcl-staging")


# --------------------------------------------------------------------------------------------
# Fixtures: one corpus, clean reference runs
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The planted corpus in 3 files (plain, gzip, plain), with a repeated id across files and
    a broken line, so every output directory has something in it."""
    paths = write_corpus(tmp_path_factory.mktemp("corpus"), planted_records(seed=5), files=3)
    with paths[0].open("ab") as handle:
        handle.write(json.dumps({"id": "dup-1", "text": "the first record with this id "
                                 "keeps it whatever its text says"}).encode() + b"\n")
    with paths[2].open("ab") as handle:
        handle.write(json.dumps({"id": "dup-1", "text": "a later record with the same id is "
                                 "rejected"}).encode() + b"\n")
        handle.write(b"{not json\n")
    return paths


@pytest.fixture(scope="module")
def clean(corpus: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``ndcl dedup`` on the in-memory FnApiRunner: the reference output."""
    out = tmp_path_factory.mktemp("clean") / "out"
    summary = dedup(corpus, out)
    assert summary["duplicates"] > 0 and summary["rejected_by_reason"] == {
        "bad_json": 1, "duplicate_id": 1}
    return out


ND_CL = ["--workflow", "nd_cl", "--k1", "4", "--k2", "2"]


@pytest.fixture(scope="module")
def clean_nd_cl(corpus: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("clean-nd-cl") / "out"
    assert main(["-q", "run", *ND_CL, "--kmeans-backend", "local", "--input", *map(str, corpus),
                 "--output", str(out), *BATCH]) == 0
    accounted(out)
    return out


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------

BIG_LINE_BYTES = 50 * 2**20


def write_bad_corpus(root: Path) -> dict[str, Path]:
    """Every kind of broken input the reader knows, around good documents."""
    root.mkdir()
    good = [json.dumps({"text": f"good document {i} " + "alpha beta gamma delta " * 6})
            .encode() for i in range(6)]
    big = b'{"text": "' + b"x" * BIG_LINE_BYTES + b'"}'
    lines = [
        good[0],                                              # 1 kept
        b'{"text": "raw \x00 nul inside a string"}',          # 2 nul_byte
        b'{"text": "nul after the object"}\x00',              # 3 nul_byte
        json.dumps({"id": "nul-escaped", "text": "escaped \u0000 nul is data"}).encode(),  # 4
        b"this is not json",                                  # 5 bad_json
        b'["a", "list"]',                                     # 6 not_object
        b'"a string"',                                        # 7 not_object
        json.dumps({"url": "http://no-text"}).encode(),       # 8 missing_text
        json.dumps({"text": 12}).encode(),                    # 9 text_not_string
        json.dumps({"text": None}).encode(),                  # 10 text_not_string
        b'{"text": "caf\xe9 is latin-1"}',                    # 11 invalid_utf8
        b"   ",                                               # 12 blank_line
        big,                                                  # 13 too_large
        good[1],                                              # 14 kept
        json.dumps({"id": "dup-a", "text": "owner of dup-a " * 8}).encode(),   # 15 kept
        json.dumps({"id": "dup-a", "text": "repeat of dup-a " * 8}).encode(),  # 16 duplicate_id
        b'{"text": "lone \\ud800 surrogate"}',                # 17 invalid_unicode
        json.dumps({"id": 3.5, "text": "float id"}).encode(),  # 18 bad_id
        good[2],                                              # 19 kept
    ]
    (root / "a.json").write_bytes(b"\n".join(lines) + b"\n")
    gz_lines = [good[3], json.dumps({"id": "dup-a", "text": "dup-a again, in b"}).encode(),
                good[4]]
    (root / "b.json.gz").write_bytes(gzip.compress(b"\n".join(gz_lines) + b"\n"))
    (root / "c.json").write_bytes(b"")
    (root / "d.json.gz").write_bytes(b"")
    full = gzip.compress(b"".join(json.dumps({"text": f"doc {i} " * 30}).encode() + b"\n"
                                  for i in range(400)))
    (root / "e.json.gz").write_bytes(full[: len(full) // 2])
    pq.write_table(pa.Table.from_pylist([
        {"id": "pq-nul", "text": "parquet text with a \x00 nul"},
        {"id": "pq-missing", "text": None},
    ]), root / "f.parquet")
    # Same base name in two folders, no ids: derived ids must still differ.
    for name in ("x", "y"):
        (root / "same" / name).mkdir(parents=True)
        (root / "same" / name / "data.json").write_bytes(good[5] + b"\n")
    return {"glob": root / "*", "same": root / "same" / "*" / "data.json"}


def test_bad_input_corpus(tmp_path: Path) -> None:
    patterns = write_bad_corpus(tmp_path / "bad")
    out = tmp_path / "out"
    summary = dedup([patterns["glob"], patterns["same"]], out)
    rejected = rejected_rows(out)
    reasons = {(Path(r["source"]).name, r["line"]): r["reason"] for r in rejected}
    truncated = [key for key in reasons if key[0] == "e.json.gz"]
    assert len(truncated) == 1 and reasons.pop(truncated[0]) == "read_error"
    assert reasons == {
        ("a.json", 2): "nul_byte", ("a.json", 3): "nul_byte", ("a.json", 5): "bad_json",
        ("a.json", 6): "not_object", ("a.json", 7): "not_object",
        ("a.json", 8): "missing_text", ("a.json", 9): "text_not_string",
        ("a.json", 10): "text_not_string", ("a.json", 11): "invalid_utf8",
        ("a.json", 12): "blank_line", ("a.json", 13): "too_large",
        ("a.json", 16): "duplicate_id", ("a.json", 17): "invalid_unicode",
        ("a.json", 18): "bad_id", ("b.json.gz", 2): "duplicate_id",
        ("f.parquet", 2): "text_not_string",
    }
    by_line = {(Path(r["source"]).name, r["line"]): r for r in rejected}
    big = by_line[("a.json", 13)]
    assert big["detail"] == f"{BIG_LINE_BYTES + 12} bytes > max_doc_bytes=10000000"
    assert big["raw"] == '{"text": "' + "x" * 990
    assert all(len(r["raw"]) <= 1000 for r in rejected)
    # The first record of an id keeps it; repeats name it.
    for key in (("a.json", 16), ("b.json.gz", 2)):
        assert by_line[key]["detail"].startswith("id 'dup-a' first seen at ")
        assert by_line[key]["detail"].endswith("a.json:15")
    rows = sorted_rows(out)
    docs = {r["id"]: r for r in rows["kept"] + rows["duplicates"]}
    assert docs["dup-a"]["text"].startswith("owner of dup-a")
    # NUL characters that are data (escaped in JSON, or in Parquet text) are kept as they are.
    assert docs["nul-escaped"]["text"] == "escaped \u0000 nul is data"
    assert docs["pq-nul"]["text"] == "parquet text with a \x00 nul"
    # Good documents of every file survive: plain, gzip, the readable start of the truncated
    # gzip, and both same-named files under their disambiguated derived ids.
    assert {"a.json:1", "a.json:14", "a.json:19", "b.json.gz:1", "b.json.gz:3",
            "x/data.json:1", "y/data.json:1"} <= set(docs)
    assert sum(doc_id.startswith("e.json.gz:") for doc_id in docs) > 10
    assert summary["rejected_by_reason"]["nul_byte"] == 2
    assert summary["input_files"] == 8


def test_explicit_id_in_the_form_of_a_derived_one_is_rejected(tmp_path: Path) -> None:
    lines = [{"text": f"document number {i} " * 8} for i in range(6)]
    lines[1]["id"] = "a.json:3"  # what line 3 (no id) is called: derived ids stay unique
    lines[4]["id"] = "b.json:1"  # not an input file: an ordinary explicit id
    path = write_lines(tmp_path / "a.json", lines)
    out = tmp_path / "out"
    summary = dedup([path], out)
    assert summary["rejected_by_reason"] == {"duplicate_id": 1}
    (row,) = rejected_rows(out)
    assert row["line"] == 2 and "has the form of a derived id" in row["detail"]
    assert {"a.json:3", "b.json:1"} <= {r["id"] for r in sorted_rows(out)["kept"]}


def test_pattern_matching_nothing_fails_before_the_job_and_the_service(tmp_path: Path) -> None:
    pattern = str(tmp_path / "nothing-here-*.json")
    proc = cli_process("run", "--input", pattern, "--output", str(tmp_path / "out"),
                       timeout=120)
    assert proc.returncode == 2
    assert f"input pattern {pattern!r} matches no file" in proc.stderr
    assert "Ray" not in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists() and not staging(tmp_path / "out").exists()


def test_accounting_mismatch_fails_the_run_and_commits_nothing(
        corpus: list[Path], clean: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    shutil.copytree(clean, out)  # a finished earlier run
    build_summary = run_module.build_summary

    def losing_one(*args: Any, **kwargs: Any) -> dict[str, Any]:
        summary = build_summary(*args, **kwargs)
        summary["kept"] -= 1
        return summary

    monkeypatch.setattr(run_module, "build_summary", losing_one)
    code = main(["-q", "dedup", "--input", *map(str, corpus), "--output", str(out), *BATCH])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1, err
    assert "AccountingError:" in err[0] and "output not committed" in err[0]
    assert_same_output(out, clean)
    assert (out / "summary.json").read_text() == (clean / "summary.json").read_text()


def test_document_and_bucket_caps_are_counted(corpus: list[Path], tmp_path: Path) -> None:
    summary = dedup(corpus, tmp_path / "out", "--max-doc-bytes", "1000",
                    "--max-bucket-size", "2")
    assert summary["rejected_by_reason"]["too_large"] > 0
    assert summary["buckets_capped"] > 0 and summary["bucket_members_dropped"] > 0


# --------------------------------------------------------------------------------------------
# Determinism
# --------------------------------------------------------------------------------------------

PORTABLE = ["--runner", "portable", "--job-endpoint", "embed"]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["workers-2", "workers-3", "portable"])
def test_runner_modes_give_identical_output(mode: str, corpus: list[Path], clean: Path,
                                            tmp_path: Path) -> None:
    if mode == "portable":
        extra = PORTABLE
    else:
        extra = [f"--direct_num_workers={mode.split('-')[1]}",
                 "--direct_running_mode=multi_processing"]
    dedup(corpus, tmp_path / "out", *extra)
    assert_same_output(tmp_path / "out", clean)


def test_input_order_does_not_matter(corpus: list[Path], clean: Path, tmp_path: Path) -> None:
    dedup(list(reversed(corpus)), tmp_path / "reversed")
    assert_same_output(tmp_path / "reversed", clean)
    # Overlapping patterns in another order name the same files once.
    folder = corpus[0].parent
    dedup([folder / "part-02.json", folder / "*", folder / "part-0[01]*"], tmp_path / "globs")
    assert_same_output(tmp_path / "globs", clean)


@pytest.mark.slow
def test_nd_cl_rerun_is_identical(corpus: list[Path], clean_nd_cl: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["-q", "run", *ND_CL, "--kmeans-backend", "local", "--input", *map(str, corpus),
            "--output", str(out), *BATCH]
    assert main(args) == 0
    accounted(out)
    assert_same_output(out, clean_nd_cl)
    kept = sorted_rows(out)["kept"]
    assert {r["cluster_A"] for r in kept} == set(range(4))
    assert main(args) == 0  # into the same OUT again
    assert_same_output(out, clean_nd_cl)


def test_failed_bundle_is_retried_without_duplicating_output(
        corpus: list[Path], clean: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Beam's bundle-based DirectRunner retries a failed bundle (up to 4 attempts), as
    Dataflow does. The bundle fails after it wrote its part files: the retry overwrites them
    (names are a function of the batch), and counts come from elements, so nothing doubles."""
    marker = tmp_path / "fired"
    monkeypatch.setenv(faults.ENV, f"write_fail={marker}")
    out = tmp_path / "out"
    cfg = DedupConfig(batch_size=16)
    result = run_dedup([str(p) for p in corpus], str(out), cfg,
                       ["--runner=BundleBasedDirectRunner"])
    assert marker.exists()  # the fault did happen
    accounted(out)
    assert_same_output(out, clean)
    assert result.summary["read"] == json.loads((clean / "summary.json").read_text())["read"]


def test_failed_bundle_on_a_runner_without_retries_commits_nothing(
        corpus: list[Path], clean: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The FnApiRunner (the default) does not retry bundles: the run fails with exit status 1
    and one line naming the cause, OUT is not created, and a rerun gives the clean output."""
    marker = tmp_path / "fired"
    monkeypatch.setenv(faults.ENV, f"write_fail={marker}")
    out = tmp_path / "out"
    code = main(["-q", "dedup", "--input", *map(str, corpus), "--output", str(out), *BATCH])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ndcl: error: the pipeline failed: "
                                               "InjectedFault: fault injected at write"), err
    assert not out.exists()
    assert not staging(out).exists()  # the failed run's staging folder is gone too
    dedup(corpus, out)  # the marker exists now: the rerun meets no fault
    assert_same_output(out, clean)
    assert not staging(out).exists()


def _crash(corpus: list[Path], out: Path, marker: Path) -> None:
    """Run ``ndcl dedup`` in a process, wait until it has written part of its output, then
    SIGKILL it."""
    env = dict(os.environ, **{faults.ENV: f"write_stall={marker}"})
    log = out.parent / f"{marker.name}.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "beam_pipeline.cli", "-q", "dedup", "--input",
             *map(str, corpus), "--output", str(out), *BATCH], cwd=REPO, env=env,
            stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 180
        while not marker.exists():
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the run never reached the write stage"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL


def test_killed_run_is_never_taken_for_a_finished_one(corpus: list[Path], clean: Path,
                                                      tmp_path: Path) -> None:
    out = tmp_path / "out"
    _crash(corpus, out, tmp_path / "crash-1")
    assert not out.exists()
    half = staging(out)
    assert list((half / "kept").iterdir()), "the crash should leave a half-written staging"
    assert not (half / "_SUCCESS").exists() and not (half / "summary.json").exists()

    dedup(corpus, out)  # a rerun into the same OUT clears the staging and finishes
    assert_same_output(out, clean)
    assert not half.exists()
    finished = (out / "summary.json").read_text()

    _crash(corpus, out, tmp_path / "crash-2")  # a crash now leaves the finished OUT alone
    assert (out / "_SUCCESS").exists() and (out / "summary.json").read_text() == finished
    assert_same_output(out, clean)


@pytest.fixture(scope="module")
def ray_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    """A local Ray head with the K-Means actor under its default name, models persisted."""
    pytest.importorskip("ray")
    from runners.kmeans.service import ServiceConfig, disconnect, start_service, stop_service

    root = tmp_path_factory.mktemp("ray")
    state_file = root / "service.json"
    started = start_service(ServiceConfig(num_cpus=1, head_num_cpus=2,
                                          model_dir=str(root / "models")),
                            state_file=state_file, timeout_s=120)
    try:
        yield SimpleNamespace(address=started.address, root=root)
    finally:
        stop_service(state_file)
        disconnect()


@pytest.mark.slow
def test_kmeans_actor_killed_mid_run(ray_service: SimpleNamespace, corpus: list[Path],
                                     clean_nd_cl: Path, tmp_path: Path) -> None:
    """Killed between fit and predict: Ray restarts the actor, which reloads the fitted models
    from its model folder, and the labels equal a clean run's. Killed for good: the run fails
    within the client's timeout with the service's message and exit status 3."""
    args = ["run", *ND_CL, "--kmeans-backend", "ray", "--service-address",
            ray_service.address, "--input", *map(str, corpus), *BATCH]
    out = tmp_path / "restarted"
    env = dict(os.environ, **{faults.ENV: f"kmeans_kill={tmp_path / 'kill-1'}"})
    proc = cli_process(*args, "--output", str(out), env=env, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    pids = re.search(r"K-Means actor restarted \(pid (\d+) -> (\d+)\)", proc.stderr)
    assert pids and pids.group(1) != pids.group(2), proc.stderr[-3000:]
    accounted(out)
    assert_same_output(out, clean_nd_cl)

    out = tmp_path / "gone"
    env = dict(os.environ, **{faults.ENV: f"kmeans_kill_for_good={tmp_path / 'kill-2'}"})
    started = time.monotonic()
    proc = cli_process(*args, "--output", str(out), env=env, timeout=400)
    assert proc.returncode == 3, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ndcl: K-Means service unavailable: no K-Means service actor "
                           "'ndcl-kmeans'"), last
    assert ray_service.address in last
    assert time.monotonic() - started < 300
    assert not out.exists()
