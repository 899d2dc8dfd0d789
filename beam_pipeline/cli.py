"""The ``ndcl`` command line.

    ndcl dedup --input PATTERN [PATTERN ...] --output DIR [--config configs/X.yaml]
               [--threshold T --num-perm N --ngram N --bands B --rows R --verify MODE
                --keep POLICY --seed S ...] [Beam pipeline options]
    ndcl cluster --input PATTERN [PATTERN ...] --output DIR [--k1 10 --k2 10
               --kmeans-backend ray|local --service-address ray://HOST:10001 ...]
    ndcl run --workflow nd_cl|cl_nd [--dedup-scope cluster_A|cluster_B] --input ... --output ...
               [dedup and cluster flags]
    ndcl service start|status|stop [--address ...]

Flags that ``ndcl`` does not define but Beam's pipeline options do (``--direct_num_workers=2
--direct_running_mode=multi_processing``, ``--experiments=...``) are passed to Beam as given by
``dedup``, ``cluster`` and ``run``; any other flag is an error naming the nearest known one.
Multi-word flags also take Beam's underscore spelling (``--num_perm``). The run ends with a
summary table.

The parser is built in ``beam_pipeline.cli_parser``, unknown arguments are checked in
``beam_pipeline.cli_checks``; this module runs the command and maps its outcome to an exit
status.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import re
import signal
import sys
import threading
from typing import Any

import beam_pipeline._startup  # noqa: F401  # first: Beam without pandas, signatures cached

# isort: split
from beam_pipeline.cli_checks import CommandLineError, parse_args
from beam_pipeline.config import ClusterConfig, ConfigError, DedupConfig, load_pipeline_config
from beam_pipeline.options import config_from_options
from runners.kmeans.errors import ServiceUnavailableError

LOG = logging.getLogger("ndcl")

# Exit statuses (README "Output safety"): bad usage, input or output location, found before the
# job starts; the K-Means service unreachable; every record read was rejected (output written);
# the pipeline failed while running (a task raised; nothing committed).
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_SERVICE = 3
EXIT_ALL_REJECTED = 4


def without_global_flags(argv: list[str]) -> list[str]:
    """``argv`` without ``-q/--quiet`` and ``--db-url URL`` (a database URL may hold a
    password; the recorded command must not)."""
    out, i = [], 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("-q", "--quiet"):
            i += 1
        elif arg in ("--db-url", "--db_url"):
            i += 2
        elif arg.startswith(("--db-url=", "--db_url=")):
            i += 1
        else:
            out.append(arg)
            i += 1
    return out


def print_summary(summary: dict[str, Any], output: str) -> None:
    rows = [
        ("read", summary["read"]),
        ("kept", summary["kept"]),
        ("duplicates", summary["duplicates"]),
        ("  exact", summary["duplicates_exact"]),
        ("  near", summary["duplicates_near"]),
        ("rejected", summary["rejected"]),
    ]
    if "bands" in summary:
        rows += [("bands x rows", f"{summary['bands']} x {summary['rows']}"),
                 ("cc rounds", f"{summary['cc_rounds']} (max {summary['cc_max_rounds']})"
                  + (f", then {summary['cc_finished_locally_edges']} edges on one worker"
                     if summary.get("cc_finished_locally_edges") else ""))]
    if "cluster" in summary:
        cluster = summary["cluster"]
        rows += [("clusters A x B", f"{cluster['k1']} x {cluster['k2']} "
                                     f"({cluster['backend']}, sample {cluster['sample']})")]
        levels = [cluster.get(f"level_{n}") or {} for n in (1, 2)]
        if "fits" in levels[1]:  # summaries that carry quality measures
            shown = {m: " ".join(f"{name}={v:.3f}" if isinstance(v, float) else f"{name}=n/a"
                                 for name, v in zip("AB", (lv.get(m) for lv in levels)))
                     for m in ("nmi", "ari", "silhouette")}
            field = cluster.get("label_field")
            labelled = (f"{cluster.get('labelled_docs') or 0:,} of {summary['kept']:,} kept "
                        f"labelled by {field!r}" if field else "no label field")
            rows.append(("cluster quality", f"NMI {shown['nmi']}, ARI {shown['ari']}, "
                                            f"silhouette {shown['silhouette']} ({labelled})"))
    rows.append(("wall seconds", f"{summary['wall_seconds']:.1f}"))
    parts = summary.get("time_parts") or {}
    # What the wall is made of, in order: start-up and preparation, the stages (inside the
    # run), the runner's overhead, the summary (beam_pipeline.timeline).
    for part in ("start_up", "prepare", "build_graph"):
        if part in parts:
            rows.append((f"  {part.replace('_', ' ')} s", f"{parts[part]:.2f}"))
    if "run" in parts:
        rows.append(("  run s", f"{parts['run']:.2f}"))
    indent = "    " if "run" in parts else "  "
    for stage, secs in summary["stage_seconds"].items():
        rows.append((f"{indent}{stage} s", f"{secs:.2f}"))
    if "runner_overhead_seconds" in summary:
        rows.append((f"{indent}runner overhead s", f"{summary['runner_overhead_seconds']:.2f}"))
    if "summarise" in parts:
        rows.append(("  summarise s", f"{parts['summarise']:.2f}"))
    width = max(len(name) for name, _ in rows)
    print(f"\nNDCL summary ({output})")
    for name, value in rows:
        print(f"  {name.ljust(width)}  {value}")
    if summary["rejected"]:
        reasons = ", ".join(f"{k}={v}" for k, v in summary["rejected_by_reason"].items())
        print(f"  rejected by reason: {reasons}")


_QUIET_LOGGERS = ("", "apache_beam", "ndcl", "beam_pipeline", "transforms", "runners")
GC_YOUNG_THRESHOLD = 10_000  # the program's (see main); Python's default is 700


def main(argv: list[str] | None = None) -> int:
    """``ndcl``; see :func:`build_parser`. Returns the exit status. Called with ``argv`` (in
    process: tests, ``ndcl rerun``), the logger levels ``-q``, the SIGTERM handler and the
    runner's environment variables changed are restored on return; as the ``ndcl`` program
    (``argv`` None) they are kept, so that the exit hooks (Beam stopping its job server) stay
    quiet too.

    As the program it also raises the young generation's threshold (:data:`GC_YOUNG_THRESHOLD`)
    and freezes the garbage collector's view twice (``gc.freeze``): after
    the imports, so that the collections during the run skip Beam's module graph, and at the
    end, so that the interpreter's exit does not walk the whole heap once more (about 0.4 s
    of every ``ndcl`` command's exit, measured on the demo corpus; exit hooks, flushes and
    closes still run). In process (``argv`` given) the collector is left alone."""
    levels = {name: logging.getLogger(name).level for name in _QUIET_LOGGERS}
    handler = signal.getsignal(signal.SIGTERM)
    environ = {name: os.environ.get(name) for name in ("PATH", "JDK_JAVA_OPTIONS")}
    if argv is None:
        gc.freeze()
        # A young-generation collection every 10,000 container allocations, not 700: the
        # runner makes and drops many short-lived objects per stage, and each collection,
        # with those of the older generations it triggers, walked them (0.11 -> 0.05 s of
        # collections in a demo `dedup`, counted with gc.callbacks). Cycles are still found,
        # at most 10,000 new objects later.
        gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    try:
        return _main(argv)
    finally:
        if argv is not None:  # in-process; `ndcl` itself keeps -q through the exit hooks
            _restore(levels, handler, environ)
        else:
            gc.freeze()


def _restore(levels: dict[str, int], handler: Any, environ: dict[str, str | None]) -> None:
    for name, value in environ.items():  # what loopback_worker_env set for the runner
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


def _main(argv: list[str] | None = None) -> int:
    raw_argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args, beam_args = parse_args(raw_argv)
    except CommandLineError as exc:
        # Before anything runs: one line naming the argument (and the nearest known flag).
        print(f"ndcl: error: {exc}", file=sys.stderr)
        return 2
    # What `ndcl rerun` repeats: the command and its flags, without the global options
    # (given before the command or after it).
    raw_argv = without_global_flags(
        raw_argv[raw_argv.index(args.command):] if args.command in raw_argv else raw_argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Beam logs every string type hint it cannot resolve at INFO; only its warnings matter here.
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    if args.quiet:
        # -q: NDCL's own warnings and errors only. Beam, Ray and a job server log a failed
        # task's traceback several times over (worker, runner, job messages); the one line
        # main prints names the cause, and a run without -q logs the whole traceback.
        logging.getLogger().setLevel(logging.CRITICAL)
        logging.getLogger("apache_beam").setLevel(logging.CRITICAL)
        for name in ("ndcl", "beam_pipeline", "transforms", "runners"):
            logging.getLogger(name).setLevel(logging.WARNING)
    # SIGTERM (a scheduler's stop, `timeout`, `kill`) exits through Python so that the
    # atexit hooks run: Beam's stops the Flink job server JVM it started, the runners' own
    # remove their temporary folders. Without this a killed run left the JVM running.
    if threading.current_thread() is threading.main_thread():  # signals: main thread only
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    if args.command == "service":
        from runners.kmeans.service_cli import run_service_command

        return run_service_command(args)
    if args.command == "template":
        from runners.dataflow.template import run_template_command

        return run_template_command(args)
    if args.command == "show":
        from beam_pipeline.show import run_show

        return run_show(args)
    if args.command == "report":
        from beam_pipeline.report import run_report_command

        return run_report_command(args, beam_args)
    if args.command in ("evaluate", "truth"):
        from beam_pipeline.evaluate import run_evaluate_command, run_truth_command

        command = run_evaluate_command if args.command == "evaluate" else run_truth_command
        return command(args, beam_args)
    if args.command == "runs":
        from sqlalchemy.exc import SQLAlchemyError

        from beam_pipeline.db import database_url, format_runs_table, list_runs, redact

        url = database_url(args.db_url)
        try:
            rows = list_runs(url, args.limit)
        except SQLAlchemyError as exc:
            # One line, without the driver's traceback (and without the password).
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            print(f"ndcl: cannot read the benchmark database {redact(url)}: "
                  f"{reason.replace(url, redact(url))}", file=sys.stderr)
            return 2
        print(format_runs_table(rows))
        return 0
    if args.command == "rerun":
        return rerun(args)
    try:
        # The --config preset, then the flags given (the parsed names are the option names).
        cfg = config_from_options(DedupConfig, args)
        cluster_cfg = config_from_options(ClusterConfig, args)
        pipeline_cfg = load_pipeline_config(args.config)
    except ConfigError as exc:
        print(f"ndcl: config error: {exc}", file=sys.stderr)
        return 2
    from runners.options import (
        RunnerConfigError,
        apply_pipeline_config,
        loopback_worker_env,
        runner_beam_args,
    )

    try:
        runner_args = apply_pipeline_config(args, pipeline_cfg)
        beam_args = [*runner_beam_args(runner_args), *beam_args]
    except RunnerConfigError as exc:
        print(f"ndcl: runner error: {exc}", file=sys.stderr)
        return 2
    os.environ.update(loopback_worker_env(beam_args))
    if getattr(args, "dry_run", None):
        from runners.dataflow.dry_run import run_dry_command

        return run_dry_command(args, cfg, cluster_cfg, beam_args)
    problem = remote_service_problem(args.command, cluster_cfg, beam_args)
    if problem:
        print(f"ndcl: runner error: {problem}", file=sys.stderr)
        return 2
    from beam_pipeline.inputs import InputError
    from beam_pipeline.outputs import OutputError
    from beam_pipeline.resources import ResourceSampler

    sampler = ResourceSampler()
    try:
        with sampler:
            result = _run_command(args, cfg, cluster_cfg, beam_args)
    except (FileNotFoundError, InputError, OutputError) as exc:
        print(f"ndcl: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:
        if isinstance(exc, ServiceUnavailableError):
            print(f"ndcl: K-Means service unavailable: {exc}", file=sys.stderr)
            return EXIT_SERVICE
        # Any runner wraps a task's error differently (the direct runner re-raises it, Flink
        # sends the worker's traceback inside a Java exception): one line names the cause.
        LOG.info("the pipeline failed", exc_info=True)
        print(f"ndcl: error: the pipeline failed: {failure_line(exc)}; nothing was committed "
              f"to {getattr(args, 'output', 'the output')}", file=sys.stderr)
        return EXIT_FAILED
    if not result.summary:
        return 0
    print_summary(result.summary, result.output)
    record(args, result, sampler.result(), raw_argv, runner_args)
    return outcome_status(result.summary, result.output)


def remote_service_problem(command: str, cluster_cfg: Any, beam_args: list[str]) -> str | None:
    """Why a clustering run cannot start as configured (a remote runner's workers and a
    K-Means service this machine would start), else None."""
    from runners.options import workers_on_this_machine

    if command != "dedup" and cluster_cfg.backend == "ray" and (
            cluster_cfg.service_address is None) and not workers_on_this_machine(beam_args):
        return ("a remote runner's workers cannot reach a K-Means service started on this "
                "machine; give --service-address (e.g. ray://HOST:10001) or "
                "--kmeans-backend local")
    return None


_EXCEPTION_LINE = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?([A-Z]\w*(?:Error|Exception|Fault|Exit))"
                             r": (.+)$")


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def failure_line(exc: BaseException) -> str:
    """The cause of a failed run in one line: the last ``SomeError: message`` line of the
    error's text (the innermost Python exception of a worker's traceback), else its first
    line; at most 300 characters."""
    text = str(exc).strip()
    found = [m for m in map(_EXCEPTION_LINE.match, map(str.strip, text.splitlines())) if m]
    if found:
        line = f"{found[-1].group(1)}: {found[-1].group(2)}"
    else:
        line = f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")
    return line if len(line) <= 300 else line[:297] + "..."


def outcome_status(summary: dict[str, Any], output: str) -> int:
    """0, or :data:`EXIT_ALL_REJECTED` (with one line) when records were read and every one
    was rejected: the output is committed so that ``rejected/`` can be read, but a run that
    kept nothing of real input must not look like a success to a script."""
    if summary["read"] == 0:
        print(f"ndcl: warning: the input holds no records (read 0); {output} is empty",
              file=sys.stderr)
        return 0
    if summary["rejected"] == summary["read"]:
        reasons = ", ".join(f"{k}={v}" for k, v in summary["rejected_by_reason"].items())
        print(f"ndcl: error: every record was rejected ({summary['read']:,} read; {reasons}); "
              f"see {output.rstrip('/')}/rejected/", file=sys.stderr)
        return EXIT_ALL_REJECTED
    return 0


def _run_command(args: argparse.Namespace, cfg: Any, cluster_cfg: Any, beam_args: list[str]
                 ) -> Any:
    from beam_pipeline.run import run_cluster, run_dedup, run_workflow

    if args.command == "run":
        return run_workflow(args.workflow, args.input, args.output, cfg, cluster_cfg,
                            beam_args, args.dedup_scope)
    if args.command == "cluster":
        return run_cluster(args.input, args.output, cluster_cfg, cfg, beam_args)
    return run_dedup(args.input, args.output, cfg, beam_args)


def record(args: argparse.Namespace, result: Any, resources: dict[str, Any],
           raw_argv: list[str], runner_args: argparse.Namespace) -> None:
    """Record the run in the benchmark database; say clearly when it could not be."""
    from beam_pipeline.db import code_version, database_url, record_run, redact

    url = database_url(args.db_url)
    workers = direct_workers(raw_argv)
    recorded = record_run(
        url, result.summary, command=args.command, argv=raw_argv,
        input_patterns=list(args.input), output=args.output,
        runner=str(getattr(runner_args, "runner", None) or "direct"), workers=workers,
        resources=resources, input_bytes=result.summary.get("input_bytes"),
        code_version=code_version())
    if recorded.recorded:
        print(f"  recorded as run {recorded.run_id} in {redact(url)}")
    else:
        print(f"ndcl: warning: the run was NOT recorded in {redact(url)} ({recorded.error}); "
              f"its record was written to {recorded.fallback_path}", file=sys.stderr)


def direct_workers(argv: list[str]) -> int:
    """``--direct_num_workers`` as Beam reads it from ``argv`` (the other flags ignored):
    the number given, else Beam's default, 1."""
    from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions

    return int(PipelineOptions(argv).view_as(DirectOptions).direct_num_workers)


def rerun(args: argparse.Namespace) -> int:
    """``ndcl rerun RUN_ID``: the recorded ``ndcl run`` again, same parameters, other order."""
    from beam_pipeline.db import database_url, get_run

    run = get_run(database_url(args.db_url), args.run_id)
    if run is None:
        print(f"ndcl: error: no run {args.run_id} in the benchmark database", file=sys.stderr)
        return 2
    argv = list(run["argv"])
    if not argv or argv[0] != "run":
        print(f"ndcl: error: run {args.run_id} was `ndcl {' '.join(argv[:1])}`, not `ndcl run`; "
              "only runs of both engines have another ordering", file=sys.stderr)
        return 2
    recorded_workflow = run.get("workflow") or "nd_cl"
    workflow = args.workflow or ("cl_nd" if recorded_workflow == "nd_cl" else "nd_cl")
    output = args.output or f"{run['output'].rstrip('/')}-{workflow}"
    argv = _replace_flag(_replace_flag(argv, "--workflow", workflow), "--output", output)
    if args.template_path:
        print(" ".join(template_launch(argv, args.template_path, args.image, args.region)))
        return 0
    if args.print_only:
        print("ndcl " + " ".join(argv))
        return 0
    return main([*(["--db-url", args.db_url] if args.db_url else []), *argv])


def template_launch(argv: list[str], template_path: str, image: str | None, region: str
                    ) -> list[str]:
    """The Flex Template launch of ``ndcl run`` arguments: flags become parameters."""
    from runners.dataflow.template import run_commands

    params: dict[str, str] = {}
    i = 1
    while i < len(argv):
        flag = argv[i].lstrip("-")
        if "=" in flag:
            name, value = flag.split("=", 1)
            i += 1
        elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            name, value = flag, argv[i + 1]
            i += 2
        else:
            name, value = flag, "true"
            i += 1
        params[name.replace("-", "_")] = value
    workflow = params.pop("workflow")
    input_pattern = params.pop("input")
    output = params.pop("output")
    command = run_commands(template_path, image or "IMAGE", input_pattern,
                           output.rsplit("/", 1)[0], region, workflows=(workflow,),
                           extra_parameters=params)[0]
    return [c.replace(f"{output.rsplit('/', 1)[0]}/{workflow}", output) for c in command]


def _replace_flag(argv: list[str], flag: str, value: str) -> list[str]:
    out, i = [], 0
    while i < len(argv):
        if argv[i] == flag:
            i += 2
            continue
        if argv[i].startswith(flag + "="):
            i += 1
            continue
        out.append(argv[i])
        i += 1
    return [out[0], flag, value, *out[1:]]


if __name__ == "__main__":
    sys.exit(main())
