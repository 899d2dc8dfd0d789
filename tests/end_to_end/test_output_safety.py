"""Output safety and input streams through the CLI (README "Output safety"): NDCL replaces
only an empty folder or its own earlier output, checks the location before any work, reads
standard input and FIFOs once, and says so when every record was rejected."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from beam_pipeline import outputs
from beam_pipeline.cli import EXIT_ALL_REJECTED, main
from tests.conftest import REPO

pytestmark = pytest.mark.slow

RECORDS = [{"text": f"document number {i} says something about topic {i % 7} and more "
                    f"words to make it long enough {i * 13}"} for i in range(40)]


def write_jsonl(path: Path, records: list[dict] = RECORDS) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def dedup(inputs: list[str | Path], out: str | Path, *extra: str) -> int:
    return main(["-q", "dedup", "--input", *map(str, inputs), "--output", str(out), *extra])


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir()
                  if p.name.endswith((".ndcl-old", ".ndcl-staging")))


def one_error_line(capsys: pytest.CaptureFixture[str], *words: str) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("ndcl:")]
    assert len(err) == 1, err
    for word in words:
        assert word in err[0], err[0]
    return err[0]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("corpus") / "in.json")


@pytest.fixture(scope="module")
def finished(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished NDCL output, copied by the tests that need an earlier output."""
    out = tmp_path_factory.mktemp("finished") / "out"
    assert dedup([corpus], out) == 0
    return out


def copy_of(finished: Path, target: Path) -> Path:
    shutil.copytree(finished, target)
    return target


# --- rule 1: what OUT may be -----------------------------------------------------------------


def test_input_folder_as_output_is_refused_and_untouched(
        corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "corpus"
    folder.mkdir()
    shutil.copy(corpus, folder / "in.json")
    (folder / "notes.txt").write_text("mine")
    before = tree(folder)
    assert dedup([folder / "in.json"], folder) == 2
    one_error_line(capsys, str(folder), "not an NDCL output", "in.json", "notes.txt")
    assert tree(folder) == before and leftovers(tmp_path) == []


def test_plain_file_as_output_is_refused_and_untouched(
        corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    afile = tmp_path / "afile"
    afile.write_text("precious")
    assert dedup([corpus], afile) == 2
    one_error_line(capsys, str(afile), "is a file")
    assert afile.read_text() == "precious" and leftovers(tmp_path) == []


def test_symlink_as_output_is_refused(corpus: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert dedup([corpus], tmp_path / "link") == 2
    one_error_line(capsys, "symbolic link")
    assert (tmp_path / "link").is_symlink()


def test_earlier_output_is_replaced_and_nothing_is_left_beside_it(
        corpus: Path, finished: Path, tmp_path: Path) -> None:
    out = copy_of(finished, tmp_path / "out")
    (out / "evaluation.json").write_text("{}")  # NDCL's too (ndcl evaluate writes it)
    assert dedup([corpus], out) == 0
    manifest = json.loads((out / outputs.MANIFEST).read_text())
    assert manifest["signature"] == outputs.SIGNATURE
    assert set(manifest["files"]) == set(tree(out)), "the manifest lists every file written"
    assert not (out / "evaluation.json").exists()
    assert leftovers(tmp_path) == []
    assert tree(out)["kept/part-0000000000000000.parquet"] == \
        tree(finished)["kept/part-0000000000000000.parquet"]


def test_empty_folder_is_used(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    assert dedup([corpus], out) == 0
    assert (out / "_SUCCESS").exists() and leftovers(tmp_path) == []


def test_earlier_output_with_a_foreign_file_is_refused(
        corpus: Path, finished: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    out = copy_of(finished, tmp_path / "out")
    (out / "kept" / "my-notes.txt").write_text("mine")
    (out / "empty-folder-of-mine").mkdir()
    before = tree(out)
    assert dedup([corpus], out) == 2
    one_error_line(capsys, "did not write", "kept/my-notes.txt", "empty-folder-of-mine/")
    assert tree(out) == before and leftovers(tmp_path) == []


def test_forged_manifest_is_not_enough(corpus: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / outputs.MANIFEST).write_text(json.dumps({"signature": "something else"}))
    (out / "data.csv").write_text("1,2")
    assert dedup([corpus], out) == 2
    one_error_line(capsys, "not an NDCL output")
    assert (out / "data.csv").read_text() == "1,2"


def test_input_inside_the_output_is_refused(corpus: Path, finished: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = copy_of(finished, tmp_path / "out")
    before = tree(out)
    assert dedup([f"{out}/kept/*.parquet"], out) == 2
    one_error_line(capsys, "inside the output folder")
    assert tree(out) == before


def test_output_of_an_older_ndcl_is_recognised(corpus: Path, finished: Path,
                                               tmp_path: Path) -> None:
    """Outputs written before the manifest existed: _SUCCESS + NDCL summary + NDCL names."""
    out = copy_of(finished, tmp_path / "out")
    (out / outputs.MANIFEST).unlink()
    assert dedup([corpus], out) == 0
    assert (out / outputs.MANIFEST).exists() and leftovers(tmp_path) == []


def test_crash_leftovers_are_cleared_only_when_ndcl_made_them(
        corpus: Path, finished: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    stale = Path(outputs.staging_path(str(out)))
    stale.mkdir()
    (stale / "holiday.jpg").write_text("not NDCL's")
    assert dedup([corpus], out) == 2
    one_error_line(capsys, "was not made by NDCL", "holiday.jpg")
    assert (stale / "holiday.jpg").exists() and not out.exists()

    (stale / "holiday.jpg").unlink()
    (stale / outputs.STAGING_MARKER).write_text("{}")  # a crashed run's staging folder
    (stale / "kept").mkdir()
    (stale / "kept" / "part-1.parquet").write_text("half")
    copy_of(finished, Path(outputs.aside_path(str(out))))  # a commit interrupted midway
    assert dedup([corpus], out) == 0
    assert leftovers(tmp_path) == [] and (out / "_SUCCESS").exists()


def test_commit_rechecks_the_output_and_deletes_only_its_files(
        finished: Path, tmp_path: Path) -> None:
    """A file added to OUT while the job ran stops the commit; nothing is deleted."""
    out = copy_of(finished, tmp_path / "out")
    staging, existing = outputs.prepare_output(str(out), [])
    assert existing.kind == "ndcl"
    (Path(staging) / "kept").mkdir()
    (Path(staging) / "kept" / "part-2.parquet").write_text("new")
    (out / "arrived-meanwhile.txt").write_text("mine")
    with pytest.raises(outputs.OutputError, match=r"arrived-meanwhile\.txt"):
        outputs.commit_output(staging, str(out))
    assert (out / "arrived-meanwhile.txt").read_text() == "mine"
    (out / "arrived-meanwhile.txt").unlink()
    outputs.commit_output(staging, str(out))
    assert sorted(tree(out)) == ["_SUCCESS", "_ndcl.json", "kept/part-2.parquet"]
    assert leftovers(tmp_path) == []


# --- rule 2: the location is checked before the job starts ----------------------------------


def test_output_under_a_file_fails_before_work(corpus: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "afile").write_text("x")
    assert dedup([corpus], tmp_path / "afile" / "out") == 2
    one_error_line(capsys, "cannot write the output", "Not a directory")
    assert (tmp_path / "afile").read_text() == "x"


def test_read_only_location_fails_before_work(corpus: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    # /sys refuses new entries even to root, so this holds however the tests are run.
    assert dedup([corpus], "/sys/ndcl-test-out") == 2
    one_error_line(capsys, "cannot write the output /sys/ndcl-test-out")


def test_non_writable_folder_fails_before_work(corpus: Path, tmp_path: Path) -> None:
    """A folder without write permission. Root ignores the mode bits, so as root the CLI runs
    without the capabilities that let it (util-linux ``setpriv``), as an ordinary user would."""
    locked = tmp_path / "locked"
    locked.mkdir()
    os.chmod(locked, 0o555)
    command = [sys.executable, "-m", "beam_pipeline.cli", "-q", "dedup", "--input",
               str(corpus), "--output", str(locked / "out")]
    if os.getuid() == 0:
        setpriv = shutil.which("setpriv")
        assert setpriv, "setpriv (util-linux) is needed to drop root's override as root"
        command = [setpriv, "--bounding-set=-dac_override,-dac_read_search", "--", *command]
    try:
        proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr[-2000:]
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "Permission denied" in lines[0], lines
        assert list(locked.iterdir()) == []
    finally:
        os.chmod(locked, 0o755)


# --- rule 4: standard input and other streams -------------------------------------------------


def cli_with_stdin(data: bytes, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "beam_pipeline.cli", "-q", "dedup", *args],
                          cwd=REPO, input=data, capture_output=True, timeout=300)


def summary_of(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


@pytest.mark.parametrize("source", ["-", "/dev/stdin"])
def test_standard_input_is_read_once(source: str, tmp_path: Path) -> None:
    data = "".join(json.dumps(r) + "\n" for r in RECORDS[:50]).encode()
    out = tmp_path / "out"
    proc = cli_with_stdin(data, "--input", source, "--output", str(out))
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert summary_of(out)["read"] == len(RECORDS[:50])
    ids = pq.read_table(out / "kept").column("id").to_pylist()
    assert ids[:2] == ["stdin:1", "stdin:2"]


def test_gzip_on_standard_input_with_a_file(corpus: Path, tmp_path: Path) -> None:
    import gzip

    data = gzip.compress(b"".join(json.dumps({"id": f"s{i}", "text": f"piped text {i} "
                                                                        "with several words"})
                                  .encode() + b"\n" for i in range(10)))
    out = tmp_path / "out"
    proc = cli_with_stdin(data, "--input", "-", str(corpus), "--output", str(out))
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert summary_of(out)["read"] == len(RECORDS) + 10


def test_fifo_is_read_once_by_worker_processes(tmp_path: Path) -> None:
    fifo = tmp_path / "feed"
    os.mkfifo(fifo)
    data = "".join(json.dumps(r) + "\n" for r in RECORDS).encode()

    def feed() -> None:
        with open(fifo, "wb") as handle:
            handle.write(data)

    writer = threading.Thread(target=feed)
    writer.start()
    out = tmp_path / "out"
    assert dedup([fifo], out, "--direct_num_workers=2",
                 "--direct_running_mode=multi_processing") == 0
    writer.join(timeout=30)
    assert summary_of(out)["read"] == len(RECORDS)
    assert "feed:1" in pq.read_table(out / "kept").column("id").to_pylist()


def test_standard_input_twice_is_refused(tmp_path: Path) -> None:
    proc = cli_with_stdin(b"", "--input", "-", "/dev/stdin", "--output", str(tmp_path / "o"))
    assert proc.returncode == 2
    assert "read only once" in proc.stderr.decode()
    assert not (tmp_path / "o").exists()


# --- rule 5: every record rejected ------------------------------------------------------------


def test_binary_input_commits_rejects_and_exits_distinctly(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    binary = tmp_path / "image.json"
    data = bytes(range(256)) * 40 + b"\n" + b"\x00\x01\x02\n" * 3
    binary.write_bytes(data)
    lines = data.count(b"\n")
    out = tmp_path / "out"
    assert dedup([binary], out) == EXIT_ALL_REJECTED
    line = one_error_line(capsys, "every record was rejected")
    summary = summary_of(out)
    assert summary["read"] == summary["rejected"] == lines and summary["kept"] == 0
    rejected = [json.loads(x) for f in (out / "rejected").glob("*.jsonl")
                for x in f.read_text().splitlines()]
    assert len(rejected) == lines and str(out) in line


def test_truth_never_overwrites_a_file_it_did_not_write(
        corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mine = tmp_path / "truth.json"
    mine.write_text('{"my": "data"}')
    assert main(["truth", str(corpus), "--output", str(mine)]) == 2
    assert "not a file NDCL wrote" in capsys.readouterr().err
    assert mine.read_text() == '{"my": "data"}'
    mine.unlink()
    assert main(["truth", str(corpus), "--output", str(mine)]) == 0
    assert main(["truth", str(corpus), "--output", str(mine)]) == 0  # its own file again
