"""Truth files: their format, reading and validating them, and writing them compactly.

A truth file is ``{"clusters": [[id, id, ...], ...]}`` (other top-level keys are kept as
metadata), with the pipeline's document ids (``id`` of ``OUT/kept`` and ``OUT/duplicates``).
It may also list scored pairs: ``"pairs": [[id_a, id_b, jaccard], ...]``, every verified pair of
exact Jaccard >= ``"pairs_min"`` (below the threshold too), and ``"identical": [[id, ...], ...]``,
documents with identical shingle sets: a pair's ids are the first members of their identical
groups and stand for every pair across the two groups, and each group for all its inner pairs
at Jaccard 1 (so a thousand copies of one post cost a thousand ids, not half a million pairs).

``ndcl truth`` (:mod:`beam_pipeline.truth_builder`) writes them; ``ndcl evaluate``
(:mod:`beam_pipeline.evaluate`) reads them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from apache_beam.io.filesystem import BeamIOError, CompressionTypes
from apache_beam.io.filesystems import FileSystems

TRUTH_FORMAT = '{"clusters": [["id", "id", ...], ...]}'
# Pair similarities are written with this many decimals, truncated rather than rounded so that a
# written value is at or above a bin edge (or the threshold) exactly when the Jaccard is.
JACCARD_DECIMALS = 4


class EvaluationError(ValueError):
    """An input of the evaluation is unusable; the message says which one and why."""


class TruthFileError(EvaluationError):
    """A truth file that cannot be read as ``{"clusters": [[id, ...], ...]}``."""


@dataclass(frozen=True)
class Truth:
    """Disjoint clusters of document ids, and the file's other top-level keys."""

    clusters: list[list[str]]
    metadata: dict[str, Any]
    source: str
    # ``(id_a, id_b, jaccard)`` of the file's "pairs"; None when it has none (older files).
    pairs: list[tuple[str, str, float]] | None = None
    # Documents with identical shingle sets, first member standing for the group in ``pairs``.
    identical: list[list[str]] = field(default_factory=list)

    @property
    def pairs_min(self) -> float | None:
        """The lower Jaccard bound of ``pairs``: as written, else the lowest pair listed."""
        value = self.metadata.get("pairs_min")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        return min((p[2] for p in self.pairs), default=None) if self.pairs else None


# --------------------------------------------------------------------------- the Jaccard grid


def jaccard_units(similarity: float) -> int:
    """A Jaccard in units of 10^-JACCARD_DECIMALS, cut as :func:`truncate_jaccard` cuts it."""
    return math.floor(similarity * 10**JACCARD_DECIMALS + 1e-9)


def truncate_jaccard(value: float) -> float:
    """``value`` cut (not rounded) to JACCARD_DECIMALS decimals; the epsilon keeps a float such
    as 0.7 (stored as 0.69999...) at 0.7."""
    return jaccard_units(value) / 10**JACCARD_DECIMALS


# --------------------------------------------------------------------------- reading


def parse_truth(obj: Any, source: str) -> Truth:
    """Validate a decoded truth file; ids may be strings or (decimal) integers."""
    if not isinstance(obj, dict) or "clusters" not in obj:
        raise TruthFileError(f"{source}: expected a JSON object with a \"clusters\" list, "
                             f"{TRUTH_FORMAT}; got {_describe(obj)}")
    clusters = obj["clusters"]
    if not isinstance(clusters, list):
        raise TruthFileError(f"{source}: \"clusters\" must be a list of lists of ids, got "
                             f"{_describe(clusters)}")
    where: dict[str, int] = {}
    parsed: list[list[str]] = []
    for c, cluster in enumerate(clusters):
        if not isinstance(cluster, list):
            raise TruthFileError(f"{source}: clusters[{c}] is {_describe(cluster)}, not a list "
                                 "of ids")
        ids = []
        for k, value in enumerate(cluster):
            # The pipeline writes integer ids in decimal, so 12345 and "12345" are one document.
            if isinstance(value, bool) or not isinstance(value, (str, int)):
                raise TruthFileError(f"{source}: clusters[{c}][{k}] is {value!r}: ids are "
                                     "strings (or integers)")
            doc_id = str(value)
            if doc_id in where:
                other = where[doc_id]
                raise TruthFileError(
                    f"{source}: id {doc_id!r} is listed twice in clusters[{c}]" if other == c
                    else f"{source}: id {doc_id!r} is in clusters[{other}] and clusters[{c}]: "
                         "clusters must be disjoint (merge them if they are one cluster)")
            where[doc_id] = c
            ids.append(doc_id)
        parsed.append(ids)
    pairs = _parse_pairs(obj["pairs"], source) if "pairs" in obj else None
    identical = _parse_identical(obj.get("identical", []), source)
    # The pair lists can be long; they are data, not metadata to echo.
    metadata = {k: v for k, v in obj.items() if k not in ("clusters", "pairs", "identical")}
    return Truth(parsed, metadata, source, pairs, identical)


def _doc_id(value: Any, source: str, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise TruthFileError(f"{source}: {where} is {value!r}: ids are strings (or integers)")
    return str(value)


def _parse_pairs(pairs: Any, source: str) -> list[tuple[str, str, float]]:
    """``"pairs": [[id_a, id_b, jaccard], ...]`` with 0 <= jaccard <= 1 and id_a != id_b."""
    if not isinstance(pairs, list):
        raise TruthFileError(f"{source}: \"pairs\" must be a list of [id, id, jaccard], got "
                             f"{_describe(pairs)}")
    parsed = []
    for k, item in enumerate(pairs):
        if not isinstance(item, list) or len(item) != 3:
            raise TruthFileError(f"{source}: pairs[{k}] is {_describe(item)}, not "
                                 "[id, id, jaccard]")
        a = _doc_id(item[0], source, f"pairs[{k}][0]")
        b = _doc_id(item[1], source, f"pairs[{k}][1]")
        score = item[2]
        if (isinstance(score, bool) or not isinstance(score, (int, float))
                or not 0.0 <= score <= 1.0):
            raise TruthFileError(f"{source}: pairs[{k}][2] is {score!r}: a Jaccard in [0, 1]")
        if a == b:
            raise TruthFileError(f"{source}: pairs[{k}] pairs {a!r} with itself")
        parsed.append((a, b, float(score)))
    return parsed


def _parse_identical(groups: Any, source: str) -> list[list[str]]:
    """``"identical": [[id, ...], ...]``: disjoint groups of documents with one shingle set."""
    if not isinstance(groups, list) or not all(isinstance(g, list) for g in groups):
        raise TruthFileError(f"{source}: \"identical\" must be a list of lists of ids, got "
                             f"{_describe(groups)}")
    seen: set[str] = set()
    parsed = []
    for c, group in enumerate(groups):
        ids = [_doc_id(v, source, f"identical[{c}][{k}]") for k, v in enumerate(group)]
        if seen.intersection(ids) or len(set(ids)) != len(ids):
            raise TruthFileError(f"{source}: identical[{c}] repeats an id of an earlier group "
                                 "or of itself: groups must be disjoint")
        seen.update(ids)
        parsed.append(ids)
    return parsed


def load_truth(path: str) -> Truth:
    """Read and validate a truth file (local path or any Beam filesystem)."""
    try:
        with FileSystems.open(path, compression_type=CompressionTypes.AUTO) as handle:
            raw = handle.read()
    except (OSError, BeamIOError) as exc:
        raise TruthFileError(f"{path}: cannot read the truth file ({exc})") from None
    try:
        obj = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise TruthFileError(f"{path}: not UTF-8 text ({exc})") from None
    except json.JSONDecodeError as exc:
        raise TruthFileError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}, "
                             f"column {exc.colno}); expected {TRUTH_FORMAT}") from None
    return parse_truth(obj, path)


def _describe(value: Any) -> str:
    text = json.dumps(value, default=str)
    return f"{type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"


# --------------------------------------------------------------------------- writing


def format_truth(truth: Mapping[str, Any]) -> str:
    """The truth file's text: small keys indented, one cluster, group or pair per line, so
    the file stays compact and its diffs readable."""
    lines = ["{"]
    items = list(truth.items())
    for k, (key, value) in enumerate(items):
        comma = "," if k < len(items) - 1 else ""
        if key in ("clusters", "identical", "pairs") and isinstance(value, list) and value:
            rows = [f"  {json.dumps(row, ensure_ascii=False)}" for row in value]
            lines += [f" {json.dumps(key)}: [", ",\n".join(rows), f" ]{comma}"]
        else:
            text = json.dumps(value, indent=1, ensure_ascii=False).replace("\n", "\n ")
            lines.append(f" {json.dumps(key)}: {text}{comma}")
    return "\n".join([*lines, "}"]) + "\n"
