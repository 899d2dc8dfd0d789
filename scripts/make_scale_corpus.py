"""Build the scale corpora of issue 11: every real corpus, then word-permuted copies of it.

The script reads every real corpus under ``../shared/data`` in a fixed order (see
:func:`find_sources`), keeps every field of every record except ``id`` (so ``ndcl`` derives
ids from file and line), and writes *variants* of the whole collection, variant-major:

====  ==================  =================================================================
  0   ``as_is``           the record as read
  1   ``reversed``        words in reverse order
  2   ``even_odd``        the words at even positions, then those at odd positions
  3   ``even_odd_rev``    variant 2 reversed
  4   ``stride3``         positions 0, 3, 6, ..., then 1, 4, 7, ..., then 2, 5, 8, ...
====  ==================  =================================================================

"Words" are the text split on whitespace (``str.split()``); a permuted text joins them with
single spaces. No two variants put the same two words next to each other in the same order, so
a permuted copy shares (almost) no word 5-gram with its source and is a *new* document to the
near-duplicate stages, with the same length and vocabulary (the same bag of words, so the same
TF-IDF vector for clustering). A rotation would not do that: rotating by half keeps every
5-gram but the few across the seam, so each rotated copy would be a near-duplicate of its
source. Texts of one or two words are the same under some permutations and become exact
duplicates of another variant (e.g. the many one-word ``urlLink`` blog posts).

Documents go into gzip (level 1) JSON-lines shards of exactly ``--shard-size`` (50,000)
documents, the last one partial, named ``scale-00000.json.gz``, ``scale-00001.json.gz``, ...
A size-N corpus is the first ceil(N / 50,000) shards: 100k = 2 shards, 200k = 4, 450k = 9,
900k = 18, everything (5 variants, 1,051,780 documents) = 22. ``manifest.json`` records the
documents of each shard and per variant and source, the sources, and these sizes.

The output folder (default ``.ndcl/scale/`` in the repository, which git ignores) must be absent,
empty, or this script's own earlier output (its ``manifest.json``). Anything else is refused
(exit 2, one line), and nothing is ever deleted there. Earlier output that is complete and
made from the same sources with the same settings is left as it is ("up to date") unless
``--force``; otherwise only the shards its manifest lists are replaced.

Sources, in this order (files sorted by name within each folder):

- ``*/*.json.gz`` under the data folder, except ``truth/``: gzipped JSON lines (``blogs``,
  ``c4``, ``news``);
- ``plagiarism/corpus-*/*.txt``: one plain-text document per file (UTF-8, else Windows-1252),
  with ``url`` = ``plagiarism://<folder>/<file>`` and the columns of ``plagiarism/labels.csv``
  as fields (``label`` = its ``Category``; the five source texts ``orig_task?.txt`` are not in
  the CSV and get ``label`` = ``orig``).

The output is byte-for-byte the same for the same sources and settings. Run from the
repository root::

    .venv/bin/python scripts/make_scale_corpus.py [OUT] [--data ../shared/data]
        [--variants 5] [--shard-size 50000] [--force]
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data"
DEFAULT_OUT = REPO_ROOT / ".ndcl" / "scale"
MANIFEST = "manifest.json"
TOOL = "ndcl scripts/make_scale_corpus.py"
FORMAT_VERSION = 1
SHARD_SIZE = 50_000
GZIP_LEVEL = 1
SHARD_NAME = re.compile(r"^scale-\d{5}\.json\.gz$")
PARTIAL_SUFFIX = ".partial"
# The sizes of issue 11 (documents), rounded up to whole shards.
STANDARD_SIZES = (100_000, 200_000, 450_000, 900_000)


class Refused(Exception):
    """The output folder is not ours to write into; the message is one line."""


def _even_odd(words: list[str]) -> list[str]:
    return words[0::2] + words[1::2]


def _stride3(words: list[str]) -> list[str]:
    return words[0::3] + words[1::3] + words[2::3]


# index -> (name, permutation of the word list; None = the record as read)
VARIANTS: tuple[tuple[str, Callable[[list[str]], list[str]] | None], ...] = (
    ("as_is", None),
    ("reversed", lambda words: words[::-1]),
    ("even_odd", _even_odd),
    ("even_odd_rev", lambda words: _even_odd(words)[::-1]),
    ("stride3", _stride3),
)


def permute_text(text: str, variant: int) -> str:
    """``text`` under ``variant``'s word permutation (variant 0: unchanged)."""
    permutation = VARIANTS[variant][1]
    if permutation is None:
        return text
    return " ".join(permutation(text.split()))


@dataclass(frozen=True)
class Source:
    path: Path
    kind: str  # "jsonl" (gzipped JSON lines) or "text" (one document per file)
    name: str  # path relative to the data folder


def find_sources(data: Path) -> tuple[list[Source], list[str]]:
    """Every readable corpus under ``data`` in a fixed order, and notes on what was skipped."""
    sources: list[Source] = []
    notes: list[str] = []
    for path in sorted(data.glob("*/*.json.gz")):
        if path.parent.name == "truth":
            continue
        sources.append(Source(path, "jsonl", path.relative_to(data).as_posix()))
    for path in sorted(data.glob("plagiarism/corpus-*/*.txt")):
        sources.append(Source(path, "text", path.relative_to(data).as_posix()))
    if not any(s.kind == "text" for s in sources) and (data / "plagiarism").is_dir():
        notes.append("plagiarism/: no corpus-*/*.txt files found, skipped")
    for path in sorted(data.glob("*/*")):
        known = path.parent.name in ("truth", "plagiarism") or path.name.endswith(".json.gz")
        if path.is_file() and not known and path.name != "README.md":
            notes.append(f"{path.relative_to(data).as_posix()}: not a known format, skipped")
    return sources, notes


def _plagiarism_labels(data: Path) -> dict[str, dict[str, Any]]:
    labels_path = data / "plagiarism" / "labels.csv"
    if not labels_path.is_file():
        return {}
    labels: dict[str, dict[str, Any]] = {}
    with labels_path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            fields = {re.sub(r"\W+", "_", k.strip().lower()): v for k, v in row.items() if k}
            name = fields.pop("file")
            fields["label"] = fields.get("category")
            labels[name] = fields
    return labels


def _decode_text_file(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")


def read_records(source: Source, data: Path,
                 labels: dict[str, dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """The records of ``source`` in file order, without ``id``."""
    if source.kind == "text":
        record: dict[str, Any] = {
            "text": _decode_text_file(source.path),
            "url": f"plagiarism://{source.path.parent.name}/{source.path.name}",
            "timestamp": None,
        }
        record.update(labels.get(source.path.name, {"label": "orig"}
                                 if source.path.name.startswith("orig_") else {}))
        yield record
        return
    with gzip.open(source.path, "rt", encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise SystemExit(f"{source.name}:{number}: not JSON ({error})") from error
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise SystemExit(f"{source.name}:{number}: not a record with a text")
            record.pop("id", None)
            yield record


def encode_line(record: dict[str, Any]) -> bytes:
    """One JSON line, UTF-8; a text holding a lone surrogate (valid JSON as an escape, not
    encodable as UTF-8) is written escaped, as it came."""
    try:
        return (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
    except UnicodeEncodeError:
        return (json.dumps(record) + "\n").encode("ascii")


def source_fingerprint(sources: Sequence[Source]) -> list[dict[str, Any]]:
    return [{"name": s.name, "kind": s.kind, "bytes": s.path.stat().st_size,
             "mtime_ns": s.path.stat().st_mtime_ns} for s in sources]


def settings_of(sources: Sequence[Source], variants: int, shard_size: int) -> dict[str, Any]:
    return {"format": FORMAT_VERSION, "shard_size": shard_size, "gzip_level": GZIP_LEVEL,
            "variants": [VARIANTS[v][0] for v in range(variants)],
            "sources": source_fingerprint(sources)}


def read_manifest(out: Path) -> dict[str, Any] | None:
    try:
        manifest = json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("tool") == TOOL else None


def check_output(out: Path) -> dict[str, Any] | None:
    """The earlier manifest when ``out`` is our own output, None when it is absent or empty;
    raises :class:`Refused` for anything else (never deleting anything)."""
    if out.exists() and not out.is_dir():
        raise Refused(f"refusing to write into {out}: it is not a folder")
    entries = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if not entries:
        return None
    manifest = read_manifest(out)
    if manifest is None:
        raise Refused(f"refusing to write into {out}: not empty and not an earlier "
                      f"make_scale_corpus output (no {MANIFEST} of this script)")
    listed = {shard["file"] for shard in manifest.get("shards", [])}
    foreign = [name for name in entries
               if name != MANIFEST and name not in listed
               and not (name.endswith(PARTIAL_SUFFIX)
                        and SHARD_NAME.match(name[:-len(PARTIAL_SUFFIX)]))]
    if foreign:
        raise Refused(f"refusing to write into {out}: it holds files its {MANIFEST} does not "
                      f"list ({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''})")
    return manifest


def up_to_date(out: Path, manifest: dict[str, Any], settings: dict[str, Any]) -> bool:
    if not manifest.get("complete") or manifest.get("settings") != settings:
        return False
    for shard in manifest.get("shards", []):
        path = out / shard["file"]
        if not path.is_file() or path.stat().st_size != shard["bytes"]:
            return False
    return True


def remove_own_files(out: Path, manifest: dict[str, Any]) -> None:
    """Delete the shards ``manifest`` lists and our partial shards; nothing else."""
    for shard in manifest.get("shards", []):
        name = shard["file"]
        if SHARD_NAME.match(name):
            (out / name).unlink(missing_ok=True)
    for path in out.iterdir():
        name = path.name
        if name.endswith(PARTIAL_SUFFIX) and SHARD_NAME.match(name[:-len(PARTIAL_SUFFIX)]):
            path.unlink()


def sizes_of(shards: list[dict[str, Any]], shard_size: int,
             wanted: Sequence[int] = STANDARD_SIZES) -> dict[str, dict[str, Any]]:
    """``{"100k": {"shards": 2, "documents": 100000, "files": [...]}, ..., "all": ...}``."""
    total = sum(shard["documents"] for shard in shards)
    result: dict[str, dict[str, Any]] = {}
    for size in wanted:
        if size > total:
            continue
        count = math.ceil(size / shard_size)
        chosen = shards[:count]
        result[f"{size // 1000}k"] = {"requested": size, "shards": count,
                                      "documents": sum(s["documents"] for s in chosen),
                                      "files": [s["file"] for s in chosen]}
    result["all"] = {"requested": total, "shards": len(shards), "documents": total,
                     "files": [s["file"] for s in shards]}
    return result


class ShardWriter:
    """Writes documents into shards of exactly ``shard_size``, recording each in the manifest."""

    def __init__(self, out: Path, shard_size: int, manifest: dict[str, Any]) -> None:
        self.out = out
        self.shard_size = shard_size
        self.manifest = manifest
        self.handle: Any = None
        self.current: dict[str, Any] | None = None
        self.partial: Path | None = None

    def write(self, line: bytes, variant: int, source: str) -> None:
        if self.current is None:
            self._open()
        assert self.current is not None
        self.handle.write(line)
        self.current["documents"] += 1
        variants = self.current["variants"]
        variants[str(variant)] = variants.get(str(variant), 0) + 1
        sources = self.current["sources"]
        sources[source] = sources.get(source, 0) + 1
        if self.current["documents"] == self.shard_size:
            self.close()

    def _open(self) -> None:
        index = len(self.manifest["shards"])
        name = f"scale-{index:05d}.json.gz"
        self.partial = self.out / (name + PARTIAL_SUFFIX)
        # mtime=0: the gzip header holds no time, so equal inputs give equal bytes.
        raw = self.partial.open("wb")
        self.handle = gzip.GzipFile(filename="", mode="wb", compresslevel=GZIP_LEVEL,
                                    fileobj=raw, mtime=0)
        self._raw = raw
        first = sum(s["documents"] for s in self.manifest["shards"])
        self.current = {"file": name, "documents": 0, "first_document": first,
                        "variants": {}, "sources": {}}

    def close(self) -> None:
        if self.current is None:
            return
        self.handle.close()
        self._raw.close()
        assert self.partial is not None
        final = self.out / self.current["file"]
        os.replace(self.partial, final)
        self.current["bytes"] = final.stat().st_size
        self.manifest["shards"].append(self.current)
        write_manifest(self.out, self.manifest)
        print(f"  {self.current['file']}: {self.current['documents']:,} documents "
              f"(variants {', '.join(self.current['variants'])})", flush=True)
        self.current = None
        self.handle = None


def write_manifest(out: Path, manifest: dict[str, Any]) -> None:
    temporary = out / (MANIFEST + ".tmp")
    temporary.write_text(json.dumps(manifest, indent=1) + "\n")
    os.replace(temporary, out / MANIFEST)


def build(data: Path, out: Path, variants: int, shard_size: int, force: bool) -> int:
    sources, notes = find_sources(data)
    if not sources:
        raise Refused(f"no corpus found under {data}")
    settings = settings_of(sources, variants, shard_size)
    earlier = check_output(out)
    if earlier is not None and not force and up_to_date(out, earlier, settings):
        print(f"{out}: up to date ({earlier['documents']:,} documents in "
              f"{len(earlier['shards'])} shards; --force rebuilds)")
        print_counts(earlier)
        return 0
    out.mkdir(parents=True, exist_ok=True)
    if earlier is not None:
        remove_own_files(out, earlier)
    labels = _plagiarism_labels(data)
    manifest: dict[str, Any] = {
        "tool": TOOL, "complete": False, "settings": settings, "data": str(data),
        "notes": notes, "shards": [], "documents": 0,
        "variants": [{"index": v, "name": VARIANTS[v][0], "documents": 0}
                     for v in range(variants)],
        "sources": [{"name": s.name, "kind": s.kind, "documents": 0} for s in sources],
    }
    write_manifest(out, manifest)
    for note in notes:
        print(f"note: {note}")
    writer = ShardWriter(out, shard_size, manifest)
    started = time.perf_counter()
    for variant in range(variants):
        print(f"variant {variant} ({VARIANTS[variant][0]}):", flush=True)
        count = 0
        for position, source in enumerate(sources):
            source_count = 0
            for record in read_records(source, data, labels):
                if variant:
                    record["text"] = permute_text(record["text"], variant)
                writer.write(encode_line(record), variant, source.name)
                source_count += 1
            if variant == 0:
                manifest["sources"][position]["documents"] = source_count
            count += source_count
        manifest["variants"][variant]["documents"] = count
    writer.close()
    manifest["documents"] = sum(shard["documents"] for shard in manifest["shards"])
    manifest["sizes"] = sizes_of(manifest["shards"], shard_size)
    manifest["complete"] = True
    manifest["seconds"] = round(time.perf_counter() - started, 1)
    write_manifest(out, manifest)
    print(f"wrote {manifest['documents']:,} documents in {len(manifest['shards'])} shards to "
          f"{out} ({manifest['seconds']} s)")
    print_counts(manifest)
    return 0


def print_counts(manifest: dict[str, Any]) -> None:
    print("sources (variant 0):")
    grouped: dict[str, int] = {}
    for source in manifest["sources"]:
        # One line per JSON-lines file; one per folder of plain-text documents.
        name = source["name"] if source["kind"] == "jsonl" else source["name"].rsplit("/", 1)[0]
        grouped[name] = grouped.get(name, 0) + source["documents"]
    for name, documents in grouped.items():
        print(f"  {documents:>9,}  {name}")
    print("variants:")
    for variant in manifest["variants"]:
        print(f"  {variant['documents']:>9,}  {variant['index']} {variant['name']}")
    print("sizes (first N shards):")
    for name, size in manifest.get("sizes", {}).items():
        print(f"  {name:>5}: {size['shards']:>3} shards, {size['documents']:>9,} documents")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", type=Path, default=DEFAULT_OUT,
                        help=f"output folder (default {DEFAULT_OUT.relative_to(REPO_ROOT)})")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="the shared data folder (default ../shared/data)")
    parser.add_argument("--variants", type=int, default=len(VARIANTS),
                        help=f"how many variants, 1..{len(VARIANTS)} (default all)")
    parser.add_argument("--shard-size", type=int, default=SHARD_SIZE,
                        help="documents per shard (default 50000)")
    parser.add_argument("--force", action="store_true",
                        help="rebuild our own earlier output even when it is up to date")
    args = parser.parse_args(argv)
    if not 1 <= args.variants <= len(VARIANTS):
        parser.error(f"--variants must be 1..{len(VARIANTS)}")
    if args.shard_size < 1:
        parser.error("--shard-size must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return build(args.data.resolve(), args.out.resolve(), args.variants,
                     args.shard_size, args.force)
    except Refused as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
