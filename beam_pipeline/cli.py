"""The ``ndcl`` command line.

    ndcl dedup --input PATTERN [PATTERN ...] --output DIR [--config configs/X.yaml]
               [--threshold T --num-perm N --ngram N --bands B --rows R --verify MODE
                --keep POLICY --seed S ...] [Beam pipeline options]
    ndcl cluster --input PATTERN [PATTERN ...] --output DIR [--k1 10 --k2 10
               --kmeans-backend ray|local --service-address ray://HOST:10001 ...]
    ndcl run --workflow nd_cl|cl_nd [--dedup-scope cluster_A|cluster_B] --input ... --output ...
               [dedup and cluster flags]
    ndcl service start|status|stop [--address ...]

Unrecognised ``--flags`` are passed to Beam as pipeline options (``--direct_num_workers=2
--direct_running_mode=multi_processing``, ``--runner``, ...). The run ends with a summary table.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from beam_pipeline.config import (
    ConfigError,
    load_cluster_config,
    load_dedup_config,
    load_pipeline_config,
)

LOG = logging.getLogger("ndcl")

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


def add_io_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", nargs="+", required=True, metavar="PATTERN",
                        help="input files: paths, globs or gs:// patterns (JSON lines, "
                             "optionally .gz, or .parquet)")
    parser.add_argument("--output", required=True, metavar="DIR", help="output directory")
    parser.add_argument("--config", help="YAML preset (configs/*.yaml); flags override it")


def add_dedup_flags(parser: argparse.ArgumentParser) -> None:
    for flag, (dest, kind) in DEDUP_FLAGS.items():
        parser.add_argument(flag, dest=dest, type=kind, default=None)


def add_cluster_flags(parser: argparse.ArgumentParser) -> None:
    for flag, (dest, kind) in CLUSTER_FLAGS.items():
        parser.add_argument(flag, dest=dest, type=kind, default=None)
    parser.add_argument("--balanced", dest="balanced", action="store_true", default=None,
                        help="roughly equal cluster sizes")


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="ndcl", description=__doc__.split("\n\n")[0])
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    parser.add_argument("--db-url", help="benchmark database (SQLAlchemy URL); default "
                        "$NDCL_DB_URL, else sqlite:///ndcl-benchmarks.db")
    commands = parser.add_subparsers(dest="command", required=True)
    dedup = commands.add_parser("dedup", help="near-duplicate removal (ND) only")
    add_io_flags(dedup)
    add_dedup_flags(dedup)
    cluster = commands.add_parser("cluster", help="two-level clustering (CL) only")
    add_io_flags(cluster)
    add_cluster_flags(cluster)
    cluster.add_argument("--max-doc-bytes", dest="max_doc_bytes", type=int, default=None)
    cluster.add_argument("--batch-size", dest="batch_size", type=int, default=None)
    run = commands.add_parser("run", help="both engines: ND→CL (nd_cl) or CL→ND (cl_nd)")
    run.add_argument("--workflow", choices=("nd_cl", "cl_nd"), default="nd_cl")
    run.add_argument("--dedup-scope", choices=("cluster_A", "cluster_B"), default="cluster_A",
                     help="cl_nd: the clusters inside which duplicates are removed")
    add_io_flags(run)
    add_dedup_flags(run)
    add_cluster_flags(run)
    from runners.dataflow.template import add_template_parser
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
    runs.add_argument("--limit", type=int, default=50)
    rerun = commands.add_parser(
        "rerun", help="repeat a recorded run with the other (or given) ordering")
    rerun.add_argument("run_id", type=int)
    rerun.add_argument("--workflow", choices=("nd_cl", "cl_nd"),
                       help="default: the other ordering")
    rerun.add_argument("--output", help="default: the recorded output + '-<workflow>'")
    rerun.add_argument("--print-only", action="store_true",
                       help="print the command instead of running it")
    rerun.add_argument("--template-path", metavar="GS_PATH",
                       help="print a `gcloud dataflow flex-template run` launch instead "
                            "(with --image and --region)")
    rerun.add_argument("--image", help="the template's container image")
    rerun.add_argument("--region", default="us-central1")
    return parser.parse_known_args(argv)


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
                 ("cc rounds", f"{summary['cc_rounds']} (max {summary['cc_max_rounds']})")]
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
    for stage, secs in summary["stage_seconds"].items():
        rows.append((f"  {stage} s", f"{secs:.2f}"))
    width = max(len(name) for name, _ in rows)
    print(f"\nNDCL summary ({output})")
    for name, value in rows:
        print(f"  {name.ljust(width)}  {value}")
    if summary["rejected"]:
        reasons = ", ".join(f"{k}={v}" for k, v in summary["rejected_by_reason"].items())
        print(f"  rejected by reason: {reasons}")


def main(argv: list[str] | None = None) -> int:
    raw_argv = list(sys.argv[1:] if argv is None else argv)
    args, beam_args = parse_args(raw_argv)
    # What `ndcl rerun` repeats: the command and its flags, without the global options.
    raw_argv = raw_argv[raw_argv.index(args.command):] if args.command in raw_argv else raw_argv
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Beam logs every string type hint it cannot resolve at INFO; only its warnings matter here.
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    unknown = [a for a in beam_args if not a.startswith("--")]
    if unknown:
        print(f"ndcl: error: unexpected argument(s) {unknown}", file=sys.stderr)
        return 2
    if args.command == "service":
        from runners.kmeans.service_cli import run_service_command

        return run_service_command(args)
    if args.command == "template":
        from runners.dataflow.template import run_template_command

        return run_template_command(args)
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
    dedup_overrides = {dest: getattr(args, dest, None) for dest, _ in DEDUP_FLAGS.values()}
    cluster_overrides = {dest: getattr(args, dest, None) for dest, _ in CLUSTER_FLAGS.values()}
    cluster_overrides["seed"] = cluster_overrides.pop("cluster_seed")
    cluster_overrides["balanced"] = getattr(args, "balanced", None)
    try:
        cfg = load_dedup_config(args.config, dedup_overrides)
        cluster_cfg = load_cluster_config(args.config, cluster_overrides)
        pipeline_cfg = load_pipeline_config(args.config)
    except ConfigError as exc:
        print(f"ndcl: config error: {exc}", file=sys.stderr)
        return 2
    from runners.options import RunnerConfigError, apply_pipeline_config, runner_beam_args

    try:
        runner_args = apply_pipeline_config(args, pipeline_cfg)
        beam_args = [*runner_beam_args(runner_args), *beam_args]
    except RunnerConfigError as exc:
        print(f"ndcl: runner error: {exc}", file=sys.stderr)
        return 2
    if getattr(args, "dry_run", None):
        from runners.dataflow.dry_run import run_dry_command

        return run_dry_command(args, cfg, cluster_cfg, beam_args)
    remote = getattr(runner_args, "runner", "direct") not in ("direct", "DirectRunner", None)
    if remote and args.command != "dedup" and cluster_cfg.backend == "ray" and (
            cluster_cfg.service_address is None):
        print("ndcl: runner error: a remote runner's workers cannot reach a K-Means service "
              "started on this machine; give --service-address (e.g. ray://HOST:10001) or "
              "--kmeans-backend local", file=sys.stderr)
        return 2
    from beam_pipeline.db import ResourceSampler

    sampler = ResourceSampler()
    try:
        with sampler:
            result = _run_command(args, cfg, cluster_cfg, beam_args)
    except FileNotFoundError as exc:
        print(f"ndcl: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        if type(exc).__name__ != "ServiceUnavailableError":
            raise
        print(f"ndcl: K-Means service unavailable: {exc}", file=sys.stderr)
        return 3
    if result.summary:
        print_summary(result.summary, result.output)
        record(args, result, sampler.result(), raw_argv, runner_args)
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
    workers = next((int(a.split("=", 1)[1]) for a in raw_argv
                    if a.startswith("--direct_num_workers=")), 1)
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
