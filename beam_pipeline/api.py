"""NDCL from Python (a notebook, a script): ``dedup``, ``cluster`` and ``run`` as functions.

    from beam_pipeline import api

    summary = api.dedup(["data/*.json.gz"], "out/", threshold=0.8)
    summary = api.run("data/*.json.gz", "out2/", workflow="cl_nd", k1=4,
                      kmeans_backend="local", beam_args=["--direct_num_workers=2"],
                      db_url="sqlite:///benchmarks.db")
    summary["kept"], summary["cluster"]["level_1"]["top_terms"]

Each function is the ``ndcl`` command of its name: the options are that command's flags by
their option names (the config fields' names, ``kmeans_backend``, ``cluster_seed``; ``config``
for a YAML preset; the runner flags such as ``runner``), ``beam_args`` any other Beam pipeline
options, ``db_url`` the benchmark database (default as the CLI: ``NDCL_DB_URL``, else
``sqlite:///ndcl-benchmarks.db``). The call is turned into the command's argument list and
checked by the CLI's own parser, so the output-safety rules, defaults and checks are the CLI's;
it runs the job, prints the summary table, records the run like the CLI (the recorded command
is the equivalent ``ndcl`` command line, so ``ndcl rerun`` repeats an API run) and returns the
summary (``OUT/summary.json``). ``wall_seconds`` counts from the call, not from the start of
the notebook's process.

Errors raise instead of exiting: an unknown option ``TypeError`` (naming it, and the nearest
known one); a bad value, input or output ``ValueError`` (``ConfigError``, ``InputError``,
``OutputError``, ...); an unreachable K-Means service ``ServiceUnavailableError``; a failed
pipeline the runner's own exception (nothing is committed). Heavy modules (Beam, the runners,
the database) are imported by the call, not by ``import beam_pipeline.api``.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import io
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

# Flags that the functions' own arguments give, or that only make sense on a command line.
_NOT_OPTIONS = frozenset({"help", "input", "output", "db_url", "quiet", "command", "dry_run"})


def dedup(inputs: str | Sequence[str], output: str, **options: Any) -> dict[str, Any]:
    """``ndcl dedup``: near-duplicate removal; returns the run's summary."""
    return _call("dedup", inputs, output, options)


def cluster(inputs: str | Sequence[str], output: str, **options: Any) -> dict[str, Any]:
    """``ndcl cluster``: two-level clustering of every document; returns the summary."""
    return _call("cluster", inputs, output, options)


def run(inputs: str | Sequence[str], output: str, workflow: str = "nd_cl",
        **options: Any) -> dict[str, Any]:
    """``ndcl run --workflow nd_cl|cl_nd``: both engines; returns the summary."""
    return _call("run", inputs, output, {"workflow": workflow, **options})


def command_argv(command: str, inputs: str | Sequence[str], output: str,
                 options: dict[str, Any]) -> list[str]:
    """The ``ndcl`` arguments of a call (without ``beam_args`` and ``db_url``): ``--flag=value``
    per option, a bool option as its bare flag when true. Raises ``TypeError`` for an option
    that ``command`` does not have."""
    from beam_pipeline.cli_parser import build_parser, subparsers_action

    parser = subparsers_action(build_parser()).choices[command]
    actions = {action.dest: action for action in parser._actions
               if action.option_strings and action.dest not in _NOT_OPTIONS}
    patterns = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    argv = [command, "--input", *map(str, patterns), "--output", str(output)]
    for name, value in options.items():
        action = actions.get(name)
        if action is None:
            close = difflib.get_close_matches(name, list(actions), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else (
                f"; the options are {', '.join(sorted(actions))}")
            raise TypeError(f"api.{command}() got an unknown option {name!r}{hint}")
        if value is None:
            continue
        if action.nargs == 0:  # a switch: --balanced
            if not isinstance(value, bool):
                raise TypeError(f"option {name!r} is a switch: True or False, got {value!r}")
            argv += [action.option_strings[0]] if value else []
        else:
            argv.append(f"{action.option_strings[0]}={value}")
    return argv


def _parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """The CLI's parse of ``argv``; its errors (a bad choice, a value that does not parse)
    as one-line ``ValueError``s instead of argparse's exit."""
    from beam_pipeline.cli_checks import parse_args

    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            return parse_args(argv)
    except SystemExit:
        lines = [line for line in errors.getvalue().splitlines() if line.strip()]
        raise ValueError(lines[-1] if lines else f"invalid arguments: {argv}") from None


def _call(command: str, inputs: str | Sequence[str], output: str,
          options: dict[str, Any]) -> dict[str, Any]:
    started_at = time.time()
    options = dict(options)
    beam_args = list(options.pop("beam_args", None) or [])
    db_url = options.pop("db_url", None)
    if isinstance(beam_args, str) or not all(isinstance(a, str) for a in beam_args):
        raise TypeError("beam_args must be a list of strings, e.g. ['--direct_num_workers=2']")
    argv = [*command_argv(command, inputs, output, options), *beam_args]  # what is recorded
    args, beam_args = _parse(argv)
    args.db_url = db_url

    from beam_pipeline import cli
    from beam_pipeline.config import ClusterConfig, DedupConfig, load_pipeline_config
    from beam_pipeline.options import config_from_options
    from runners.options import (
        apply_pipeline_config,
        loopback_worker_env,
        runner_beam_args,
    )

    cfg = config_from_options(DedupConfig, args)
    cluster_cfg = config_from_options(ClusterConfig, args)
    runner_args = apply_pipeline_config(args, load_pipeline_config(args.config))
    beam_args = [*runner_beam_args(runner_args), *beam_args]
    problem = cli.remote_service_problem(args.command, cluster_cfg, beam_args)
    if problem:
        raise ValueError(problem)

    from beam_pipeline.resources import ResourceSampler
    from beam_pipeline.run import run_graph
    from beam_pipeline.timeline import Timeline

    environ = {name: os.environ.get(name) for name in ("PATH", "JDK_JAVA_OPTIONS")}
    os.environ.update(loopback_worker_env(beam_args))
    sampler = ResourceSampler()
    try:
        with sampler:
            result = run_graph(
                args.workflow if command == "run" else command, args.input, args.output, cfg,
                None if command == "dedup" else cluster_cfg, beam_args,
                getattr(args, "dedup_scope", None) or "cluster_A", Timeline(started_at))
    finally:
        for name, value in environ.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    cli.print_summary(result.summary, result.output)
    cli.record(args, result, sampler.result(), argv, runner_args)
    cli.outcome_status(result.summary, result.output)  # warns when nothing usable was read
    sys.stdout.flush()
    return result.summary
