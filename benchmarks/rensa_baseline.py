"""rensa (Rust MinHash for Python) near-duplicate baseline, timed phase by phase.

The second baseline of ``benchmarks/nd_throughput.py`` (issue 14): what a user gets from a short
script around rensa 0.5 (``RMinHash`` + ``RMinHashLSH``), with the same reading, tokenising,
shingling and union-find as ``benchmarks/datasketch_baseline.py`` (imported from it, so the
two baselines differ only in the MinHash/LSH library). Like datasketch it verifies nothing and
writes nothing: it counts the documents in candidate components beyond one per component.

Phases: ``read_parse``; ``signatures`` (tokens, shingle sets, one ``RMinHash(num_perm, seed)``
a document fed with its shingles: the Python shingling dominates, as the issue measured);
``lsh`` (``RMinHashLSH(threshold, num_perm, num_bands)``: insert all, query all); ``union_find``.
rensa's LSH takes a band count that divides ``num_perm``, so it gets the one datasketch's
criterion prefers among those (32 bands of 8 rows at 0.7 / 256; datasketch itself picks 25 x 10).

Run::

    .venv/bin/python benchmarks/rensa_baseline.py ../shared/data/blogs/blogs.00000.json.gz
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from rensa import RMinHash, RMinHashLSH

try:
    from benchmarks import datasketch_baseline as common
except ImportError:  # run as a script: benchmarks/ itself is on sys.path
    import datasketch_baseline as common  # type: ignore[no-redef]


def signatures(texts: list[str], num_perm: int, ngram: int, seed: int
               ) -> Iterator[tuple[int, RMinHash]]:
    for index, text in enumerate(texts):
        grams = common.shingles(common.tokenize(text), ngram)
        if not grams:
            continue  # no token: nothing to compare, as in the datasketch baseline
        minhash = RMinHash(num_perm=num_perm, seed=seed)
        minhash.update(list(grams))
        yield index, minhash


def bands_for(threshold: float, num_perm: int) -> int:
    """The band count with datasketch's criterion (false positive + false negative areas,
    equal weights) among those rensa accepts: ``num_perm`` must split into equal bands."""
    from datasketch.lsh import _false_negative_probability, _false_positive_probability

    def error(bands: int) -> float:
        rows = num_perm // bands
        return (_false_positive_probability(threshold, bands, rows)
                + _false_negative_probability(threshold, bands, rows))

    return min((b for b in range(1, num_perm + 1) if num_perm % b == 0), key=error)


def run_baseline(paths: Sequence[Path], threshold: float, num_perm: int, ngram: int,
                 seed: int) -> dict[str, Any]:
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    texts, rejected = common.read_texts(paths)
    mark = time.perf_counter()
    seconds["read_parse"] = mark - start
    indexed = list(signatures(texts, num_perm, ngram, seed))
    docs = len(texts)
    del texts
    now = time.perf_counter()
    seconds["signatures"], mark = now - mark, now
    bands = bands_for(threshold, num_perm)
    lsh = RMinHashLSH(threshold=threshold, num_perm=num_perm, num_bands=bands)
    for key, minhash in indexed:
        lsh.insert(key, minhash)
    pairs = {(min(key, other), max(key, other)) for key, minhash in indexed
             for other in lsh.query(minhash) if other != key}
    now = time.perf_counter()
    seconds["lsh"], mark = now - mark, now
    duplicates, components = common.count_duplicates(pairs)
    now = time.perf_counter()
    seconds["union_find"] = now - mark
    total = now - start
    return {
        "system": "rensa",
        "files": [str(path) for path in paths],
        "params": {"threshold": threshold, "num_perm": num_perm, "ngram": ngram, "seed": seed},
        "bands": bands, "rows": num_perm // bands,
        "docs": docs, "docs_indexed": len(indexed), "rejected": rejected,
        "candidate_pairs": len(pairs), "components": components, "duplicates": duplicates,
        "seconds": seconds, "total_seconds": total,
        "docs_per_s": docs / total if total > 0 else 0.0,
        "signature_docs_per_s": docs / seconds["signatures"] if seconds["signatures"] else 0.0,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--threshold", type=float, default=common.DEFAULT_THRESHOLD)
    parser.add_argument("--num-perm", type=int, default=common.DEFAULT_NUM_PERM)
    parser.add_argument("--ngram", type=int, default=common.DEFAULT_NGRAM)
    parser.add_argument("--seed", type=int, default=common.DEFAULT_SEED)
    args = parser.parse_args(argv)
    result = run_baseline(args.files, args.threshold, args.num_perm, args.ngram, args.seed)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    phases = ", ".join(f"{name} {value:.2f}s" for name, value in result["seconds"].items())
    sys.stdout.write(f"docs {result['docs']}, duplicates {result['duplicates']}, total "
                     f"{result['total_seconds']:.2f}s ({result['docs_per_s']:.0f} docs/s)\n"
                     f"phases: {phases}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
