"""A planted corpus whose near-duplicates sit just above the 0.7 threshold, for recall checks.

Every document of the 1,000-document C4 sample, plus a variant of the first 600 that have at
least 60 tokens: single words replaced by new ones (``zq<n>``) until the word 5-gram Jaccard
with the source (``[^\\W_]+`` tokens of the lowercased text) falls in a target band, the bands
taken in turn: 0.70-0.72 (4 of 11), 0.72-0.75 (3), 0.75-0.80 (2), 0.80-0.90, 0.90-1.00.
Shuffled into one gzipped JSON-lines file, reproducible for a given ``--seed``. The truth with
scored pairs comes from ``ndcl truth OUT --candidates index --output TRUTH``; then
``ndcl dedup`` and ``ndcl evaluate OUT_DIR --truth TRUTH`` give the detection rate per
similarity bin (README, "b and r"). Run from the repository root::

    .venv/bin/python scripts/make_threshold_corpus.py --output /tmp/threshold.json.gz
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SOURCE = REPO_ROOT / ".." / "shared" / "data" / "c4" / "c4-sample.00000-of-00001.json.gz"
BANDS = [(0.70, 0.72)] * 4 + [(0.72, 0.75)] * 3 + [(0.75, 0.80)] * 2 + [(0.80, 0.90),
                                                                        (0.90, 1.0)]


def shingles(words: list[str], ngram: int = 5) -> set[tuple[str, ...]]:
    if len(words) < ngram:
        return {tuple(words)}
    return {tuple(words[i:i + ngram]) for i in range(len(words) - ngram + 1)}


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b)


def variant(rng: random.Random, words: list[str], low: float, high: float) -> list[str] | None:
    """``words`` with single words replaced until the Jaccard is below ``high``; None when it
    then is below ``low`` too, 20 times."""
    source = shingles(words)
    for _ in range(20):
        edited = list(words)
        similarity = 1.0
        while similarity >= high:
            edited[rng.randrange(len(edited))] = f"zq{rng.randrange(10**6)}"
            similarity = jaccard(source, shingles(edited))
        if similarity >= low:
            return edited
    return None


def build(source: Path, seed: int, variants: int) -> list[dict]:
    rng = random.Random(seed)
    with gzip.open(source, "rt", encoding="utf-8") as f:
        docs = [json.loads(line) for line in f]
    records = [{"text": d["text"], "url": d.get("url", "")} for d in docs]
    made = 0
    for i, doc in enumerate(docs):
        words = re.findall(r"[^\W_]+", doc["text"].lower())
        if len(words) < 60:
            continue
        low, high = BANDS[made % len(BANDS)]
        edited = variant(rng, words, low, high)
        if edited is not None:
            records.append({"text": " ".join(edited), "url": f"https://planted.example/{i}"})
            made += 1
        if made >= variants:
            break
    rng.shuffle(records)
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--variants", type=int, default=600)
    args = parser.parse_args(argv)
    records = build(args.source, args.seed, args.variants)
    with gzip.open(args.output, "wt", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    print(f"wrote {args.output}: {len(records)} documents")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
