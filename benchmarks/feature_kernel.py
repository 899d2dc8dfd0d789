"""``ComputeFeatures``' work on one blog shard: the numpy reference path against the compiled
kernel (C, ``transforms/_feature_kernel.c``), in one process.

Issue 14's target is ``ComputeFeatures`` (tokenise, shingle hashes, 256-permutation MinHash,
exact hash) at >= 50k docs/s per core. This script reads ``../shared/data/blogs/
blogs.00000.json.gz`` into the pipeline's document batches (4,096 records, not timed), then
runs ``transforms.minhash.compute_features`` over every batch with the pipeline's defaults
(5-grams, 256 permutations, seed 1, Unicode tokens, the LSH banding of threshold 0.7 with
exact verification: the recall floor 0.995, b = 29, r = 5), once per kernel per repeat,
alternating, and prints the median docs/s of each: by wall time and per CPU second of this
process (the per-core figure, steadier when other work shares the machine). The first
compiled call (importing the extension) is timed apart. Both
paths' features are compared on the first repeat: identical, or it fails.

    .venv/bin/python benchmarks/feature_kernel.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._measure import report  # noqa: E402
from transforms.batches import DocBatch, FeatureBatch  # noqa: E402
from transforms.lsh import RECALL_FLOOR, recall_floor_param  # noqa: E402
from transforms.minhash import compute_features, permutation_params  # noqa: E402

SHARD = REPO.parent / "shared" / "data" / "blogs" / "blogs.00000.json.gz"
BATCH_SIZE, NGRAM, NUM_PERM, SEED, THRESHOLD = 4096, 5, 256, 1, 0.7
ARRAYS = ("uids", "norm_lengths", "exact_hashes", "signatures", "derived", "band_hashes")


def read_batches(path: Path) -> list[DocBatch]:
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        records = [json.loads(line) for line in lines]
    return [DocBatch(start, np.arange(start, start + len(part), dtype=np.int64),
                     [str(i) for i in range(start, start + len(part))], part)
            for start in range(0, len(records), BATCH_SIZE)
            for part in [records[start : start + BATCH_SIZE]]]


def run(batches: list[DocBatch], kernel: str, a: np.ndarray, b: np.ndarray,
        banding: tuple[int, int]) -> tuple[float, float, list[tuple[FeatureBatch, int]]]:
    """``(wall s, CPU s, features)`` of one pass over every batch."""
    wall, cpu = time.perf_counter(), time.process_time()
    features = [compute_features(batch, NGRAM, SEED, a, b, "unicode", banding, kernel)
                for batch in batches]
    return time.perf_counter() - wall, time.process_time() - cpu, features


def assert_identical(left: list[tuple[FeatureBatch, int]],
                     right: list[tuple[FeatureBatch, int]]) -> None:
    for (f, untokenized_f), (g, untokenized_g) in zip(left, right, strict=True):
        assert untokenized_f == untokenized_g and f.ids == g.ids
        for name in ARRAYS:
            x, y = getattr(f, name), getattr(g, name)
            assert (x is None) == (y is None), name
            if x is not None:
                assert x.dtype == y.dtype and np.array_equal(x, y), name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--results", type=Path,
                        default=REPO / "benchmarks" / "results-feature-kernel.txt")
    args = parser.parse_args(argv)
    batches = read_batches(SHARD)
    docs = sum(len(batch.records) for batch in batches)
    a, b = permutation_params(NUM_PERM, SEED)
    banding = recall_floor_param(THRESHOLD, NUM_PERM, RECALL_FLOOR)  # the pipeline's default
    start = time.perf_counter()
    compute_features(batches[0], NGRAM, SEED, a, b, "unicode", banding, "compiled")
    first_call = time.perf_counter() - start

    rates: dict[str, list[tuple[float, float]]] = {"numpy": [], "compiled": []}
    for repeat in range(args.repeats):
        passes = {}
        for kernel in rates:
            wall, cpu, passes[kernel] = run(batches, kernel, a, b, banding)
            rates[kernel].append((docs / wall, docs / cpu))
        if repeat == 0:
            assert_identical(passes["numpy"], passes["compiled"])

    lines = [f"ComputeFeatures work on {SHARD.name}: {docs:,} docs in {len(batches)} batches "
             f"of {BATCH_SIZE}, {NGRAM}-grams, {NUM_PERM} permutations, bands x rows = "
             f"{banding[0]} x {banding[1]}, unicode tokens; one process, medians of "
             f"{args.repeats} alternating passes (same run)",
             f"compiled first call (extension import included): {first_call:.2f} s",
             "features identical (dtypes and values): yes", "",
             f"{'path':<10}{'docs/s (wall)':>16}{'docs/s per CPU s':>20}"]
    medians = {}
    for kernel, values in rates.items():
        medians[kernel] = [statistics.median(v[i] for v in values) for i in (0, 1)]
        lines.append(f"{kernel:<10}{medians[kernel][0]:>16,.0f}{medians[kernel][1]:>20,.0f}")
    per_core = medians["compiled"][1]
    lines += ["", f"compiled / numpy: {medians['compiled'][0] / medians['numpy'][0]:.1f}x wall, "
              f"{per_core / medians['numpy'][1]:.1f}x per CPU s",
              f"target >= 50,000 docs/s per core: {'PASS' if per_core >= 50_000 else 'FAIL'}"]
    return report(lines, args.results)


if __name__ == "__main__":
    sys.exit(main())
