"""Build the bundled NDCL demo corpus: real C4 documents plus planted near-duplicates.

The script reads the 1,000-document C4 sample, keeps every document, and plants
variants of about 150 of them:

* ``exact``       -- the same text under a new URL;
* ``case_punct``  -- same tokens, different case / punctuation / whitespace;
* ``light_edit``  -- about 1-3 % of the words replaced, deleted or inserted;
* ``boilerplate`` -- the text with a short header and/or footer line added;
* ``heavy_edit``  -- about 25 % of the words changed: a negative control that
  must *not* be found as a near-duplicate.

Similarity is the exact Jaccard index of word 5-gram shingle sets, where the
tokens are ``re.findall(r"[^\\W_]+", text.lower())`` and a document with fewer
than 5 tokens is a single shingle of all its tokens.  Positive variants are kept
only if their Jaccard with the source is >= 0.75, heavy edits only if it is
<= 0.5.

Originals and variants are shuffled together into one gzipped JSON-lines file.
Documents carry no ``id`` field; a document's id is
``<file base name>:<1-based line number>``.  Beside the corpus the script writes

* ``planted.json`` -- the planted clusters and every variant with its kind and
  Jaccard;
* ``truth.json``   -- the exact ground truth: connected components of the graph
  "Jaccard >= 0.7" over all documents (every pair sharing a shingle is checked),
  which also catches near-duplicates that occur naturally in C4, and every pair
  of Jaccard >= 0.5 with its Jaccard (``pairs``, the format of ``ndcl truth``);
* ``README.md``    -- provenance, attribution and the regeneration command.

The output is byte-for-byte reproducible for a given ``--seed``.  Run from the
repository root::

    .venv/bin/python scripts/make_demo_corpus.py [--seed 1234]
        [--source PATH] [--output-dir data/demo]
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import random
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SOURCE = (
    REPO_ROOT / ".." / "shared" / "data" / "c4" / "c4-sample.00000-of-00001.json.gz"
)
DEFAULT_OUTPUT_DIR = REPO_ROOT / "data" / "demo"
CORPUS_NAME = "c4-demo.00000-of-00001.json.gz"

NGRAM = 5
THRESHOLD = 0.7
N_SOURCES = 150
MIN_SOURCE_TOKENS = 60
MIN_POSITIVE_JACCARD = 0.75
MAX_NEGATIVE_JACCARD = 0.5
MAX_ATTEMPTS = 5
# Pairs this similar are reported as near misses, not near-duplicates.
NEAR_MISS_FLOOR = 0.5

POSITIVE_KINDS = ("exact", "case_punct", "light_edit", "boilerplate")
NEGATIVE_KINDS = ("heavy_edit",)
KINDS = POSITIVE_KINDS + NEGATIVE_KINDS
# light_edit is the case a MinHash pipeline finds hardest, so it gets the most weight.
KIND_WEIGHTS = (2, 2, 3, 2, 1)

TOKEN_RE = re.compile(r"[^\W_]+")
# Splitting on a capturing group keeps the separators, so an edited document
# keeps the original punctuation and line breaks around the words it did not touch.
WORD_SPLIT_RE = re.compile(r"([^\W_]+)")

HEADERS = (
    "Skip to main content.",
    "Home > News > Latest stories",
    "This article first appeared on our partner site.",
    "Advertisement - scroll to continue reading.",
)
FOOTERS = (
    "Share this: Facebook, Twitter, Email, Print.",
    "Copyright 2019. All rights reserved.",
    "Click here to subscribe to our weekly newsletter.",
    "Posted in Uncategorized | Leave a comment",
)

ATTRIBUTION = (
    "Contains 1,000 documents from the C4 dataset (allenai/c4, `en` variant) by the "
    "Allen Institute for AI, released under ODC-BY 1.0 "
    "(https://opendatacommons.org/licenses/by/1-0/); the original data is derived from "
    "Common Crawl, subject to its terms of use. Planted variants are modifications of "
    "those documents."
)


@dataclass(frozen=True)
class Variant:
    """A planted document; ``source`` indexes the list of original documents."""

    source: int
    kind: str
    text: str
    jaccard: float


# --------------------------------------------------------------------------- maths


def tokenize(text: str) -> list[str]:
    return TOKEN_RE.findall(text.lower())


def shingles(tokens: Sequence[str], n: int = NGRAM) -> set[str]:
    # A short document still needs a fingerprint, otherwise two identical
    # three-word documents would never match each other.
    if not tokens:
        return set()
    if len(tokens) < n:
        return {" ".join(tokens)}
    return {" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def jaccard(a: set[str], b: set[str]) -> float:
    if not a and not b:
        return 0.0
    inter = len(a & b)
    return inter / (len(a) + len(b) - inter)


def text_jaccard(a: str, b: str) -> float:
    return jaccard(shingles(tokenize(a)), shingles(tokenize(b)))


# ------------------------------------------------------------------- variant makers


def match_case(template: str, word: str) -> str:
    """Give an inserted word the capitalisation of the word it stands in for."""
    if len(template) > 1 and template.isupper():
        return word.upper()
    if template[:1].isupper():
        return word.capitalize()
    return word


def edit_words(
    text: str,
    n_edits: int,
    rng: random.Random,
    vocab: Sequence[str],
    op_weights: tuple[float, float, float],
) -> str:
    """Replace, delete or insert ``n_edits`` words, keeping the text around them."""
    parts = WORD_SPLIT_RE.split(text)
    lead = parts[0]
    # (word, separator that follows it)
    pairs = [[parts[k], parts[k + 1]] for k in range(1, len(parts), 2)]
    positions = rng.sample(range(len(pairs)), min(n_edits, len(pairs)))
    # Right to left, so an insertion or deletion does not move positions still to edit.
    for pos in sorted(positions, reverse=True):
        op = rng.choices(("replace", "delete", "insert"), weights=op_weights)[0]
        word = pairs[pos][0]
        new = rng.choice(vocab)
        while new == word.lower():
            new = rng.choice(vocab)
        if op == "replace":
            pairs[pos][0] = match_case(word, new)
        elif op == "delete" and len(pairs) > 1:
            del pairs[pos]
        else:
            pairs.insert(pos, [match_case(word, new), " "])
    return lead + "".join(w + s for w, s in pairs)


def light_edit(
    text: str, n_tokens: int, rng: random.Random, vocab: Sequence[str]
) -> str:
    # 1-3 % edits: each edit breaks up to 5 shingles, so this lands at Jaccard ~0.75-0.9.
    n_edits = max(1, round(n_tokens * rng.uniform(0.01, 0.03)))
    return edit_words(text, n_edits, rng, vocab, (0.6, 0.2, 0.2))


def heavy_edit(
    text: str, n_tokens: int, rng: random.Random, vocab: Sequence[str]
) -> str:
    # Mostly replacements so the length stays close to the source's: the
    # control should look like a near-duplicate by size, just not by content.
    n_edits = max(1, round(n_tokens * rng.uniform(0.2, 0.3)))
    return edit_words(text, n_edits, rng, vocab, (0.8, 0.1, 0.1))


def change_separator(sep: str, rng: random.Random) -> str:
    if rng.random() < 0.5:
        sep = re.sub(r"\s+", rng.choice((" ", "  ", "\n")), sep)
    if rng.random() < 0.3:
        sep = sep.replace(",", "")
    if rng.random() < 0.3:
        sep = sep.replace(".", rng.choice(("!", ";", " -")))
    if rng.random() < 0.2:
        sep = sep.replace('"', "'")
    return sep


def case_punct(text: str, rng: random.Random) -> str:
    """Change case, punctuation and whitespace but never the token sequence."""
    parts = WORD_SPLIT_RE.split(text)
    p_word = rng.uniform(0.1, 0.4)
    p_sep = rng.uniform(0.1, 0.4)
    out = [parts[0]]
    for k in range(1, len(parts), 2):
        word, sep = parts[k], parts[k + 1]
        if rng.random() < p_word:
            new = rng.choice((str.upper, str.lower, str.capitalize))(word)
            # Some letters change length or split when case-folded (e.g. "ß" -> "SS").
            if tokenize(new) == tokenize(word):
                word = new
        if rng.random() < p_sep:
            new_sep = change_separator(sep, rng)
            last = k + 2 >= len(parts)
            # An emptied separator between two words would glue them into one token.
            sep = new_sep if new_sep or last else " "
        out.append(word)
        out.append(sep)
    return "".join(out)


def boilerplate(text: str, rng: random.Random) -> str:
    where = rng.choice(("header", "footer", "both"))
    if where in ("header", "both"):
        text = rng.choice(HEADERS) + "\n" + text
    if where in ("footer", "both"):
        text = text + "\n" + rng.choice(FOOTERS)
    return text


def make_variant(
    source_text: str, kind: str, rng: random.Random, vocab: Sequence[str]
) -> tuple[str, float] | None:
    """Return (text, Jaccard with the source), or None if no attempt passed its bound."""
    n_tokens = len(tokenize(source_text))
    for _ in range(MAX_ATTEMPTS):
        if kind == "exact":
            text = source_text
        elif kind == "case_punct":
            text = case_punct(source_text, rng)
            if text == source_text or tokenize(text) != tokenize(source_text):
                continue
        elif kind == "light_edit":
            text = light_edit(source_text, n_tokens, rng, vocab)
        elif kind == "boilerplate":
            text = boilerplate(source_text, rng)
        elif kind == "heavy_edit":
            text = heavy_edit(source_text, n_tokens, rng, vocab)
        else:
            raise ValueError(f"unknown variant kind: {kind}")
        score = text_jaccard(source_text, text)
        if kind in POSITIVE_KINDS and score >= MIN_POSITIVE_JACCARD:
            return text, score
        if kind in NEGATIVE_KINDS and score <= MAX_NEGATIVE_JACCARD:
            return text, score
    return None


def build_vocab(texts: Iterable[str]) -> list[str]:
    """Replacement words: plain ASCII words common enough to look natural."""
    counts = Counter(t for text in texts for t in tokenize(text))
    # Sorted, because the RNG picks by index and set/dict order must not leak in.
    return sorted(
        w
        for w, c in counts.items()
        if c >= 3 and 3 <= len(w) <= 12 and w.isascii() and w.isalpha()
    )


def plant_variants(
    docs: Sequence[dict], rng: random.Random, vocab: Sequence[str]
) -> tuple[list[Variant], Counter]:
    eligible = [
        i for i, d in enumerate(docs) if len(tokenize(d["text"])) >= MIN_SOURCE_TOKENS
    ]
    sources = sorted(rng.sample(eligible, min(N_SOURCES, len(eligible))))
    variants: list[Variant] = []
    skipped: Counter = Counter()
    for src in sources:
        for kind in rng.choices(KINDS, weights=KIND_WEIGHTS, k=rng.randint(1, 3)):
            made = make_variant(docs[src]["text"], kind, rng, vocab)
            if made is None:
                skipped[kind] += 1
                continue
            variants.append(Variant(src, kind, made[0], made[1]))
    return variants, skipped


def mirror_url(url: str, n: int) -> str:
    parts = urlsplit(url)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return f"https://mirror-{n}.example.com{path}"


# ---------------------------------------------------------------------- ground truth


class UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, x: int) -> int:
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            # Smaller root wins so the representative does not depend on pair order.
            self.parent[max(ra, rb)] = min(ra, rb)


def similar_pairs(
    texts: Sequence[str], threshold: float
) -> list[tuple[int, int, float]]:
    """All pairs (i < j) with exact shingle Jaccard >= threshold.

    Only pairs that share a shingle can have a non-zero Jaccard, so counting
    co-occurrences through an inverted index gives every intersection size
    without comparing all n^2 pairs.
    """
    sets = [shingles(tokenize(t)) for t in texts]
    index: dict[str, list[int]] = {}
    for i, s in enumerate(sets):
        for sh in s:
            index.setdefault(sh, []).append(i)
    pairs = []
    for i, s in enumerate(sets):
        inter: Counter = Counter()
        for sh in s:
            inter.update(j for j in index[sh] if j > i)
        for j, n in sorted(inter.items()):
            score = n / (len(s) + len(sets[j]) - n)
            if score >= threshold:
                pairs.append((i, j, score))
    return pairs


def components(n: int, pairs: Iterable[tuple[int, int, float]]) -> list[list[int]]:
    uf = UnionFind(n)
    for i, j, _ in pairs:
        uf.union(i, j)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(uf.find(i), []).append(i)
    return sorted(g for g in groups.values() if len(g) >= 2)


# ------------------------------------------------------------------------------- I/O


def read_c4(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_jsonl_gz(path: Path, rows: Iterable[dict]) -> None:
    # mtime=0 and no embedded file name keep the bytes identical between runs.
    with (
        path.open("wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as f,
    ):
        for row in rows:
            f.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))


def write_json(path: Path, obj: object) -> None:
    path.write_text(
        json.dumps(obj, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
    )


DESCRIPTIONS = {
    "exact": "identical text under a new URL",
    "case_punct": "same tokens; case, punctuation and whitespace changed",
    "light_edit": "about 1-3 % of the words replaced, deleted or inserted",
    "boilerplate": "a short header and/or footer line added",
    "heavy_edit": "about 25 % of the words changed; negative control, not a near-duplicate",
}


def doc_id(line_index: int) -> str:
    return f"{CORPUS_NAME}:{line_index + 1}"


@dataclass(frozen=True)
class Entry:
    """One line of the corpus and where it came from."""

    doc: dict
    original: int | None  # index into the C4 sample, for an original document
    variant: Variant | None


@dataclass(frozen=True)
class Truth:
    clusters: list[list[int]]
    # Pairs inside one cluster that are below the threshold: the cluster only
    # holds together through the source, so pairwise and cluster metrics differ.
    weak_sibling_pairs: int
    # Pairs of original C4 documents with NEAR_MISS_FLOOR <= Jaccard < THRESHOLD.
    original_near_misses: list[tuple[int, int, float]]
    # Every pair with Jaccard >= NEAR_MISS_FLOOR, for detection rates per similarity.
    pairs: list[tuple[int, int, float]]


def assemble(
    originals: Sequence[dict], variants: Sequence[Variant], rng: random.Random
) -> list[Entry]:
    entries = [Entry(d, i, None) for i, d in enumerate(originals)]
    for n, v in enumerate(variants, start=1):
        src = originals[v.source]
        doc = {
            "text": v.text,
            "timestamp": src["timestamp"],
            "url": mirror_url(src["url"], n),
        }
        entries.append(Entry(doc, None, v))
    # Without the shuffle a variant would sit right after its source, which
    # would let any order-dependent shortcut look like a working detector.
    rng.shuffle(entries)
    return entries


def planted_metadata(entries: Sequence[Entry]) -> tuple[list[list[int]], list[dict]]:
    """Planted clusters (as line indices) and one row per variant for planted.json."""
    line_of_original = {
        e.original: line for line, e in enumerate(entries) if e.original is not None
    }
    clusters: dict[int, list[int]] = {}
    rows = []
    for line, e in enumerate(entries):
        if e.variant is None:
            continue
        src_line = line_of_original[e.variant.source]
        rows.append(
            {
                "id": doc_id(line),
                "source_id": doc_id(src_line),
                "kind": e.variant.kind,
                "jaccard": round(e.variant.jaccard, 6),
            }
        )
        if e.variant.kind in POSITIVE_KINDS:
            clusters.setdefault(src_line, [src_line]).append(line)
    return sorted(sorted(c) for c in clusters.values()), rows


def compute_truth(entries: Sequence[Entry]) -> Truth:
    pairs = similar_pairs([e.doc["text"] for e in entries], NEAR_MISS_FLOOR)
    clusters = components(len(entries), (p for p in pairs if p[2] >= THRESHOLD))
    cluster_of = {i: k for k, c in enumerate(clusters) for i in c}
    below = [p for p in pairs if p[2] < THRESHOLD]
    weak = sum(
        1 for i, j, _ in below if i in cluster_of and cluster_of[i] == cluster_of.get(j)
    )
    misses = [
        p
        for p in below
        if entries[p[0]].original is not None and entries[p[1]].original is not None
    ]
    return Truth(clusters, weak, sorted(misses, key=lambda p: -p[2]), pairs)


def readme_text(
    seed: int,
    entries: Sequence[Entry],
    n_planted: int,
    truth: Truth,
) -> str:
    n_docs = len(entries)
    n_originals = sum(e.original is not None for e in entries)
    kind_counts = Counter(e.variant.kind for e in entries if e.variant is not None)
    kinds = "\n".join(
        f"| `{k}` | {kind_counts.get(k, 0)} | {DESCRIPTIONS[k]} |" for k in KINDS
    )
    misses = truth.original_near_misses
    if misses:
        i, j, score = misses[0]
        closest = (
            f" The closest is {doc_id(i)} / {doc_id(j)} at {score:.3f}\n"
            f"({entries[i].doc['url']} and\n{entries[j].doc['url']})."
        )
    else:
        closest = ""
    return f"""# NDCL demo corpus

`{CORPUS_NAME}` is a small C4-style corpus for trying out and testing NDCL's
near-duplicate detection and clustering. It holds {n_docs} documents, one JSON object
per line with the fields `text`, `timestamp` and `url`: the {n_originals:,} documents
of the C4 `en` sample, unchanged, plus {n_docs - n_originals} planted variants of
about {N_SOURCES} of them, shuffled together.

A document's id is `<file base name>:<1-based line number>`, e.g.
`{CORPUS_NAME}:17`; the documents themselves carry no `id` field.

## Files

- `{CORPUS_NAME}` -- the corpus (gzipped JSON lines).
- `planted.json` -- what was planted: `clusters` ({n_planted}: each source with its
  positive variants) and `variants` (every variant with `id`, `source_id`, `kind` and
  its exact `jaccard` with the source).
- `truth.json` -- the exact ground truth at `threshold` {THRESHOLD} with word
  {NGRAM}-gram shingles: the connected components ({len(truth.clusters)}) of the graph
  whose edges are the document pairs with Jaccard >= {THRESHOLD}, computed over all
  documents, so it would also hold near-duplicates that occur naturally in C4. Only
  components of size >= 2 are listed; documents without any token are left out. Ids
  in a cluster are in line order and clusters are ordered by their first line.
  `pairs` lists every document pair with Jaccard >= {NEAR_MISS_FLOOR} (below the
  threshold too) with its Jaccard, for `ndcl evaluate`'s detection rate per
  similarity. The bundled file was rewritten by `ndcl truth` (same clusters and
  pairs, with copies of one shingle set listed once under `identical`, and its
  metadata).

Tokens are `re.findall(r"[^\\W_]+", text.lower())`; the shingles of a document are the
set of its space-joined word {NGRAM}-grams, or one shingle of all its tokens when it
has fewer than {NGRAM}.

## Variant kinds

| kind | count | what it is |
|---|---|---|
{kinds}

Positive variants were kept only if their Jaccard with the source is >=
{MIN_POSITIVE_JACCARD}, heavy edits only if it is <= {MAX_NEGATIVE_JACCARD}. Variants
get the timestamp of their source and a URL
`https://mirror-<n>.example.com/<source path>`.

## Near misses

Clusters are transitive: {truth.weak_sibling_pairs} pair(s) of documents in the same truth
cluster (two variants of one source) have a Jaccard below {THRESHOLD} with each other,
so pairwise and cluster-level scores differ.

{len(misses)} pair(s) of original C4 documents have a Jaccard between {NEAR_MISS_FLOOR} and
{THRESHOLD}: not near-duplicates by the exact definition, though an approximate
method (MinHash/LSH) may report them.{closest}

## Regenerating

    .venv/bin/python scripts/make_demo_corpus.py

(seed {seed}; `--seed`, `--source` and `--output-dir` change the defaults). The
output is byte-for-byte reproducible for a given seed.

## Attribution

{ATTRIBUTION}

The source file is `c4-sample.00000-of-00001.json.gz`, which names its time field
`date`; it is renamed to `timestamp` here, as in the real C4 `en` files.
"""


def print_summary(
    entries: Sequence[Entry],
    planted: Sequence[Sequence[int]],
    truth: Truth,
    skipped: Counter,
    out: Path,
) -> None:
    kind_counts = Counter(e.variant.kind for e in entries if e.variant is not None)
    planted_sets = {frozenset(c) for c in planted}
    natural = [
        c
        for c in truth.clusters
        if sum(entries[i].original is not None for i in c) >= 2
    ]
    print(f"wrote {len(entries)} documents to {out / CORPUS_NAME}")
    print(f"variants by kind: {dict(sorted(kind_counts.items()))}")
    print(f"variants skipped (bound not met): {dict(sorted(skipped.items()))}")
    print(f"planted clusters: {len(planted)}")
    print(f"truth clusters (Jaccard >= {THRESHOLD}): {len(truth.clusters)}, of which")
    print(
        "  identical to a planted cluster: "
        f"{sum(frozenset(c) in planted_sets for c in truth.clusters)}"
    )
    print(
        f"  with >= 2 original C4 documents (natural near-duplicates): {len(natural)}"
    )
    for c in natural:
        print("    " + ", ".join(f"{doc_id(i)} {entries[i].doc['url']}" for i in c))
    print(
        f"pairs below {THRESHOLD} inside one truth cluster: {truth.weak_sibling_pairs}"
    )
    print(
        f"original C4 pairs with {NEAR_MISS_FLOOR} <= Jaccard < {THRESHOLD}: "
        f"{len(truth.original_near_misses)}"
    )
    for i, j, score in truth.original_near_misses:
        print(f"    {score:.3f} {doc_id(i)} {doc_id(j)}")


# ------------------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--source", type=Path, default=DEFAULT_SOURCE, help="C4 sample (.json.gz)"
    )
    parser.add_argument("--output-dir", type=Path, default=DEFAULT_OUTPUT_DIR)
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    originals = [
        {"text": d["text"], "timestamp": d["date"], "url": d["url"]}
        for d in read_c4(args.source)
    ]
    vocab = build_vocab(d["text"] for d in originals)
    variants, skipped = plant_variants(originals, rng, vocab)
    entries = assemble(originals, variants, rng)
    planted, variant_rows = planted_metadata(entries)
    truth = compute_truth(entries)

    out = args.output_dir
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl_gz(out / CORPUS_NAME, (e.doc for e in entries))
    planted_json = {
        "seed": args.seed,
        "ngram": NGRAM,
        "threshold": THRESHOLD,
        "clusters": [[doc_id(i) for i in c] for c in planted],
        "variants": variant_rows,
    }
    write_json(out / "planted.json", planted_json)
    truth_json = {
        "threshold": THRESHOLD,
        "ngram": NGRAM,
        "docs": len(entries),
        "pairs_min": NEAR_MISS_FLOOR,
        "clusters": [[doc_id(i) for i in c] for c in truth.clusters],
        # As `ndcl truth` writes them: Jaccard cut (not rounded) to 4 decimals, so that a
        # value is at or above the threshold exactly when the pair is.
        "pairs": [
            [doc_id(i), doc_id(j), math.floor(score * 10**4 + 1e-9) / 10**4]
            for i, j, score in truth.pairs
        ],
    }
    write_json(out / "truth.json", truth_json)
    readme = readme_text(args.seed, entries, len(planted), truth)
    (out / "README.md").write_text(readme, encoding="utf-8")
    print_summary(entries, planted, truth, skipped, out)


if __name__ == "__main__":
    main()
