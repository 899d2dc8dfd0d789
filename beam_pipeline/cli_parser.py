"""The ``ndcl`` argument parser: :func:`build_parser` is the one way to it.

Everything that needs the CLI's flags calls :func:`build_parser`: ``beam_pipeline.cli`` to
parse a command line, ``beam_pipeline.cli_checks`` to name the nearest flag of a mistyped one,
``runners.dataflow.template`` to check ``metadata.json`` against ``ndcl run``. Config flags
default to None so that an unset flag leaves the ``--config`` preset alone; their help shows
the config field's default instead. Building the parser must import neither Ray nor JAX, so
that ``ndcl --help`` stays quick (tests/test_cli_flags.py checks in a fresh process).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
from pathlib import Path
from typing import Any

from beam_pipeline.config import KEEP_POLICIES, VERIFY_MODES, ClusterConfig, DedupConfig

# CLI flag → DedupConfig field; flags left unset do not override the YAML.
DEDUP_FLAGS: dict[str, tuple[str, type]] = {
    "--threshold": ("threshold", float),
    "--num-perm": ("num_perm", int),
    "--ngram": ("ngram", int),
    "--bands": ("bands", int),
    "--rows": ("rows", int),
    "--verify": ("verify", str),
    "--keep": ("keep", str),
    "--tokenizer": ("tokenizer", str),
    "--seed": ("seed", int),
    "--max-doc-bytes": ("max_doc_bytes", int),
    "--max-bucket-size": ("max_bucket_size", int),
    "--cc-max-rounds": ("cc_max_rounds", int),
    "--batch-size": ("batch_size", int),
    "--shuffle-partitions": ("shuffle_partitions", int),
}


# CLI flag → ClusterConfig field.
CLUSTER_FLAGS: dict[str, tuple[str, type]] = {
    "--k1": ("k1", int),
    "--k2": ("k2", int),
    "--n-components": ("n_components", int),
    "--n-features": ("n_features", int),
    "--sample-size": ("sample_size", int),
    "--kmeans-max-iter": ("max_iter", int),
    "--kmeans-mode": ("mode", str),
    "--kmeans-backend": ("backend", str),
    "--service-address": ("service_address", str),
    "--service-num-cpus": ("service_num_cpus", int),
    "--cluster-seed": ("cluster_seed", int),
    "--label-field": ("label_field", str),
}

# What ClusterConfig accepts for ``mode`` and ``backend`` (runners.kmeans.jax_kmeans.MODES has
# the modes too, but importing it imports JAX); tests/test_cli_flags.py checks they agree.
KMEANS_MODES = ("full", "minibatch")
KMEANS_BACKENDS = ("ray", "local")

# Help of each config flag: (metavar, what it sets). The default shown is the config field's
# (a flag itself defaults to None, so that an unset flag leaves the --config preset alone).
FLAG_HELP: dict[str, tuple[str | None, str]] = {
    "--threshold": ("T", "Jaccard threshold"),
    "--num-perm": ("N", "MinHash permutations"),
    "--ngram": ("N", "shingle length in tokens"),
    "--bands": ("B", "LSH bands, given with --rows"),
    "--rows": ("R", "LSH rows per band, given with --bands"),
    "--verify": (None, "how candidate pairs are checked: exact Jaccard, signature agreement "
                       "or not at all"),
    "--keep": (None, "which document of a duplicate cluster is kept"),
    "--tokenizer": (None, "unicode letter/digit tokens or ASCII [a-z0-9] runs"),
    "--seed": ("S", "seed of every hash"),
    "--max-doc-bytes": ("BYTES", "reject longer input lines as too_large"),
    "--max-bucket-size": ("N", "cut larger LSH buckets to their first N members"),
    "--cc-max-rounds": ("N", "connected-components rounds; the job fails if not converged"),
    "--batch-size": ("N", "lines per document batch"),
    "--shuffle-partitions": ("N", "keys of the batched shuffles"),
    "--k1": ("K", "level-1 clusters (cluster_A)"),
    "--k2": ("K", "level-2 clusters inside each level-1 cluster (cluster_B)"),
    "--n-components": ("N", "SVD embedding dimensions"),
    "--n-features": ("N", "hashed term columns"),
    "--sample-size": ("N", "documents sampled to fit the SVD and K-Means"),
    "--kmeans-max-iter": ("N", "K-Means iterations at most"),
    "--kmeans-mode": (None, "K-Means steps on the full sample or on mini-batches"),
    "--kmeans-backend": (None, "ray: the Ray-hosted K-Means service; local: in this process"),
    "--service-address": ("ADDR", "K-Means service: HOST:PORT or ray://HOST:10001"),
    "--service-num-cpus": ("N", "CPUs of a K-Means service started for the run"),
    "--cluster-seed": ("S", "seed of the sample, SVD and K-Means"),
    "--label-field": ("FIELD", "input field with a class label, for NMI/ARI; '' for none"),
}
# Config fields whose default (None) means something the help should say.
_NONE_DEFAULTS = {
    "bands": "derived from the threshold",
    "rows": "derived from the threshold",
    "service_address": "a service started on this machine",
}
# The config field behind a flag, where it is not the flag's dest.
_FLAG_FIELDS = {"--cluster-seed": "seed"}
GLOBAL_DB_URL_HELP = ("benchmark database, a SQLAlchemy URL (default: $NDCL_DB_URL, else "
                      "sqlite:///ndcl-benchmarks.db)")


def flag_choices() -> dict[str, tuple[str, ...]]:
    """The flags that take one of a few words → those words (what the configs validate)."""
    from transforms.minhash import TOKENIZERS

    return {"--verify": VERIFY_MODES, "--keep": KEEP_POLICIES, "--tokenizer": TOKENIZERS,
            "--kmeans-mode": KMEANS_MODES, "--kmeans-backend": KMEANS_BACKENDS}


def _config_default(flag: str) -> str:
    """The default of ``flag``'s config field, as the help shows it."""
    dest = {**DEDUP_FLAGS, **CLUSTER_FLAGS}[flag][0]
    name = _FLAG_FIELDS.get(flag, dest)
    cls = DedupConfig if flag in DEDUP_FLAGS else ClusterConfig
    value = {f.name: f.default for f in dataclasses.fields(cls)}[name]
    if value is None:
        return _NONE_DEFAULTS.get(name, "none")
    if isinstance(value, str):
        return repr(value) if not value or " " in value else value
    return str(value)


def _add_config_flag(parser: argparse.ArgumentParser | Any, flag: str,
                     choices: dict[str, tuple[str, ...]]) -> None:
    dest, kind = {**DEDUP_FLAGS, **CLUSTER_FLAGS}[flag]
    metavar, text = FLAG_HELP[flag]
    parser.add_argument(
        flag, dest=dest, type=kind, default=None, metavar=metavar, choices=choices.get(flag),
        help=f"{text} (default: {_config_default(flag)}, or the --config preset)")


def add_io_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", nargs="+", required=True, metavar="PATTERN",
                        help="input files: paths, globs or gs:// patterns (JSON lines, "
                             "optionally .gz, or .parquet); - reads standard input "
                             "(required)")
    parser.add_argument("--output", required=True, metavar="DIR",
                        help="output folder: absent, empty or an earlier NDCL output "
                             "(required)")
    parser.add_argument("--config", metavar="YAML",
                        help="preset (configs/*.yaml) that flags override (default: none, "
                             "the built-in defaults shown here)")


def add_dedup_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("near-duplicate removal (ND)")
    choices = flag_choices()
    for flag in DEDUP_FLAGS:
        _add_config_flag(group, flag, choices)


def add_cluster_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("clustering (CL)")
    choices = flag_choices()
    for flag in CLUSTER_FLAGS:
        _add_config_flag(group, flag, choices)
    default = "on" if ClusterConfig.balanced else "off"
    group.add_argument("--balanced", dest="balanced", action="store_true", default=None,
                       help=f"K-Means with roughly equal cluster sizes (default: {default}, "
                            "or the --config preset)")


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
    reading = cluster.add_argument_group("reading")
    for flag in ("--max-doc-bytes", "--batch-size"):
        _add_config_flag(reading, flag, {})
    run = commands.add_parser("run", help="both engines: ND→CL (nd_cl) or CL→ND (cl_nd)",
                              epilog=pipeline_epilog)
    run.add_argument("--workflow", choices=("nd_cl", "cl_nd"), default="nd_cl",
                     help="nd_cl: dedup, then cluster what is kept; cl_nd: cluster, then dedup "
                          "inside clusters (default: %(default)s)")
    run.add_argument("--dedup-scope", choices=("cluster_A", "cluster_B"), default="cluster_A",
                     help="cl_nd: the clusters inside which duplicates are removed "
                          "(default: %(default)s)")
    add_io_flags(run)
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
