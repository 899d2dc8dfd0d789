"""``ndcl show`` (``beam_pipeline.show``): duplicate groups and clusters of outputs made here by
the CLI (the demo corpus and a planted corpus with explicit ids, gzip and Parquet inputs), as
text and JSON; colour only on a terminal; one-line errors with exit status 2; ``gs://``
against the GCS emulator."""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beam_pipeline.cli import main
from beam_pipeline.show import add_show_command, run_show
from tests.conftest import DEMO_CORPUS, REPO
from tests.fixtures import planted_records, write_corpus

try:  # the emulator fixture of tests/end_to_end/test_gcs.py (skipped there without the package)
    from tests.end_to_end.test_gcs import BUCKET, gcs_bucket
except pytest.skip.Exception:
    BUCKET = "ndcl-test"

    @pytest.fixture
    def gcs_bucket() -> None:
        pytest.skip("gcp-storage-emulator is not installed")


ANSI = "\x1b["
DEMO_NAME = DEMO_CORPUS.name


def show(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="ndcl")
    add_show_command(parser.add_subparsers(dest="command"))
    return run_show(parser.parse_args(["show", *argv]))


def show_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    assert show(*argv, "--format", "json") == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def show_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert show(*argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1, captured.err
    assert captured.err.startswith("ndcl show: error: ")
    return captured.err


def demo_lines() -> list[dict]:
    with gzip.open(DEMO_CORPUS, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


# --------------------------------------------------------------------------- outputs made here


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ND→CL on the demo corpus (the local K-Means backend: no Ray needed)."""
    out = tmp_path_factory.mktemp("show") / "demo-out"
    assert main(["-q", "run", "--workflow", "nd_cl", "--input", str(DEMO_CORPUS), "--output",
                 str(out), "--k1", "4", "--k2", "3", "--kmeans-backend", "local"]) == 0
    return out


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict]]:
    """A dedup output of a planted corpus in three inputs (plain JSON, gzip JSON, Parquet)
    with explicit ids, and every input record by its id."""
    folder = tmp_path_factory.mktemp("planted")
    records = planted_records(seed=11)
    # The explicit ids (a string and an integer) go to the JSON inputs: a Parquet column
    # holds one type.
    records.sort(key=lambda r: "id" not in r)
    third = len(records) // 3
    files = write_corpus(folder / "in", records[: 2 * third], files=2)
    parquet = folder / "in" / "part-99.parquet"
    pq.write_table(pa.Table.from_pylist(records[2 * third:]), parquet)
    by_id = {}
    for path, chunk in ((files[0], records[:third]), (files[1], records[third: 2 * third]),
                        (parquet, records[2 * third:])):
        for line, record in enumerate(chunk, start=1):
            by_id[str(record["id"]) if "id" in record else f"{path.name}:{line}"] = record
    out = folder / "out"
    assert main(["-q", "dedup", "--input", str(folder / "in" / "part-*"), "--output",
                 str(out)]) == 0
    return out, by_id


def copy_output(out: Path, target: Path) -> Path:
    shutil.copytree(out, target)
    return target


@pytest.mark.slow
def test_text_output_shows_largest_groups_with_changes_marked(
        demo_out: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert show(str(demo_out)) == 0
    text = capsys.readouterr().out
    assert ANSI not in text, "standard output is not a terminal: no colour"
    assert text.splitlines()[0] == f"{demo_out}: 277 documents removed in 144 groups"
    assert text.count("\ngroup ") == 10, "--limit defaults to 10"
    assert "[-" in text and "{+" in text and "similarity 0." in text and "  exact  " in text
    assert "… and " not in text or "--members 0" in text


@pytest.mark.slow
def test_group_shows_every_member_with_its_words_changed(
        demo_out: Path, capsys: pytest.CaptureFixture[str]) -> None:
    kept = f"{DEMO_NAME}:4"
    assert show(str(demo_out), "--group", kept, "--members", "1") == 0
    text = capsys.readouterr().out
    assert text.count("\ngroup ") == 1 and text.count("  removed  ") == 3
    assert f"kept {kept}" in text and "regression [-longhorn-]{+tests+}" in text


@pytest.mark.slow
def test_json_groups_hold_the_input_texts(demo_out: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    shown = show_json(capsys, str(demo_out), "--limit", "3", "--members", "0")
    lines = demo_lines()
    dups = {r["id"]: r for r in pq.read_table(demo_out / "duplicates").to_pylist()}
    assert shown["groups_total"] == 144 and shown["removed_total"] == 277
    assert len(shown["groups"]) == 3
    sizes = [g["size"] for g in shown["groups"]]
    assert sizes == sorted(sizes, reverse=True)
    for group in shown["groups"]:
        kept = group["kept"]
        assert {"id", "text", "url"} <= set(kept)
        assert kept["text"] == lines[int(kept["id"].rsplit(":", 1)[1]) - 1]["text"]
        assert len(group["removed"]) == group["size"] - 1
        for removed in group["removed"]:
            assert {"id", "reason", "similarity", "text"} <= set(removed)
            row = dups[removed["id"]]
            assert row["duplicate_of"] == kept["id"] and row["reason"] == removed["reason"]
            assert removed["similarity"] == row["similarity"]
            assert removed["text"] == lines[int(removed["id"].rsplit(":", 1)[1]) - 1]["text"]


@pytest.mark.slow
def test_limit_and_members(demo_out: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shown = show_json(capsys, str(demo_out), "--limit", "2", "--members", "1")
    assert len(shown["groups"]) == 2
    assert all(len(g["removed"]) == 1 < g["size"] - 1 for g in shown["groups"])
    assert show(str(demo_out), "--limit", "1", "--members", "1") == 0
    text = capsys.readouterr().out
    assert text.count("\ngroup ") == 1 and "… and 2 more removed" in text


@pytest.mark.slow
def test_colour_only_on_a_terminal(demo_out: Path, capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    terminal = Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    assert show(str(demo_out), "--group", f"{DEMO_NAME}:4") == 0
    coloured = terminal.getvalue()
    assert ANSI in coloured and "{+tests+}" not in coloured
    monkeypatch.setenv("NO_COLOR", "1")
    terminal.seek(0)
    terminal.truncate()
    assert show(str(demo_out), "--group", f"{DEMO_NAME}:4") == 0
    assert ANSI not in terminal.getvalue()
    monkeypatch.undo()
    assert show(str(demo_out), "--group", f"{DEMO_NAME}:4", "--color", "always") == 0
    assert ANSI in capsys.readouterr().out


def _without_stored_terms(out: Path) -> None:
    """Remove the top terms the run stored (summary.json, _cluster_fit.json), as in
    outputs of runs from before they were."""
    summary = json.loads((out / "summary.json").read_text())
    fit = json.loads((out / "_cluster_fit.json").read_text())
    for level_1, fits in ((summary["cluster"]["level_1"], summary["cluster"]["level_2"]["fits"]),
                          (fit["A"], fit["B"])):
        del level_1["top_terms"]
        for sub in fits.values():
            del sub["top_terms"]
    (out / "summary.json").write_text(json.dumps(summary))
    (out / "_cluster_fit.json").write_text(json.dumps(fit))


@pytest.mark.slow
def test_clusters_show_the_terms_the_run_stored(demo_out: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    summary = json.loads((demo_out / "summary.json").read_text())
    stored = summary["cluster"]["level_1"]["top_terms"]
    shown = show_json(capsys, str(demo_out), "--clusters")
    assert shown["top_terms_source"] == "summary.json"
    assert {c["id"]: c["top_terms"] for c in shown["clusters"]} == stored
    assert all(0 < len(terms) <= 10 for terms in stored.values())
    level_b = show_json(capsys, str(demo_out), "--clusters", "--level", "B", "--group", "1")
    fits = summary["cluster"]["level_2"]["fits"]["1"]["top_terms"]
    assert {c["id"]: c["top_terms"] for c in level_b["clusters"]} == {
        f"1/{b}": terms for b, terms in fits.items()}


@pytest.mark.slow
def test_clusters(demo_out: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    demo_out = copy_output(demo_out, tmp_path / "no-terms")
    _without_stored_terms(demo_out)
    summary = json.loads((demo_out / "summary.json").read_text())
    shown = show_json(capsys, str(demo_out), "--clusters")
    assert shown["level"] == "A" and shown["top_terms_source"] == "computed"
    assert sum(c["size"] for c in shown["clusters"]) == summary["kept"]
    assert {c["id"]: c["size"] for c in shown["clusters"]} == \
        summary["cluster"]["level_1"]["sizes"]["sizes"]
    kept = {r["id"]: r["text"] for r in pq.read_table(demo_out / "kept").to_pylist()}
    for cluster in shown["clusters"]:
        assert cluster["top_terms"] and len(cluster["examples"]) == 2
        assert all(kept[e["id"]] == e["text"] for e in cluster["examples"])
    assert show(str(demo_out), "--clusters") == 0
    text = capsys.readouterr().out
    assert "top terms computed here: TF-IDF" in text and ANSI not in text
    assert text.count("\ncluster_A ") == 4 and text.count("  example    ") == 8

    level_b = show_json(capsys, str(demo_out), "--clusters", "--level", "B", "--group", "0")
    assert level_b["clusters"] and all(c["id"].startswith("0/") for c in level_b["clusters"])
    sub = summary["cluster"]["level_2"]["sizes"]["sizes"]
    assert all(sub[c["id"]] == c["size"] for c in level_b["clusters"])
    assert "no cluster_A 99" in show_error(capsys, str(demo_out), "--clusters", "--group", "99")


@pytest.mark.slow
def test_clusters_use_stored_top_terms(demo_out: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = copy_output(demo_out, tmp_path / "terms")
    _without_stored_terms(out)
    summary = json.loads((out / "summary.json").read_text())
    summary["cluster"]["level_1"]["top_terms"] = {
        str(a): [[f"term{a}", 0.5], [f"other{a}", 0.25]] for a in range(4)}
    (out / "summary.json").write_text(json.dumps(summary))
    shown = show_json(capsys, str(out), "--clusters")
    assert shown["top_terms_source"] == "summary.json"
    assert all(c["top_terms"] == [f"term{c['id']}", f"other{c['id']}"]
               for c in shown["clusters"])
    assert show(str(out), "--clusters", "--limit", "1") == 0
    assert "top terms stored by the run (summary.json)" in capsys.readouterr().out


@pytest.mark.slow
def test_explicit_ids_gzip_and_parquet_inputs(planted: tuple[Path, dict[str, dict]],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    out, records = planted
    shown = show_json(capsys, str(out), "--limit", "1000", "--members", "0")
    dups = pq.read_table(out / "duplicates").to_pylist()
    assert sum(len(g["removed"]) for g in shown["groups"]) == len(dups)
    removed = {r["id"]: r for g in shown["groups"] for r in g["removed"]}
    assert {"custom-b", "12345"} & (set(removed) | {g["kept"]["id"] for g in shown["groups"]})
    assert any(i.startswith("part-99.parquet:") for i in removed)
    assert any(i.startswith("part-01.json.gz:") for i in removed)
    for doc_id, row in removed.items():
        assert row["text"] == records[doc_id]["text"]


@pytest.mark.slow
def test_errors_are_one_line_with_status_2(demo_out: Path, planted: tuple[Path, dict],
                                           tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert "does not exist" in show_error(capsys, str(tmp_path / "missing"))
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "notes.txt").write_text("mine")
    assert "is not an NDCL output" in show_error(capsys, str(tmp_path / "theirs"))
    assert "is a file" in show_error(capsys, str(tmp_path / "theirs" / "notes.txt"))
    unfinished = copy_output(demo_out, tmp_path / "unfinished")
    (unfinished / "_SUCCESS").unlink()
    assert "not a finished NDCL output" in show_error(capsys, str(unfinished))
    assert "no document with that id" in show_error(capsys, str(demo_out), "--group", "nope")
    err = show_error(capsys, str(demo_out), "--group", f"{DEMO_NAME}:484")
    assert f"its group is --group {DEMO_NAME}:4" in err
    assert "is kept and has no duplicates" in show_error(capsys, str(demo_out), "--group",
                                                         f"{DEMO_NAME}:1")
    assert "has no clusters" in show_error(capsys, str(planted[0]), "--clusters")
    clustered = tmp_path / "clustered"
    assert main(["-q", "cluster", "--input", str(planted[0].parent / "in" / "part-00.json"),
                 "--output", str(clustered), "--k1", "2", "--k2", "2", "--kmeans-backend",
                 "local"]) == 0
    capsys.readouterr()
    assert "a cluster-only run" in show_error(capsys, str(clustered))
    assert len(show_json(capsys, str(clustered), "--clusters")["clusters"]) == 2
    assert "--level B goes with --clusters" in show_error(capsys, str(demo_out), "--level", "B")


def _dedup_copy(tmp_path: Path) -> tuple[Path, Path]:
    """A dedup output of a plain JSON-lines copy of the demo corpus (which the test may
    change), and that copy."""
    corpus = tmp_path / "in" / "demo.json"
    corpus.parent.mkdir()
    with gzip.open(DEMO_CORPUS, "rb") as handle:
        corpus.write_bytes(handle.read())
    out = tmp_path / "out"
    assert main(["-q", "dedup", "--input", str(corpus), "--output", str(out)]) == 0
    return out, corpus


@pytest.mark.slow
def test_changed_or_missing_inputs_are_refused(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    out, corpus = _dedup_copy(tmp_path)
    capsys.readouterr()  # the run's summary table
    assert show(str(out), "--limit", "1") == 0
    capsys.readouterr()

    # Same size and modification time, a removed document's url edited: still caught.
    stat = corpus.stat()
    data = corpus.read_bytes()
    url = json.loads(data.splitlines()[483])["url"].encode()
    corpus.write_bytes(data.replace(url, url[:-1] + b"X", 1))
    os.utime(corpus, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    err = show_error(capsys, str(out), "--group", "demo.json:4")
    assert "changed since the run" in err and "demo.json:484" in err
    assert "cannot read" not in err

    corpus.write_bytes(data + b"\n")
    assert "changed since the run" in show_error(capsys, str(out), "--limit", "1")
    os.utime(corpus, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5 * 10**9))
    corpus.write_bytes(data)
    os.utime(corpus, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5 * 10**9))
    assert "changed since the run (modified " in show_error(capsys, str(out), "--limit", "1")
    corpus.unlink()
    assert "no longer exists" in show_error(capsys, str(out), "--limit", "1")


@pytest.mark.slow
def test_inputs_not_recorded_can_be_given(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    out, corpus = _dedup_copy(tmp_path)
    capsys.readouterr()  # the run's summary table
    manifest = json.loads((out / "_ndcl.json").read_text())
    del manifest["inputs"]
    (out / "_ndcl.json").write_text(json.dumps(manifest))
    assert "give the run's inputs with --input" in show_error(capsys, str(out))
    moved = tmp_path / "moved" / corpus.name
    moved.parent.mkdir()
    corpus.rename(moved)
    shown = show_json(capsys, str(out), "--group", "demo.json:4", "--input", str(moved))
    assert [r["id"] for r in shown["groups"][0]["removed"]] == [
        "demo.json:484", "demo.json:1072", "demo.json:374"]


@pytest.mark.slow
def test_gs_output_and_inputs(gcs_bucket: object, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    records = planted_records(seed=5)
    files = write_corpus(tmp_path / "in", records, files=2)
    for path in files:
        gcs_bucket.blob(f"show/in/{path.name}").upload_from_filename(str(path))
    out = f"gs://{BUCKET}/show/out"
    assert main(["-q", "dedup", "--input", f"gs://{BUCKET}/show/in/part-*", "--output",
                 out]) == 0
    capsys.readouterr()
    shown = show_json(capsys, out, "--limit", "1000", "--members", "0")
    texts = {r["id"]: r["text"] for g in shown["groups"] for r in g["removed"]}
    assert texts and all(isinstance(t, str) and t for t in texts.values())
    by_url = {r["url"]: r["text"] for r in records}
    for group in shown["groups"]:
        for removed in group["removed"]:
            assert removed["text"] == by_url[removed["url"]]
    assert show(out, "--limit", "2") == 0
    assert f"{out}: " in capsys.readouterr().out
    gcs_bucket.blob(f"show/in/{files[1].name}").upload_from_string(b'{"text": "other"}\n')
    gcs_bucket.blob(f"show/in/{files[0].name}").upload_from_string(b'{"text": "other"}\n')
    assert "changed since the run" in show_error(capsys, out, "--limit", "1000")
    assert "does not exist" in show_error(capsys, f"gs://{BUCKET}/show/nothing")


def test_parser_help_and_no_heavy_imports() -> None:
    parser = argparse.ArgumentParser(prog="ndcl")
    add_show_command(parser.add_subparsers(dest="command"))
    show_parser = parser._subparsers._group_actions[0].choices["show"]
    for action in show_parser._actions:
        if action.option_strings and action.dest != "help":
            assert "(default" in action.help, action.dest
    args = parser.parse_args(["show", "OUT"])
    assert (args.limit, args.members, args.format, args.clusters, args.level) == (
        10, 5, "text", False, "A")
    with pytest.raises(SystemExit):
        parser.parse_args(["show", "OUT", "--limit", "0"])
    code = ("import sys, beam_pipeline.show; "
            "print(sorted(m for m in ('apache_beam', 'sklearn', 'pyarrow') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True, check=True).stdout.strip()
    assert loaded == "[]"


def test_ndcl_show_through_the_cli(demo_out: Path) -> None:
    """Wired into ``ndcl``: text, JSON, and an unknown flag refused before reading anything."""
    base = [sys.executable, "-m", "beam_pipeline.cli", "show", str(demo_out)]
    text = subprocess.run([*base, "--limit", "1"], capture_output=True, text=True, cwd=REPO)
    assert text.returncode == 0, text.stderr
    assert "group 1:" in text.stdout and "\x1b[" not in text.stdout
    as_json = subprocess.run([*base, "--limit", "2", "--format", "json"],
                             capture_output=True, text=True, cwd=REPO)
    assert len(json.loads(as_json.stdout)["groups"]) == 2
    bad = subprocess.run([*base, "--bogus"], capture_output=True, text=True, cwd=REPO)
    assert bad.returncode == 2 and "unknown option --bogus" in bad.stderr
