"""Small planted corpora written on the fly (no data files needed in the repo)."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

WORDS = [f"w{i}" for i in range(3000)]


def _text(rng: random.Random, length: int) -> list[str]:
    return [rng.choice(WORDS) for _ in range(length)]


def _edit(rng: random.Random, words: list[str], edits: int) -> list[str]:
    words = list(words)
    for _ in range(edits):
        words[rng.randrange(len(words))] = rng.choice(WORDS)
    return words


def planted_records(seed: int = 7, clusters: int = 25, singles: int = 120) -> list[dict]:
    """Records with planted near-duplicate clusters, exact copies, a drifting chain, short and
    empty texts and some explicit ids, shuffled deterministically."""
    rng = random.Random(seed)
    records: list[dict] = []
    for c in range(clusters):
        base = _text(rng, rng.randint(80, 200))
        records.append({"text": " ".join(base), "url": f"https://c{c}.example/0"})
        for k in range(rng.randint(1, 4)):
            if k == 0:
                # Same tokens in other case and punctuation: an exact duplicate.
                text = " ".join(base).upper().replace(" ", ", ")
            else:
                text = " ".join(_edit(rng, base, rng.randint(1, 3)))
            records.append({"text": text, "url": f"https://c{c}.example/{k + 1}"})
    # A chain: each step edits a few words, so the ends are far apart but linked.
    chain = _text(rng, 120)
    for step in range(12):
        records.append({"text": " ".join(chain), "url": f"https://chain.example/{step}"})
        chain = _edit(rng, chain, 2)
    for s in range(singles):
        records.append({"text": " ".join(_text(rng, rng.randint(20, 150))),
                        "url": f"https://single.example/{s}"})
    records += [
        {"text": "", "url": "https://empty.example/1"},
        {"text": "!!! ... ???", "url": "https://empty.example/2"},
        {"text": "too short", "url": "https://short.example/1"},
        {"text": "Too, SHORT!", "url": "https://short.example/2"},
        {"id": "custom-b", "text": " ".join(base), "url": "https://ids.example/b"},
        {"id": 12345, "text": " ".join(_edit(rng, base, 1)), "url": "https://ids.example/n"},
    ]
    rng.shuffle(records)
    for i, record in enumerate(records):
        record.setdefault("timestamp", f"2020-01-{1 + i % 28:02d}T00:00:00Z")
    return records


def _shingles(words: list[str], ngram: int = 5) -> set[tuple[str, ...]]:
    return {tuple(words[i:i + ngram]) for i in range(len(words) - ngram + 1)}


def threshold_pair_records(seed: int = 14, pairs: int = 40, low: float = 0.70,
                           high: float = 0.75) -> list[dict]:
    """``pairs`` pairs ``p<i>a`` / ``p<i>b`` (explicit ids) of word 5-gram Jaccard in
    ``[low, high)``: a random text and a copy with single words replaced until it falls in."""
    rng = random.Random(seed)
    records: list[dict] = []
    while len(records) < 2 * pairs:
        base = _text(rng, rng.randint(100, 200))
        source, variant = _shingles(base), list(base)
        similarity = 1.0
        while similarity >= high:
            variant = _edit(rng, variant, 1)
            edited = _shingles(variant)
            similarity = len(source & edited) / len(source | edited)
        if similarity >= low:
            i = len(records) // 2
            records += [{"id": f"p{i}a", "text": " ".join(base)},
                        {"id": f"p{i}b", "text": " ".join(variant)}]
    return records


def write_corpus(directory: Path, records: list[dict], files: int = 3,
                 gzip_every_other: bool = True) -> list[Path]:
    """Split ``records`` over ``files`` JSON-lines files (alternating plain and gzip)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    per_file = -(-len(records) // files)
    for f in range(files):
        chunk = records[f * per_file : (f + 1) * per_file]
        body = "".join(json.dumps(r) + "\n" for r in chunk).encode()
        if gzip_every_other and f % 2 == 1:
            path = directory / f"part-{f:02d}.json.gz"
            path.write_bytes(gzip.compress(body, mtime=0))
        else:
            path = directory / f"part-{f:02d}.json"
            path.write_bytes(body)
        paths.append(path)
    return paths


TOPICS = {
    "space": "orbit rocket launch nasa satellite moon mars astronaut telescope galaxy".split(),
    "cooking": "recipe oven flour butter garlic onion simmer bake sauce pepper".split(),
    "football": "goal striker keeper league match referee penalty stadium coach season".split(),
}


def topic_records(per_topic: int = 40, seed: int = 5, shuffle: bool = True) -> list[dict]:
    """Planted topics: 60 words each, 70% from the topic's words, the rest common filler;
    ``topic`` names the topic. Shuffled with the same seeded generator unless ``shuffle`` is
    False (in topic order)."""
    rng = random.Random(seed)
    filler = [f"common{i}" for i in range(30)]
    records = []
    for topic, words in TOPICS.items():
        for i in range(per_topic):
            text = " ".join(rng.choice(words) if rng.random() < 0.7 else rng.choice(filler)
                            for _ in range(60))
            records.append({"text": text, "url": f"https://{topic}.example/{i}",
                            "topic": topic})
    if shuffle:
        rng.shuffle(records)
    return records


def write_lines(path: Path, records: list[dict]) -> Path:
    """JSON lines, gzipped when the name ends in .gz."""
    data = "".join(json.dumps(r) + "\n" for r in records).encode()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path
