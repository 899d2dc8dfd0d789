"""The ``ndcl`` argument parser: :func:`build_parser` is the one way to it.

Everything that needs the CLI's flags calls :func:`build_parser`: ``beam_pipeline.cli`` to
parse a command line, ``beam_pipeline.cli_checks`` to name the nearest flag of a mistyped one,
``runners.dataflow.template`` to check ``metadata.json`` against ``ndcl run``. The config flags
are NDCL's pipeline options (``beam_pipeline.options``: generated from the config dataclasses,
added here by the same function that adds them to Beam's parser), so the parsed namespace
carries the option names (``kmeans_backend``). They default to None so that an unset flag
leaves the ``--config`` preset alone; their help shows the config field's default instead.
Building the parser must import neither Ray nor JAX, so that ``ndcl --help`` stays quick
(tests/beam_pipeline/test_cli_parser.py checks in a fresh process).
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Any

from beam_pipeline.config import KMEANS_BACKENDS as KMEANS_BACKENDS  # re-exported
from beam_pipeline.config import KMEANS_MODES as KMEANS_MODES  # re-exported
from beam_pipeline.config import ClusterConfig, DedupConfig
from beam_pipeline.config_fields import config_fields
from beam_pipeline.options import add_config_arguments, add_run_arguments

GLOBAL_DB_URL_HELP = ("benchmark database, a SQLAlchemy URL (default: $NDCL_DB_URL, else "
                      "sqlite:///ndcl-benchmarks.db)")
# The DedupConfig fields that ``ndcl cluster`` takes too (how it reads its input).
READING_FIELDS = ("max_doc_bytes", "batch_size")


def flag_choices() -> dict[str, tuple[str, ...]]:
    """The config flags that take one of a few words → those words (what the configs
    validate)."""
    return {spec.flag: spec.choices for cls in (DedupConfig, ClusterConfig)
            for spec in config_fields(cls) if spec.choices}


def add_io_flags(parser: argparse.ArgumentParser) -> None:
    add_run_arguments(parser, workflow=False, required=True)


def add_dedup_flags(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser.add_argument_group("near-duplicate removal (ND)"), DedupConfig)


def add_cluster_flags(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser.add_argument_group("clustering (CL)"), ClusterConfig)


class HelpFormatter(argparse.HelpFormatter):
    """Shows ``--num-perm N`` once instead of ``--num-perm N, --num_perm N``: every multi-word
    flag has its underscore twin, which the description mentions once."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=34)

    def _format_action_invocation(self, action: argparse.Action) -> str:
        shown = [o for o in action.option_strings
                 if not (o.startswith("--") and "_" in o
                         and o.replace("_", "-") in action.option_strings)]
        if len(shown) != len(action.option_strings):
            action = copy.copy(action)
            action.option_strings = shown
        return super()._format_action_invocation(action)


class _VersionAction(argparse.Action):
    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS,
                 default: Any = argparse.SUPPRESS, help: str | None = None) -> None:
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        print(f"ndcl {package_version()}")  # stdout, as argparse's own version action
        parser.exit()


def package_version() -> str:
    """The installed ``ndcl`` version, else the one ``setup.py`` declares (a bare checkout)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ndcl")
    except PackageNotFoundError:
        pass
    import ast

    setup_py = Path(__file__).resolve().parents[1] / "setup.py"
    try:
        tree = ast.parse(setup_py.read_text())
    except (OSError, SyntaxError):
        return "unknown"
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "version" and isinstance(
                node.value, ast.Constant):
            return str(node.value.value)
    return "unknown"


def subparsers_action(parser: argparse.ArgumentParser) -> argparse._SubParsersAction | None:
    """``parser``'s subcommands (the ``add_subparsers()`` action), None if it has none."""
    return next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)


def all_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """``parser`` and its subcommands' parsers, depth first."""
    out = [parser]
    sub = subparsers_action(parser)
    if sub is not None:
        for child in dict.fromkeys(sub.choices.values()):
            out += all_parsers(child)
    return out


def _finish(parser: argparse.ArgumentParser) -> None:
    """What every ``ndcl`` parser gets once the tree is built: no abbreviations (``--thresh``
    must not silently mean ``--threshold``), the help formatter, an underscore alias of every
    multi-word flag (``--num_perm``, as Beam and a Flex Template launcher write it), and, on
    the subcommands, the global ``--db-url`` and ``-q`` (so they work after the subcommand
    too; SUPPRESS keeps a subcommand from resetting a value given before it)."""
    for index, each in enumerate(all_parsers(parser)):
        each.allow_abbrev = False
        each.formatter_class = HelpFormatter
        if index and "--db-url" not in each._option_string_actions:
            each.add_argument("--db-url", default=argparse.SUPPRESS, metavar="URL",
                              help=GLOBAL_DB_URL_HELP)
        if index and "--quiet" not in each._option_string_actions:
            each.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                              help="only warnings and errors (default: off)")
        for action in list(each._actions):
            for option in list(action.option_strings):
                alias = "--" + option[2:].replace("-", "_")
                if option.startswith("--") and alias not in each._option_string_actions:
                    action.option_strings.append(alias)
                    each._option_string_actions[alias] = action


def build_parser() -> argparse.ArgumentParser:
    """The whole ``ndcl`` parser, every command and flag (``runners.dataflow.template`` reads
    ``run``'s flags from it)."""
    parser = argparse.ArgumentParser(
        prog="ndcl", allow_abbrev=False, formatter_class=HelpFormatter,
        description="Near-duplicate removal (ND) and two-level clustering (CL) on Apache "
                    "Beam. `ndcl COMMAND --help` lists a command's flags; multi-word flags "
                    "also take underscores (--num_perm).")
    parser.add_argument("--version", action=_VersionAction,
                        help="print `ndcl VERSION` and exit")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="only warnings and errors (default: off)")
    parser.add_argument("--db-url", metavar="URL", help=GLOBAL_DB_URL_HELP)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    pipeline_epilog = ("Other Beam pipeline options (--direct_num_workers=2 "
                       "--direct_running_mode=multi_processing, ...) are passed to Beam.")
    dedup = commands.add_parser("dedup", help="near-duplicate removal (ND) only",
                                epilog=pipeline_epilog)
    add_io_flags(dedup)
    add_dedup_flags(dedup)
    cluster = commands.add_parser("cluster", help="two-level clustering (CL) only",
                                  epilog=pipeline_epilog)
    add_io_flags(cluster)
    add_cluster_flags(cluster)
    add_config_arguments(cluster.add_argument_group("reading"), DedupConfig, READING_FIELDS)
    run = commands.add_parser("run", help="both engines: ND→CL (nd_cl) or CL→ND (cl_nd)",
                              epilog=pipeline_epilog)
    add_run_arguments(run, required=True)
    add_dedup_flags(run)
    add_cluster_flags(run)
    from runners.dataflow.template_parser import add_template_parser
    from runners.kmeans.service_cli import add_service_parser
    from runners.options import add_runner_flags

    for sub in (dedup, cluster, run):
        add_runner_flags(sub)
    add_service_parser(commands)
    add_template_parser(commands)
    from beam_pipeline.report import add_report_parser

    add_report_parser(commands)
    from beam_pipeline.show import add_show_command

    add_show_command(commands)
    from beam_pipeline.evaluate import add_evaluate_parsers

    add_evaluate_parsers(commands)
    runs = commands.add_parser("runs", help="list the runs recorded in the benchmark database")
    runs.add_argument("--limit", type=int, default=50, metavar="N",
                      help="the N newest runs (default: %(default)s)")
    rerun = commands.add_parser(
        "rerun", help="repeat a recorded run with the other (or given) ordering")
    rerun.add_argument("run_id", type=int, help="a run id of `ndcl runs` (required)")
    rerun.add_argument("--workflow", choices=("nd_cl", "cl_nd"),
                       help="(default: the other ordering than the recorded one)")
    rerun.add_argument("--output", metavar="DIR",
                       help="(default: the recorded output + '-<workflow>')")
    rerun.add_argument("--print-only", action="store_true",
                       help="print the command instead of running it (default: off)")
    rerun.add_argument("--template-path", metavar="GS_PATH",
                       help="print a `gcloud dataflow flex-template run` launch instead, with "
                            "--image and --region (default: none, run here)")
    rerun.add_argument("--image", help="the template's container image (default: a "
                                       "placeholder IMAGE)")
    rerun.add_argument("--region", default="us-central1",
                       help="the template launch's region (default: %(default)s)")
    _finish(parser)
    return parser
