"""``beam_pipeline.cli_parser``: the choices are what the configs accept, ``--version``, and
``--help`` that shows every default and choice without importing Ray or JAX."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import re
import subprocess
import sys

import pytest

from beam_pipeline.cli import main
from beam_pipeline.cli_parser import KMEANS_BACKENDS, KMEANS_MODES, flag_choices
from beam_pipeline.config import ClusterConfig, ConfigError, DedupConfig
from runners.options import RUNNERS
from tests.conftest import REPO

HELP_COMMANDS = [["dedup"], ["cluster"], ["run"], ["runs"], ["rerun"], ["report"],
                 ["evaluate"], ["truth"], ["service", "start"], ["service", "status"],
                 ["service", "stop"], ["template", "check"], ["template", "build"]]


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
