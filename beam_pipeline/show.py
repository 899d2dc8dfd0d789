"""``ndcl show OUT``: what a run removed and why, and what its clusters are about.

    ndcl show OUT [--group ID] [--limit N] [--members N] [--format text|json]
    ndcl show OUT --clusters [--level A|B] [--group ID] [--limit N] [--sample N]

Duplicate groups, largest first: the kept document and each removed one with its id, reason,
similarity and a snippet of its text, the words that differ from the kept text marked (colour
on a terminal, ``[-kept only-]``/``{+removed only+}`` otherwise; ``beam_pipeline.show_text``).
``--format json`` prints ``{"groups": [{"kept": {"id", "text", ...}, "removed": [{"id",
"reason", "similarity", "text", ...}]}]}`` with the whole texts.

``--clusters``: each ``cluster_A`` (``--level B``: each ``cluster_A/cluster_B``) with its size,
top terms and two example snippets. Top terms come from the output when it stores them (a
``top_terms`` entry in ``summary.json`` or ``_cluster_*.json``); otherwise they are computed
here with scikit-learn's ``TfidfVectorizer`` over a seeded sample of each cluster's kept
documents, and the output says so.

It reads only what it prints (``beam_pipeline.show_read``): the text of kept documents from
``OUT/kept``, that of removed ones re-read from the run's inputs, just those documents. Errors
(no such OUT, not an NDCL output, an input gone or changed since the run, an unknown
``--group``) are one line and exit status 2. Nothing heavy is imported before a command runs,
so ``ndcl --help`` stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import sys
from typing import Any, TextIO

from beam_pipeline.show_read import (
    Output,
    ShowError,
    fetch_documents,
    open_output,
    read_columns,
    read_json,
    read_rows,
    run_inputs,
)
from beam_pipeline.show_text import Style, marked_snippet, snippet, word_diff, wrap

TOP_TERMS = 8
EXAMPLES = 2
KEPT_COLUMNS = ["id", "text", "url", "timestamp", "cluster_A", "cluster_B"]
DUPLICATE_COLUMNS = ["id", "duplicate_of", "reason", "similarity", "component_size", "url"]


# --------------------------------------------------------------------------- duplicate groups


def _id_key(doc_id: str) -> tuple[str, int]:
    """Derived ids ``name:12`` in line order (``name:4`` before ``name:1072``)."""
    name, _, line = doc_id.rpartition(":")
    return (name, int(line)) if name and line.isdigit() else (doc_id, 0)


def duplicate_groups(output: Output) -> dict[str, list[dict[str, Any]]]:
    """Kept id → its removed rows (no text), from ``OUT/duplicates``."""
    parts = output.parts("duplicates")
    if not parts and (output.summary.get("workflow") == "cl"
                      or "duplicates" not in output.summary):
        raise ShowError(f"{output.path} has no duplicates/ (a cluster-only run); "
                        "`ndcl show OUT --clusters` shows its clusters")
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in read_columns(parts, DUPLICATE_COLUMNS):
        groups.setdefault(row["duplicate_of"], []).append(row)
    for rows in groups.values():
        rows.sort(key=lambda r: (-(r.get("similarity") or 0.0), _id_key(r["id"])))
    return groups


def select_groups(output: Output, groups: dict[str, list[dict[str, Any]]], group: str | None,
                  limit: int) -> list[str]:
    """The kept ids to show: ``group``, or the ``limit`` largest groups."""
    if group is None:
        return sorted(groups, key=lambda k: (-len(groups[k]), _id_key(k)))[:limit]
    if group in groups:
        return [group]
    target = next((r["duplicate_of"] for rows in groups.values() for r in rows
                   if r["id"] == group), None)
    if target is not None:
        raise ShowError(f"--group {group}: that document was removed as a duplicate of "
                        f"{target}; its group is --group {target}")
    if read_rows(output.parts("kept"), [group], ["id"]):
        raise ShowError(f"--group {group}: that document is kept and has no duplicates")
    raise ShowError(f"--group {group}: no document with that id in {output.path}")


def build_groups(output: Output, args: argparse.Namespace) -> dict[str, Any]:
    """The groups to show, with their texts, as the JSON document ``--format json`` prints."""
    groups = duplicate_groups(output)
    chosen = select_groups(output, groups, args.group, args.limit)
    members = 0 if args.group is not None else args.members
    shown = {kept: groups[kept][:members] if members else groups[kept] for kept in chosen}
    kept_rows = read_rows(output.parts("kept"), chosen, KEPT_COLUMNS)
    missing = [k for k in chosen if k not in kept_rows]
    if missing:
        raise ShowError(f"{output.path} is inconsistent: kept document {missing[0]} is not in "
                        "kept/")
    urls = {r["id"]: r.get("url") for rows in shown.values() for r in rows}
    texts = fetch_documents(run_inputs(output, args.input), urls,
                            output.max_doc_bytes) if urls else {}
    result = []
    for kept in chosen:
        removed = [{"id": r["id"], "reason": r["reason"], "similarity": r["similarity"],
                    "text": texts[r["id"]]["text"], "url": r.get("url"),
                    "component_size": r.get("component_size")} for r in shown[kept]]
        result.append({"size": len(groups[kept]) + 1,
                       "kept": {k: v for k, v in kept_rows[kept].items() if v is not None},
                       "removed": removed})
    return {"output": output.path, "groups_total": len(groups),
            "removed_total": sum(len(rows) for rows in groups.values()), "groups": result}


def render_groups(shown: dict[str, Any], args: argparse.Namespace, style: Style,
                  out: TextIO, columns: int) -> None:
    groups = shown["groups"]
    counts = [r["reason"] for g in groups for r in g["removed"]]
    print(style.mark("head", f"{shown['output']}: {shown['removed_total']:,} documents removed "
                             f"in {shown['groups_total']:,} groups"), file=out)
    if not groups:
        return
    how = ("colour: " + style.mark("deleted", "kept only") + " " + style.mark("added",
           "removed only")) if style.colour else "[-kept only-] {+removed only+}"
    print(f"{len(groups)} group(s) shown, largest first; {counts.count('near')} near and "
          f"{counts.count('exact')} exact duplicates; words changed against the kept text: "
          f"{how}", file=out)
    for number, group in enumerate(groups, start=1):
        kept = group["kept"]
        print(file=out)
        print(style.mark("head", f"group {number}: {group['size']} documents, kept ")
              + style.mark("id", kept["id"]), file=out)
        print(f"  kept     {style.mark('id', kept['id'])}  {kept.get('url') or ''}".rstrip(),
              file=out)
        print(wrap(snippet(kept["text"], args.width), 11, columns), file=out)
        for row in group["removed"]:
            diff = word_diff(kept["text"], row["text"])
            change = ("text too long to compare" if diff is None else
                      f"{diff.changed} word(s) changed" if diff.changed else "same words")
            print(f"  removed  {style.mark('id', row['id'])}  {row['reason']}  similarity "
                  f"{row['similarity']:.3f}  {change}  {row.get('url') or ''}".rstrip(),
                  file=out)
            print(wrap(marked_snippet(row["text"], diff, args.width, style), 11, columns),
                  file=out)
        hidden = group["size"] - 1 - len(group["removed"])
        if hidden:
            print(style.mark("dim", f"  … and {hidden} more removed (--members 0 or --group "
                                    f"{kept['id']} shows all)"), file=out)


# --------------------------------------------------------------------------- clusters


def _terms_list(value: Any) -> list[str] | None:
    """Top terms as stored: ``["t", ...]``, ``[["t", w], ...]`` or ``[{"term": "t"}, ...]``."""
    if not isinstance(value, list):
        return None
    terms = [v if isinstance(v, str) else v[0] if isinstance(v, list) and v
             else v.get("term") if isinstance(v, dict) else None for v in value]
    return [str(t) for t in terms if t is not None]


def _terms_by_cluster(value: Any, prefix: str = "") -> dict[str, list[str]]:
    """``{cluster id: terms}`` from a mapping by id or a list indexed by id."""
    if isinstance(value, list):
        value = dict(enumerate(value))
    if not isinstance(value, dict):
        return {}
    found = {}
    for key, terms in value.items():
        listed = _terms_list(terms)
        if listed is not None:
            found[prefix + str(key)] = listed
    return found


def stored_top_terms(output: Output, level: str) -> tuple[dict[str, list[str]], str]:
    """Top terms per cluster id that the run stored, and the file they came from."""
    section = (output.summary.get("cluster") or {}).get("level_1" if level == "A"
                                                       else "level_2") or {}
    found = _terms_by_cluster(section.get("top_terms"))
    if level == "B":
        for a, fit in (section.get("fits") or {}).items():
            if isinstance(fit, dict):
                found.update(_terms_by_cluster(fit.get("top_terms"), f"{a}/"))
    if found:
        return found, "summary.json"
    for name in (f for f in output.files if re.fullmatch(r"_cluster_[a-z_]+\.json", f)):
        data = read_json(f"{output.path}/{name}") or {}
        entry = data.get(level) if isinstance(data, dict) else None
        if level == "A" and isinstance(entry, dict):
            found = _terms_by_cluster(entry.get("top_terms"))
        elif isinstance(entry, dict):
            for a, fit in entry.items():
                found.update(_terms_by_cluster((fit or {}).get("top_terms")
                                               if isinstance(fit, dict) else None, f"{a}/"))
        if found:
            return found, name
    return {}, ""


def _sample(ids: list[str], size: int) -> list[str]:
    """A seeded sample (the ``size`` smallest xxh3 hashes of the ids: the same every time)."""
    import xxhash

    return sorted(ids, key=lambda i: xxhash.xxh3_64_intdigest(i.encode("utf-8")))[:size]


def computed_top_terms(samples: dict[str, list[str]], texts: dict[str, str]
                       ) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Top terms per cluster and its examples, from the sampled documents of the clusters shown
    (TF-IDF, the IDF over all of them). A cluster's terms are those whose mean TF-IDF in its
    documents most exceeds the mean in the other clusters' (terms of a single sampled document
    are left out when it has more); its examples are the sampled documents nearest its mean."""
    import numpy as np
    from sklearn.feature_extraction.text import TfidfVectorizer

    docs = [(key, doc_id) for key, ids in samples.items() for doc_id in ids if doc_id in texts]
    vectorizer = TfidfVectorizer(stop_words="english", sublinear_tf=True,
                                 token_pattern=r"(?u)\b[^\W\d_]{3,}\b")
    try:
        matrix = vectorizer.fit_transform([texts[doc_id] for _, doc_id in docs])
    except ValueError:  # no term at all (empty or number-only texts)
        return {key: [] for key in samples}, {key: ids[:EXAMPLES] for key, ids in samples.items()}
    vocabulary = vectorizer.get_feature_names_out()
    keys = np.array([key for key, _ in docs])
    terms, examples = {}, {}
    for key in samples:
        inside = np.flatnonzero(keys == key)
        outside = np.flatnonzero(keys != key)
        if not len(inside):
            terms[key], examples[key] = [], []
            continue
        mean = np.asarray(matrix[inside].mean(axis=0)).ravel()
        other = (np.asarray(matrix[outside].mean(axis=0)).ravel() if len(outside)
                 else np.zeros_like(mean))
        spread = np.asarray((matrix[inside] > 0).sum(axis=0)).ravel()
        score = np.where((mean > 0) & (spread >= min(2, len(inside))), mean - other, -np.inf)
        top = [int(i) for i in np.argsort(-score, kind="stable")[:TOP_TERMS]
               if np.isfinite(score[i])]
        terms[key] = [str(vocabulary[i]) for i in top]
        closeness = matrix[inside] @ mean
        examples[key] = [docs[int(inside[i])][1]
                         for i in np.argsort(-closeness, kind="stable")[:EXAMPLES]]
    return terms, examples


def _cluster_key(key: str) -> tuple[int, ...]:
    return tuple(int(p) for p in key.split("/"))


def build_clusters(output: Output, args: argparse.Namespace) -> dict[str, Any]:
    """The clusters to show with sizes, top terms and examples (what ``--format json``
    prints)."""
    parts = output.parts("kept")
    rows = read_columns(parts, ["id", "cluster_A", "cluster_B"])
    if not rows or "cluster_A" not in rows[0]:
        raise ShowError(f"{output.path} has no clusters (a dedup-only run); "
                        "`ndcl show OUT` shows its duplicate groups")
    members: dict[str, list[str]] = {}
    for row in rows:
        key = (str(row["cluster_A"]) if args.level == "A"
               else f"{row['cluster_A']}/{row['cluster_B']}")
        members.setdefault(key, []).append(row["id"])
    keys = sorted(members, key=lambda k: (-len(members[k]), _cluster_key(k)))
    if args.group is not None:
        wanted = [k for k in keys if k == args.group or k.split("/")[0] == args.group]
        if not wanted:
            known = sorted(members, key=_cluster_key)
            raise ShowError(f"--group {args.group}: no cluster_{args.level} {args.group} in "
                            f"{output.path} (it has {', '.join(known[:12])}"
                            f"{', …' if len(known) > 12 else ''})")
        keys = wanted
    keys = keys[:args.limit] if args.group is None or args.level == "B" else keys
    stored, source = stored_top_terms(output, args.level)
    samples = {k: _sample(members[k], EXAMPLES if stored else args.sample) for k in keys}
    texts = {i: r["text"] for i, r in read_rows(parts, [i for ids in samples.values()
                                                        for i in ids], ["id", "text"]).items()}
    if stored:
        terms = {k: stored.get(k, []) for k in keys}
        examples = {k: samples[k][:EXAMPLES] for k in keys}
        note = f"top terms stored by the run ({source})"
    else:
        terms, examples = computed_top_terms(samples, texts)
        note = (f"top terms computed here: TF-IDF (scikit-learn) over up to {args.sample} "
                "sampled documents of each cluster shown (the output stores no top_terms)")
    return {"output": output.path, "level": args.level, "clusters_total": len(members),
            "documents": len(rows), "top_terms_source": source or "computed", "note": note,
            "clusters": [{"id": k, "size": len(members[k]), "top_terms": terms[k],
                          "examples": [{"id": i, "text": texts[i]} for i in examples[k]]}
                         for k in keys]}


def render_clusters(shown: dict[str, Any], args: argparse.Namespace, style: Style,
                    out: TextIO, columns: int) -> None:
    name = "cluster_A" if shown["level"] == "A" else "cluster_A/cluster_B"
    print(style.mark("head", f"{shown['output']}: {shown['documents']:,} kept documents in "
                             f"{shown['clusters_total']} clusters ({name}), largest first"),
          file=out)
    print(wrap(shown["note"], 0, columns), file=out)
    for cluster in shown["clusters"]:
        share = cluster["size"] / max(1, shown["documents"])
        print(file=out)
        print(style.mark("head", f"{name} {cluster['id']}: {cluster['size']:,} documents "
                                 f"({share:.1%})"), file=out)
        print(f"  top terms  {', '.join(cluster['top_terms']) or '(none)'}", file=out)
        for example in cluster["examples"]:
            print(f"  example    {style.mark('id', example['id'])}", file=out)
            print(wrap(snippet(example["text"], args.width // 2), 13, columns), file=out)


# --------------------------------------------------------------------------- command line


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def add_show_command(subparsers: Any) -> None:
    """``ndcl show`` on the CLI's subcommand set."""
    show = subparsers.add_parser(
        "show", help="what a run removed and why (duplicate groups), or what its clusters "
                     "are about (--clusters)",
        description="Duplicate groups of an NDCL output, largest first, with the words that "
                    "differ from the kept text marked; or, with --clusters, each cluster's "
                    "size, top terms and examples. Reads only the documents it prints.")
    show.add_argument("output", metavar="OUT",
                      help="an NDCL output folder, local or gs:// (required)")
    show.add_argument("--clusters", action="store_true",
                      help="show clusters instead of duplicate groups (default: off)")
    show.add_argument("--level", choices=("A", "B"), default="A",
                      help="with --clusters: cluster_A, or the cluster_A/cluster_B "
                           "sub-clusters (default: %(default)s)")
    show.add_argument("--group", metavar="ID",
                      help="only this group (the kept document's id) with all its removed "
                           "documents; with --clusters, this cluster_A (or A/B) (default: the "
                           "largest)")
    show.add_argument("--limit", type=_positive, default=10, metavar="N",
                      help="the N largest groups or clusters (default: %(default)s)")
    show.add_argument("--members", type=_count, default=5, metavar="N",
                      help="removed documents shown per group, 0 for all (default: "
                           "%(default)s; all with --group)")
    show.add_argument("--sample", type=_positive, default=20, metavar="N",
                      help="with --clusters and no stored top terms: documents per cluster "
                           "that the top terms are computed from (default: %(default)s)")
    show.add_argument("--width", type=_positive, default=300, metavar="CHARS",
                      help="characters of text per snippet (default: %(default)s)")
    show.add_argument("--format", choices=("text", "json"), default="text",
                      help="json: the full texts as one JSON document (default: %(default)s)")
    show.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                      help="mark changed words in colour; auto: when standard output is a "
                           "terminal and NO_COLOR is unset (default: %(default)s)")
    show.add_argument("--input", nargs="+", metavar="PATTERN",
                      help="re-read removed documents from these files instead of the inputs "
                           "recorded in OUT (moved inputs, or an output of an older NDCL) "
                           "(default: the recorded inputs)")


def _use_colour(choice: str, stream: TextIO) -> bool:
    if choice != "auto":
        return choice == "always"
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    return bool(getattr(stream, "isatty", lambda: False)())


def run_show(args: argparse.Namespace) -> int:
    """Print what ``args`` asks for; 0 on success, 2 (one line on stderr) when it cannot."""
    out = sys.stdout
    try:
        if args.level == "B" and not args.clusters:
            raise ShowError("--level B goes with --clusters")
        output = open_output(args.output)
        shown = build_clusters(output, args) if args.clusters else build_groups(output, args)
    except ShowError as exc:
        print(f"ndcl show: error: {exc}", file=sys.stderr)
        return 2
    if args.format == "json":
        json.dump(shown, out, ensure_ascii=False, indent=1)
        out.write("\n")
        return 0
    style = Style(_use_colour(args.color, out))
    columns = min(shutil.get_terminal_size((100, 24)).columns, 120) - 1
    render = render_clusters if args.clusters else render_groups
    try:
        render(shown, args, style, out, columns)
    except BrokenPipeError:  # `ndcl show OUT | head`: the reader has seen enough
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
    return 0
