"""``ndcl evaluate`` and ``ndcl truth``: the command line, and the evaluation of one run.

``ndcl evaluate RUN_ID_OR_OUT --truth FILE`` scores the duplicate clusters of a run (an output
directory, or a run id of the benchmark database) against a truth file;
``ndcl evaluate RUN_ID_OR_OUT --against RUN_ID_OR_OUT`` scores them against another run (e.g.
CL→ND against ND→CL). Both print a table, write ``OUT/evaluation.json`` and store one
``AccuracyMetric`` row per level (``pair`` and ``document``) for the evaluated run.
``ndcl truth INPUT ... --output FILE`` builds a truth file by exact Jaccard.

``--against A``: run A's clusters are the truth for the evaluated run B (same two levels), and
A's duplicate rows (id → duplicate_of) that B did not put in one cluster are counted and
listed as ``missing_duplicates`` (``extra_duplicates`` the other way round).

The parts, one concern each: :mod:`beam_pipeline.truth` (the truth file format),
:mod:`beam_pipeline.metrics` (the two levels and the detection rate per similarity, defined
there), :mod:`beam_pipeline.run_outputs` (reading a run, the benchmark database, writing the
scores) and :mod:`beam_pipeline.truth_builder` (``ndcl truth``).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from collections.abc import Hashable, Mapping
from datetime import datetime, timezone
from typing import Any

from apache_beam.io.filesystems import FileSystems

from beam_pipeline.metrics import (
    LEVELS,
    cluster_labels,
    document_counts,
    missing_duplicates,
    pair_counts,
    predicted_labels,
    similarity_bins,
    split_clusters,
)
from beam_pipeline.run_outputs import (
    RunOutput,
    Target,
    resolve_target,
    store_accuracy,
    write_evaluation,
)
from beam_pipeline.truth import TRUTH_FORMAT, EvaluationError, Truth, format_truth, load_truth
from beam_pipeline.truth_builder import (
    DEFAULT_MAX_DOCS,
    DEFAULT_PAIRS_MIN,
    TRUTH_SEED,
    build_truth,
)

# --------------------------------------------------------------------------- evaluation


def evaluate(run: RunOutput, reference: Mapping[str, Hashable],
             reference_rows: Mapping[str, str] | None = None, examples: int = 5
             ) -> dict[str, Any]:
    """Both levels of ``run`` against ``reference`` clusters (document → label), with the
    disagreements counted and a few ``examples`` of each."""
    predicted = predicted_labels(run.duplicate_of)
    unknown = sorted(d for d in reference if d not in run.doc_ids)
    if reference and len(unknown) == len(reference):
        raise EvaluationError(f"none of the {len(reference)} reference documents is a document "
                              f"of {run.path} (e.g. {unknown[0]!r}): a reference for another "
                              "corpus?")
    sizes = Counter(reference.values())

    def listed(items: list[tuple[str, str]]) -> dict[str, Any]:
        return {"count": len(items), "examples": [list(item) for item in items[:examples]]}

    result: dict[str, Any] = {
        "pair": pair_counts(predicted, reference).as_dict(),
        "document": document_counts(run.duplicate_of.keys(), reference).as_dict(),
        "reference_clusters": len(sizes),
        "reference_documents": len(reference),
        "reference_duplicates": sum(n - 1 for n in sizes.values()),
        "predicted_clusters": len(set(predicted.values())),
        "predicted_duplicates": len(run.duplicate_of),
        "split_reference_clusters": listed(split_clusters(reference, predicted)),
        "impure_predicted_clusters": listed(split_clusters(predicted, reference)),
        "unknown_reference_ids": {"count": len(unknown), "examples": unknown[:examples]},
    }
    if reference_rows is not None:
        result["missing_duplicates"] = listed(missing_duplicates(reference_rows, predicted))
        result["extra_duplicates"] = listed(missing_duplicates(run.duplicate_of, reference))
    return result


def parameter_notes(truth: Truth, summary: Mapping[str, Any]) -> list[str]:
    """Differences between the truth's definition and the run's that explain lower scores."""
    config = summary.get("config") or {}
    config = config.get("dedup", config) if isinstance(config, dict) else {}
    meta = truth.metadata.get("metadata") if isinstance(truth.metadata.get("metadata"),
                                                        dict) else {}
    notes = []
    for key in ("threshold", "ngram", "tokenizer"):
        theirs = truth.metadata.get(key, meta.get(key))
        ours = summary.get(key, config.get(key))
        if theirs is not None and ours is not None and theirs != ours:
            notes.append(f"the truth file has {key} {theirs}, the run {ours}")
    return notes


# --------------------------------------------------------------------------- command line


def add_evaluate_parsers(commands: argparse._SubParsersAction) -> None:
    """The ``evaluate`` and ``truth`` subcommands."""
    from beam_pipeline.config import DedupConfig
    from transforms.minhash import TOKENIZERS

    evaluate_cmd = commands.add_parser(
        "evaluate", help="precision/recall/F1 of a run's duplicates against a truth file or "
                         "another run")
    evaluate_cmd.add_argument("run", metavar="RUN_ID_OR_OUT",
                              help="a run id of the benchmark database, or an output directory")
    reference = evaluate_cmd.add_mutually_exclusive_group(required=True)
    reference.add_argument("--truth", metavar="FILE",
                           help=f"truth file {TRUTH_FORMAT}, e.g. from `ndcl truth` (it or "
                                "--against is required)")
    reference.add_argument("--against", metavar="RUN_ID_OR_OUT",
                           help="reference run: how well RUN agrees with it (it or --truth "
                                "is required)")
    evaluate_cmd.add_argument("--examples", type=int, default=5, metavar="N",
                              help="example ids shown per kind of disagreement "
                                   "(default: %(default)s)")
    truth = commands.add_parser(
        "truth", help="exact-Jaccard near-duplicate truth file of a (small) corpus")
    truth.add_argument("input", nargs="+", metavar="INPUT",
                       help="input files: paths, globs or gs:// patterns, as for `ndcl dedup`")
    truth.add_argument("--output", required=True, metavar="FILE",
                       help="truth file to write (required)")
    truth.add_argument("--threshold", type=float, default=DedupConfig.threshold, metavar="T",
                       help="Jaccard threshold of a duplicate pair (default: %(default)s)")
    truth.add_argument("--ngram", type=int, default=DedupConfig.ngram, metavar="N",
                       help="shingle length in tokens (default: %(default)s)")
    truth.add_argument("--tokenizer", choices=TOKENIZERS, default=DedupConfig.tokenizer,
                       help="as for `ndcl dedup` (default: %(default)s)")
    truth.add_argument("--max-docs", type=int, default=DEFAULT_MAX_DOCS, metavar="N",
                       help=f"refuse larger corpora (default: {DEFAULT_MAX_DOCS:,})")
    truth.add_argument("--candidates", choices=("lsh", "index"), default="lsh",
                       help="lsh: MinHash LSH of miss probability <= 1e-6 at the threshold; "
                            "index: every pair sharing a shingle, exact, for small corpora "
                            "(default: %(default)s)")
    truth.add_argument("--num-perm", type=int, default=DedupConfig.num_perm, metavar="N",
                       help="MinHash permutations of the lsh candidates (default: %(default)s)")
    truth.add_argument("--bands", type=int, metavar="B",
                       help="LSH bands (default: derived, see --rows)")
    truth.add_argument("--rows", type=int, metavar="R",
                       help="LSH rows per band (default: derived with --bands for a miss "
                            "probability <= 1e-6 at the threshold)")
    truth.add_argument("--seed", type=int, default=TRUTH_SEED, metavar="S",
                       help=f"shingle and MinHash seed (default: {TRUTH_SEED}, not the "
                            "pipeline's, so their LSH misses are independent)")
    truth.add_argument("--max-doc-bytes", type=int, default=DedupConfig.max_doc_bytes,
                       metavar="BYTES",
                       help="skip longer input lines, as `ndcl dedup` rejects them "
                            "(default: %(default)s)")
    pairs = truth.add_mutually_exclusive_group()
    pairs.add_argument("--pairs-min", type=float, default=DEFAULT_PAIRS_MIN,
                       help="also write every verified pair of Jaccard >= this (below the "
                            "threshold too), with its Jaccard, for `ndcl evaluate`'s detection "
                            f"rate per similarity (default: {DEFAULT_PAIRS_MIN})")
    pairs.add_argument("--no-pairs", action="store_true",
                       help="write the clusters only, the file format before pairs "
                            "(default: off)")


def _unexpected(command: str, extra: list[str] | None) -> int | None:
    if extra:
        print(f"ndcl {command}: error: unrecognised argument(s) {' '.join(extra)}",
              file=sys.stderr)
        return 2
    return None


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def format_table(result: Mapping[str, Any]) -> str:
    """The two levels as an aligned text table."""
    lines = [("level", "TP", "FP", "FN", "precision", "recall", "F1")]
    for level in LEVELS:
        c = result[level]
        lines.append((level, str(c["tp"]), str(c["fp"]), str(c["fn"]), _ratio(c["precision"]),
                      _ratio(c["recall"]), _ratio(c["f1"])))
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "\n".join("  " + "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                                      for i, (cell, w) in enumerate(zip(line, widths)))
                     for line in lines)


def format_bins(bins: list[dict[str, Any]]) -> str:
    """``by_similarity`` as an aligned text table."""
    lines = [("Jaccard", "pairs", "detected", "rate", "in 1 truth cluster", "truth recall")]
    for b in bins:
        found = b.get("truth_candidate_recall")
        lines.append((f"{b['lo']:.2f}-{b['hi']:.2f}", str(b["pairs"]), str(b["detected"]),
                      "–" if b["rate"] is None else f"{b['rate']:.3f}",
                      str(b["same_truth_cluster"]), "–" if found is None else f"≥{found:.4f}"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "\n".join("    " + "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                                        for i, (cell, w) in enumerate(zip(line, widths)))
                     for line in lines)


def _examples(item: Mapping[str, Any]) -> str:
    shown = ", ".join(" ~ ".join(e) if isinstance(e, list) else e for e in item["examples"])
    return f"{item['count']}" + (f" (e.g. {shown})" if shown else "")


def print_result(target: Target, reference: str, result: Mapping[str, Any],
                 notes: list[str]) -> None:
    name = (f"run {target.run_id} ({target.output})" if target.run_id is not None
            else target.output)
    print(f"\nNDCL evaluation of {name} against {reference}")
    print(format_table(result))
    print(f"  reference: {result['reference_clusters']} clusters, "
          f"{result['reference_documents']} documents, {result['reference_duplicates']} to "
          f"remove; run: {result['predicted_clusters']} clusters, "
          f"{result['predicted_duplicates']} removed")
    print(f"  reference clusters split by the run: {_examples(result['split_reference_clusters'])}")
    print(f"  run clusters not inside one reference cluster: "
          f"{_examples(result['impure_predicted_clusters'])}")
    if "missing_duplicates" in result:
        print(f"  reference duplicates (id ~ duplicate_of) not in one cluster of the run: "
              f"{_examples(result['missing_duplicates'])}")
        print(f"  run duplicates not in one cluster of the reference: "
              f"{_examples(result['extra_duplicates'])}")
    if result["unknown_reference_ids"]["count"]:
        print(f"  warning: reference ids that are not documents of the run (counted as missed): "
              f"{_examples(result['unknown_reference_ids'])}")
    if result.get("by_similarity"):
        print("  detection by exact Jaccard: truth pairs the run put in one cluster (after "
              "LSH, verification and connected components):")
        print(format_bins(result["by_similarity"]))
    for note in notes:
        print(f"  note: {note}")


def run_evaluate_command(args: argparse.Namespace, extra: list[str] | None = None) -> int:
    """``ndcl evaluate``: print, write ``OUT/evaluation.json`` and store the two levels."""
    from sqlalchemy.exc import SQLAlchemyError

    from beam_pipeline.db import database_url, redact, scrub_secrets

    failed = _unexpected("evaluate", extra)
    if failed is not None:
        return failed
    url = database_url(args.db_url)
    notes: list[str] = []
    try:
        target, run = resolve_target(args.run, url)
        if args.truth:
            truth = load_truth(args.truth)
            reference = os.path.normpath(args.truth) if "://" not in args.truth else args.truth
            kind = "truth"
            result = evaluate(run, cluster_labels(truth.clusters), examples=args.examples)
            if truth.pairs is not None:
                result["by_similarity"] = similarity_bins(
                    truth, predicted_labels(run.duplicate_of))
            else:
                notes.append("the truth file lists no scored pairs, so there is no detection "
                             "rate per similarity (`ndcl truth` writes them)")
            notes += parameter_notes(truth, run.summary)
        else:
            against, other = resolve_target(args.against, url)
            reference = (f"run:{against.run_id}" if against.run_id is not None
                         else f"output:{against.output}")
            kind = "run"
            result = evaluate(run, predicted_labels(other.duplicate_of), other.duplicate_of,
                              examples=args.examples)
            only_one = len(run.doc_ids ^ other.doc_ids)
            if only_one:
                notes.append(f"{only_one} documents are in only one of the two runs")
    except EvaluationError as exc:
        print(f"ndcl evaluate: error: {exc}", file=sys.stderr)
        return 2
    if run.repeated_ids:
        notes.append(f"{run.repeated_ids} ids occur more than once in the run's output; the "
                     "evaluation counts each id once")
    stored = False
    if target.run_id is None:
        why = f"not stored in the benchmark database: {target.note}"
    else:
        try:
            store_accuracy(url, target.run_id, reference, result)
            stored = True
            why = (f"stored as AccuracyMetric rows (pair, document) of run {target.run_id} "
                   f"in {redact(url)}")
        except (SQLAlchemyError, ImportError, OSError) as exc:
            why = (f"NOT stored in {redact(url)} ({type(exc).__name__}: "
                   f"{scrub_secrets(str(exc), url)})")
    entry = {"reference": reference, "kind": kind, "run_id": target.run_id, "stored": stored,
             "evaluated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
             **result, "notes": notes}
    print_result(target, reference, result, notes)
    print(f"  {why}")
    try:
        print(f"  written to {write_evaluation(target.output, entry)}")
    except OSError as exc:
        print(f"ndcl evaluate: warning: {target.output}/evaluation.json not written ({exc})",
              file=sys.stderr)
    return 0


def run_truth_command(args: argparse.Namespace, extra: list[str] | None = None) -> int:
    """``ndcl truth``: build the truth file, print a one-line summary."""
    failed = _unexpected("truth", extra)
    if failed is not None:
        return failed
    from beam_pipeline.outputs import OutputError, check_replaceable_file

    try:
        check_replaceable_file(args.output, ("clusters", "metadata"))
    except OutputError as exc:
        print(f"ndcl truth: error: {exc}", file=sys.stderr)
        return 2
    try:
        truth = build_truth(args.input, threshold=args.threshold, ngram=args.ngram,
                            tokenizer=args.tokenizer, max_docs=args.max_docs,
                            candidates=args.candidates, num_perm=args.num_perm,
                            bands=args.bands, rows=args.rows, seed=args.seed,
                            max_doc_bytes=args.max_doc_bytes,
                            pairs_min=None if args.no_pairs else args.pairs_min)
    except (EvaluationError, FileNotFoundError) as exc:
        print(f"ndcl truth: error: {exc}", file=sys.stderr)
        return 2
    try:
        with FileSystems.create(args.output) as handle:
            handle.write(format_truth(truth).encode("utf-8"))
    except OSError as exc:
        print(f"ndcl truth: error: cannot write {args.output}: {exc}", file=sys.stderr)
        return 2
    meta = truth["metadata"]
    recall = meta["candidates"]["recall_at_threshold"]
    print(f"wrote {args.output}: {len(truth['clusters'])} clusters, "
          f"{meta['clustered_documents']} of {truth['docs']} documents (threshold "
          f"{truth['threshold']}, {truth['ngram']}-grams, {meta['tokenizer']} tokens; "
          f"{meta['candidate_pairs']} candidate pairs, {meta['verified_pairs']} verified; "
          f"candidate recall at the threshold {recall:.10f})")
    if "pairs" in truth:
        low = meta["candidates"]["recall_at_pairs_min"]
        print(f"  {len(truth['pairs'])} scored pairs of Jaccard >= {truth['pairs_min']} and "
              f"{len(truth['identical'])} identical groups listed (candidate recall at "
              f"{truth['pairs_min']}: {low:.6f})")
    return 0
