"""Plain datasketch near-duplicate baseline, timed phase by phase.

What it measures: how fast a single Python process finds near-duplicates with
datasketch's ``MinHash`` + ``MinHashLSH`` and no verification step, using the
same shingling as NDCL, so that NDCL's throughput can be compared with it
(``benchmarks/nd_throughput.py`` runs both).

Pipeline, one phase per timer:

1. ``read_parse``: read gzipped JSON lines, keep each record's ``text``.
   Lines that are not JSON objects with a string ``text`` are counted as
   ``rejected``.
2. ``signatures``: tokens = ``re.findall(r"[^\\W_]+", text.lower())``;
   shingles = the set of space-joined word ``ngram``-grams (a document with
   fewer than ``ngram`` tokens is one shingle of all its tokens; a document
   with no tokens is skipped and counted in ``docs_empty``); one
   ``MinHash(num_perm, seed)`` per document, fed with ``update_batch`` of the
   UTF-8 encoded shingles.
3. ``lsh``: ``MinHashLSH(threshold, num_perm)``; insert every signature, then
   query every signature; each returned key other than the query itself makes
   a candidate pair.
4. ``union_find``: connected components of the candidate pairs. Duplicates =
   documents in components minus the number of components, that is, every
   component keeps one document. Candidates are not verified against their
   Jaccard similarity: that is what "plain datasketch" does.

``signature_docs_per_s`` is ``docs / seconds["signatures"]``: tokenising,
shingling and MinHash, not JSON parsing. NDCL's ``compute_features`` stage
covers the same work plus its exact-match hashes, so comparing the two is, if
anything, conservative for NDCL.

By default every document builds its own ``MinHash(num_perm=256, seed=1)``,
as datasketch's documentation does, which regenerates the permutations each
time; ``--shared-permutations`` builds them once and passes them to every
MinHash (same signatures, faster), for a stronger baseline.

Run::

    .venv/bin/python benchmarks/datasketch_baseline.py \\
        ../shared/data/blogs/blogs.00000.json.gz --json /tmp/baseline.json
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from datasketch import MinHash, MinHashLSH

TOKEN_RE = re.compile(r"[^\W_]+")

DEFAULT_THRESHOLD = 0.7
DEFAULT_NUM_PERM = 256
DEFAULT_NGRAM = 5
DEFAULT_SEED = 1

# The MinHash scheme datasketch 2.x uses by default; it must be named when
# permutations are passed in explicitly.
_SCHEME = "affine32"


def tokenize(text: str) -> list[str]:
    """Lower-cased runs of letters and digits, as NDCL tokenizes."""
    return TOKEN_RE.findall(text.lower())


def shingles(tokens: Sequence[str], ngram: int = DEFAULT_NGRAM) -> set[str]:
    """Word ``ngram``-grams of ``tokens``; a short document is one shingle."""
    if not tokens:
        return set()
    if len(tokens) < ngram:
        return {" ".join(tokens)}
    return {" ".join(tokens[i : i + ngram]) for i in range(len(tokens) - ngram + 1)}


def read_texts(paths: Iterable[str | Path]) -> tuple[list[str], int]:
    """Texts of every gzipped JSON-lines file, and the count of rejected lines."""
    texts: list[str] = []
    rejected = 0
    for path in paths:
        with gzip.open(path, "rt", encoding="utf-8") as lines:
            for line in lines:
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    rejected += 1
                    continue
                text = record.get("text") if isinstance(record, dict) else None
                if isinstance(text, str):
                    texts.append(text)
                else:
                    rejected += 1
    return texts, rejected


def signatures(
    texts: Iterable[str],
    num_perm: int = DEFAULT_NUM_PERM,
    ngram: int = DEFAULT_NGRAM,
    seed: int = DEFAULT_SEED,
    shared_permutations: bool = False,
) -> Iterator[tuple[int, MinHash]]:
    """``(doc_index, MinHash)`` for every text that has at least one token."""
    permutations: np.ndarray | None = None
    if shared_permutations:
        permutations = MinHash(num_perm=num_perm, seed=seed).permutations
    for index, text in enumerate(texts):
        doc_shingles = shingles(tokenize(text), ngram)
        if not doc_shingles:
            continue
        if permutations is None:
            minhash = MinHash(num_perm=num_perm, seed=seed)
        else:
            minhash = MinHash(
                num_perm=num_perm, seed=seed, permutations=permutations, scheme=_SCHEME
            )
        minhash.update_batch([shingle.encode("utf-8") for shingle in doc_shingles])
        yield index, minhash


def candidate_pairs(
    indexed: Sequence[tuple[int, MinHash]],
    threshold: float = DEFAULT_THRESHOLD,
    num_perm: int = DEFAULT_NUM_PERM,
) -> tuple[set[tuple[int, int]], tuple[int, int]]:
    """Pairs ``(low, high)`` that share an LSH bucket, and the LSH ``(bands, rows)``."""
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    for key, minhash in indexed:
        lsh.insert(key, minhash)
    pairs: set[tuple[int, int]] = set()
    for key, minhash in indexed:
        for other in lsh.query(minhash):
            if other != key:
                pairs.add((key, other) if key < other else (other, key))
    return pairs, (lsh.b, lsh.r)


def count_duplicates(pairs: Iterable[tuple[int, int]]) -> tuple[int, int]:
    """``(duplicates, components)`` of the graph the pairs draw.

    Duplicates are the documents in components minus one per component.
    """
    parent: dict[int, int] = {}

    def find(node: int) -> int:
        parent.setdefault(node, node)
        while parent[node] != node:
            parent[node] = parent[parent[node]]  # path halving
            node = parent[node]
        return node

    duplicates = 0
    for left, right in pairs:
        root_left, root_right = find(left), find(right)
        if root_left != root_right:
            parent[max(root_left, root_right)] = min(root_left, root_right)
            duplicates += 1  # each successful union retires one document
    components = len(parent) - duplicates
    return duplicates, components


def run_baseline(
    paths: Sequence[str | Path],
    threshold: float = DEFAULT_THRESHOLD,
    num_perm: int = DEFAULT_NUM_PERM,
    ngram: int = DEFAULT_NGRAM,
    seed: int = DEFAULT_SEED,
    shared_permutations: bool = False,
) -> dict[str, Any]:
    """Run every phase on ``paths`` and return counts and timings."""
    seconds: dict[str, float] = {}
    start = time.perf_counter()

    texts, rejected = read_texts(paths)
    mark = time.perf_counter()
    seconds["read_parse"] = mark - start

    indexed = list(signatures(texts, num_perm, ngram, seed, shared_permutations))
    docs = len(texts)
    del texts
    now = time.perf_counter()
    seconds["signatures"], mark = now - mark, now

    pairs, (bands, rows) = candidate_pairs(indexed, threshold, num_perm)
    now = time.perf_counter()
    seconds["lsh"], mark = now - mark, now

    duplicates, components = count_duplicates(pairs)
    now = time.perf_counter()
    seconds["union_find"] = now - mark
    total = now - start

    return {
        "system": "datasketch",
        "files": [str(path) for path in paths],
        "params": {
            "threshold": threshold,
            "num_perm": num_perm,
            "ngram": ngram,
            "seed": seed,
            "shared_permutations": shared_permutations,
        },
        "bands": bands,
        "rows": rows,
        "docs": docs,
        "docs_indexed": len(indexed),
        "docs_empty": docs - len(indexed),
        "rejected": rejected,
        "candidate_pairs": len(pairs),
        "components": components,
        "duplicates": duplicates,
        "seconds": seconds,
        "total_seconds": total,
        "docs_per_s": docs / total if total > 0 else 0.0,
        "signature_docs_per_s": docs / seconds["signatures"] if seconds["signatures"] > 0 else 0.0,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "files",
        nargs="+",
        type=Path,
        help="gzipped JSON-lines files with a 'text' field",
    )
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    parser.add_argument("--num-perm", type=int, default=DEFAULT_NUM_PERM)
    parser.add_argument("--ngram", type=int, default=DEFAULT_NGRAM)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument(
        "--shared-permutations",
        action="store_true",
        help="build the MinHash permutations once instead of once per document",
    )
    args = parser.parse_args(argv)

    result = run_baseline(
        args.files,
        args.threshold,
        args.num_perm,
        args.ngram,
        args.seed,
        args.shared_permutations,
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    phases = ", ".join(f"{name} {value:.2f}s" for name, value in result["seconds"].items())
    sys.stdout.write(
        f"docs {result['docs']} (indexed {result['docs_indexed']}), "
        f"duplicates {result['duplicates']}, total {result['total_seconds']:.2f}s "
        f"({result['docs_per_s']:.0f} docs/s; "
        f"signatures {result['signature_docs_per_s']:.0f} docs/s)\n"
        f"phases: {phases}\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
