"""The command line's flags: unknown ones are errors naming the nearest known flag (before any
pipeline runs), underscore aliases, global flags after the subcommand, Beam options passed
through as given, ``--version``, and ``--help`` that shows every default and choice without
importing Ray or JAX."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from beam_pipeline.cli import main
from beam_pipeline.cli_checks import parse_args
from beam_pipeline.cli_parser import KMEANS_BACKENDS, KMEANS_MODES, build_parser, flag_choices
from beam_pipeline.config import ClusterConfig, ConfigError, DedupConfig
from runners.options import RUNNERS
from tests.conftest import DEMO_CORPUS, REPO

HELP_COMMANDS = [["dedup"], ["cluster"], ["run"], ["runs"], ["rerun"], ["report"],
                 ["evaluate"], ["truth"], ["service", "start"], ["service", "status"],
                 ["service", "stop"], ["template", "check"], ["template", "build"]]


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


def test_choices_are_what_the_configs_accept() -> None:
    choices = flag_choices()
    for flag, field in (("--verify", "verify"), ("--keep", "keep"), ("--tokenizer", "tokenizer")):
        for value in choices[flag]:
            DedupConfig(**{field: value})
        with pytest.raises(ConfigError):
            DedupConfig(**{field: "bogus"})
    for field, values in (("mode", KMEANS_MODES), ("backend", KMEANS_BACKENDS)):
        for value in values:
            ClusterConfig(**{field: value})
        with pytest.raises(ConfigError):
            ClusterConfig(**{field: "bogus"})


def test_service_flag_defaults_are_the_service_config_defaults() -> None:
    pytest.importorskip("ray")
    from runners.kmeans import service, service_cli

    cfg = service.ServiceConfig()
    shown = {k: v for k, v in service_cli.DEFAULTS.items() if k != "state_file"}
    assert shown == {k: getattr(cfg, k) for k in shown}
    assert service_cli.DEFAULTS["state_file"] == str(service.DEFAULT_STATE_FILE)


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


# --------------------------------------------------------------------------- version, help


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"ndcl {importlib.metadata.version('ndcl')}"


def _help(capsys: pytest.CaptureFixture[str], command: list[str]) -> str:
    with pytest.raises(SystemExit) as exc:
        main([*command, "--help"])
    assert exc.value.code == 0
    return capsys.readouterr().out


def _option_blocks(text: str) -> dict[str, str]:
    """``--flag`` → its help block (the option line and its indented continuation)."""
    blocks: dict[str, str] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if re.match(r"^  -", line):
            current = [line]
            blocks[re.findall(r"--[\w-]+", line)[0]] = current  # type: ignore[assignment]
        elif current is not None and line.startswith("   "):
            current.append(line)
        else:
            current = None
    return {flag: re.sub(r"\s+", " ", " ".join(lines)) for flag, lines in blocks.items()}


@pytest.mark.parametrize("command", HELP_COMMANDS, ids=" ".join)
def test_help_shows_every_default(capsys: pytest.CaptureFixture[str],
                                  command: list[str]) -> None:
    blocks = _option_blocks(_help(capsys, command))
    assert "--help" in blocks and "--db-url" in blocks
    for flag, block in blocks.items():
        if flag != "--help":
            assert "default" in block or "required" in block, block


def test_help_shows_choices_and_config_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    defaults = {f.name: f.default for f in dataclasses.fields(DedupConfig)}
    cluster_defaults = {f.name: f.default for f in dataclasses.fields(ClusterConfig)}
    for command in ("dedup", "cluster", "run"):
        text = _help(capsys, [command])
        blocks = _option_blocks(text)
        assert "(required)" in blocks["--input"] and "(required)" in blocks["--output"]
        assert "--num_perm" not in text  # the aliases are mentioned once, not listed
        choice_flags = ["--runner"]
        if command != "cluster":
            assert (f"Jaccard threshold (default: {defaults['threshold']}, or the --config "
                    "preset)") in blocks["--threshold"]
            assert f"(default: {defaults['verify']}," in blocks["--verify"]
            choice_flags += ["--verify", "--keep", "--tokenizer"]
        if command != "dedup":
            assert f"(default: {cluster_defaults['k1']}," in blocks["--k1"]
            assert "(default: off," in blocks["--balanced"]
            choice_flags += ["--kmeans-backend", "--kmeans-mode"]
        if command == "run":
            assert "{nd_cl,cl_nd}" in blocks["--workflow"]
            assert "(default: nd_cl)" in blocks["--workflow"]
        choices = {**flag_choices(), "--runner": RUNNERS}
        for flag in choice_flags:
            shown = re.search(re.escape(flag) + r" \{([^}]*)\}", blocks[flag])
            assert shown is not None and tuple(shown.group(1).split(",")) == choices[flag]
    assert "(default: unicode, or the --config preset)" in _option_blocks(
        _help(capsys, ["dedup"]))["--tokenizer"]


def test_template_reads_run_flags_with_their_aliases() -> None:
    from runners.dataflow.template import run_flags

    flags = run_flags()
    assert flags["--num-perm"].option == "--num-perm" and "--num_perm" in flags
    assert flags["--input"].required and not flags["--balanced"].takes_value
    sub = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert all(not p.allow_abbrev for p in sub.values())


def test_help_and_version_import_neither_ray_nor_jax() -> None:
    """In a fresh interpreter (this one may have imported them for other tests)."""
    commands = [["dedup", "--help"], ["cluster", "--help"], ["run", "--help"], ["--help"],
                ["--version"], ["service", "start", "--help"]]
    code = ("import sys\nfrom beam_pipeline.cli import main\n"
            f"for argv in {commands!r}:\n"
            "    try:\n        main(argv)\n    except SystemExit as exc:\n"
            "        assert exc.code == 0, (argv, exc.code)\n"
            "heavy = [m for m in ('ray', 'jax') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("usage: ndcl") == 5 and "\nndcl " in done.stdout
