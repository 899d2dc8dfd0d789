"""``beam_pipeline.cli_checks``: unknown flags are errors naming the nearest known flag (before
any pipeline runs), underscore aliases, global flags after the subcommand, Beam options passed
through as given, invalid choices, and a real run with all of them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from beam_pipeline.cli import main
from beam_pipeline.cli_checks import parse_args
from tests.conftest import DEMO_CORPUS


def _io(tmp_path: Path) -> tuple[list[str], Path]:
    out = tmp_path / "out"
    return ["--input", str(DEMO_CORPUS), "--output", str(out)], out


def _error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run ``ndcl argv``, which must fail with exit 2 and one line on stderr; the line."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


# --------------------------------------------------------------------------- unknown flags


@pytest.mark.parametrize(("flags", "expected"), [
    (["--treshold=0.8"], "unknown option --treshold; did you mean --threshold?"),
    (["--treshold", "0.8"], "unknown option --treshold; did you mean --threshold?"),
    (["--num-prem", "64"], "unknown option --num-prem; did you mean --num-perm?"),
    # No abbreviations: a prefix must not silently bind to a flag.
    (["--thresh", "0.5"], "unknown option --thresh; did you mean --threshold?"),
    (["--threshold", "0.8", "extra"], "unexpected argument 'extra'"),
    (["--k1", "3"], "unknown option --k1 for ndcl dedup (a flag of ndcl cluster, ndcl run)"),
    (["--direct_num_workers", "abc"], "argument --direct_num_workers: invalid int value"),
])
def test_unknown_flags_fail_before_the_pipeline(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str],
                                                flags: list[str], expected: str) -> None:
    io, out = _io(tmp_path)
    err = _error(capsys, ["-q", "dedup", *io, *flags])
    assert err.startswith("ndcl: error: ") and expected in err
    assert not out.exists()


def test_unknown_flags_of_cluster_and_run(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    io, out = _io(tmp_path)
    err = _error(capsys, ["cluster", *io, "--kmeans-bakend", "local"])
    assert err == "ndcl: error: unknown option --kmeans-bakend; did you mean --kmeans-backend?"
    err = _error(capsys, ["run", *io, "--workflw=cl_nd"])
    assert err == "ndcl: error: unknown option --workflw; did you mean --workflow?"
    assert not out.exists()


def test_unknown_flags_of_other_commands(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    assert _error(capsys, ["--db-url", url, "runs", "--limt", "3"]) == (
        "ndcl: error: unknown option --limt; did you mean --limit?")
    # Beam's options are no flags of the other commands.
    assert "unknown option --direct_num_workers" in _error(
        capsys, ["--db-url", url, "runs", "--direct_num_workers=2"])
    assert "did you mean --threshold?" in _error(
        capsys, ["truth", str(DEMO_CORPUS), "--output", str(tmp_path / "t.json"),
                 "--thresold=0.5"])
    assert "did you mean --num-cpus?" in _error(capsys, ["service", "start", "--num_cpu", "2"])
    assert not (tmp_path / "x.db").exists() and not (tmp_path / "t.json").exists()


# --------------------------------------------------------------------------- accepted flags


def test_underscore_aliases_and_global_flags_after_the_command() -> None:
    base = ["dedup", "--input", "in.json", "--output", "out"]
    args, beam_args = parse_args([*base, "--num_perm=64", "--max_doc_bytes", "100",
                                  "--shuffle_partitions", "8"])
    assert (args.num_perm, args.max_doc_bytes, args.shuffle_partitions) == (64, 100, 8)
    assert beam_args == []
    args, _ = parse_args(["cluster", "--input", "x", "--output", "y", "--kmeans_backend",
                          "local", "--label_field", "topic", "--k1", "3", "--job_endpoint",
                          "localhost:8099"])
    # The parsed names are the pipeline options' (beam_pipeline.options): kmeans_backend.
    assert (args.kmeans_backend, args.label_field, args.k1) == ("local", "topic", 3)
    assert args.job_endpoint == "localhost:8099"
    # Unset flags stay None, so that they leave the --config preset alone.
    args, _ = parse_args(base)
    assert args.threshold is None and args.verify is None and args.quiet is False
    # Global flags before the command survive it; after it they apply too (the later wins).
    args, _ = parse_args(["-q", "--db-url", "sqlite:///a.db", *base])
    assert args.quiet is True and args.db_url == "sqlite:///a.db"
    args, _ = parse_args([*base, "--db-url", "sqlite:///b.db", "-q"])
    assert args.quiet is True and args.db_url == "sqlite:///b.db"
    args, _ = parse_args(["--db-url", "sqlite:///a.db", *base, "--db_url=sqlite:///b.db"])
    assert args.db_url == "sqlite:///b.db"
    args, _ = parse_args(["runs", "--db-url", "sqlite:///c.db", "--quiet"])
    assert args.db_url == "sqlite:///c.db" and args.quiet is True


def test_beam_options_pass_through_as_given() -> None:
    base = ["run", "--input", "x", "--output", "y"]
    given = ["--direct_num_workers", "1", "--direct_running_mode=in_memory",
             "--experiments", "a", "--save_main_session"]
    args, beam_args = parse_args([*base, *given, "--k1", "3"])
    assert beam_args == given and args.k1 == 3


def test_invalid_choices_exit_2_naming_them(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    io, out = _io(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(["dedup", *io, "--verify", "fast"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'fast'" in err and "'signature'" in err
    with pytest.raises(SystemExit) as exc:
        main(["cluster", *io, "--kmeans-mode", "online"])
    assert exc.value.code == 2 and "'minibatch'" in capsys.readouterr().err
    assert not out.exists()


def _write_small_corpus(path: Path) -> Path:
    words = [f"w{i}" for i in range(400)]
    records = []
    for doc in range(20):
        text = words[doc * 20:doc * 20 + 60]
        if doc % 5 == 4:  # a near duplicate of the previous document
            text = [*words[(doc - 1) * 20:(doc - 1) * 20 + 59], "changed"]
        records.append({"id": f"d{doc:02d}", "text": " ".join(text)})
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.mark.slow
def test_real_run_with_aliases_globals_after_the_command_and_a_beam_option(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from beam_pipeline.db import get_run

    corpus = _write_small_corpus(tmp_path / "small.jsonl")
    db = tmp_path / "x.db"
    url = f"sqlite:///{db}"
    out = tmp_path / "out"
    assert main(["dedup", "--input", str(corpus), "--output", str(out), "--num_perm", "64",
                 "--bands", "16", "--rows", "4", "--db-url", url, "-q",
                 "--direct_num_workers", "1"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_perm"] == 64 and (summary["bands"], summary["rows"]) == (16, 4)
    assert summary["read"] == 20
    assert "recorded as run 1" in capsys.readouterr().out
    assert db.exists()
    assert main(["--db-url", url, "runs"]) == 0
    assert "dedup" in capsys.readouterr().out
    run = get_run(url, 1)
    assert run is not None and run["argv"][0] == "dedup"
    # The recorded command has no global flags (a database URL may hold a password).
    assert "--db-url" not in run["argv"] and "-q" not in run["argv"]
    assert "--num_perm" in run["argv"]
