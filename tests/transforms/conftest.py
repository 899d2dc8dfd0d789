"""Helpers shared by the transform tests: a TestPipeline on the FnApiRunner (plain DirectRunner
would try to download the Prism runner, which fails offline), matchers and hand-built batches,
and the expected features from the per-document helpers of ``transforms.minhash``."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline

from transforms.batches import DocBatch, batch_key_of, make_uid
from transforms.minhash import (
    minhash_signatures,
    permutation_params,
    shingle_hashes,
    token_hashes,
    tokenize,
)


def new_pipeline() -> BeamTestPipeline:
    """A test pipeline on Beam's local portable runner (works offline)."""
    return BeamTestPipeline(runner=FnApiRunner())


def add_dicts(dicts: Iterable[dict[str, int]]) -> dict[str, int]:
    """Key-wise sum of stats dictionaries (a CombineGlobally function)."""
    total: dict[str, int] = {}
    for item in dicts:
        for key, value in item.items():
            total[key] = total.get(key, 0) + int(value)
    return total


def doc_batch(file_index: int, lines: list[int], texts: list[str], batch_size: int,
              ids: list[str] | None = None, extra: list[dict[str, Any]] | None = None
              ) -> tuple[int, DocBatch]:
    """``(batch_key, DocBatch)`` of records at ``lines`` of file ``file_index``."""
    uids = [make_uid(file_index, line) for line in lines]
    keys = {batch_key_of(uid, batch_size) for uid in uids}
    assert len(keys) == 1, "fixture lines must lie in one batch"
    key = keys.pop()
    if ids is None:
        ids = [f"f{file_index}:{line}" for line in lines]
    records = [{"text": text} for text in texts]
    if extra is not None:
        for record, fields in zip(records, extra):
            record.update(fields)
    return key, DocBatch(key, np.array(uids, dtype=np.int64), list(ids), records,
                         sum(len(t) for t in texts))


def expected_shingles(text: str, ngram: int, seed: int, tokenizer: str = "unicode"
                      ) -> np.ndarray:
    """Raw shingle hashes of one document, from the per-document helpers."""
    return shingle_hashes(token_hashes(tokenize(text, tokenizer), seed), ngram, seed)


def expected_signature(text: str, ngram: int, seed: int, num_perm: int,
                       tokenizer: str = "unicode") -> np.ndarray:
    """MinHash signature of one document, from ``minhash_signatures`` on its own."""
    shingles = expected_shingles(text, ngram, seed, tokenizer)
    a, b = permutation_params(num_perm, seed)
    return minhash_signatures(shingles, np.array([0, len(shingles)], dtype=np.int64), a, b)[0]


def flat_edges(edges: tuple) -> Iterator[tuple]:
    """Array-valued edge elements → one plain tuple per edge."""
    yield from zip(*(column.tolist() for column in edges))


def empty_uids() -> np.ndarray:
    return np.zeros(0, dtype=np.int64)


def describe_uid_array(uids: np.ndarray) -> tuple[str, tuple[int, ...]]:
    """A uid array as ``(dtype name, values)``, so ``equal_to`` can compare it."""
    return uids.dtype.name, tuple(uids.tolist())


# JSON-lines inputs of the transforms that read files

MAX_DOC_BYTES = 500


def _json_line(obj: Any) -> bytes:
    return json.dumps(obj).encode("utf-8")


def write_json_lines(path: Path, lines: dict[int, Any], filler: bytes = b'{"text": bad') -> str:
    """A JSON-lines file with ``lines[n]`` (a record, or raw bytes) at 1-based line ``n`` and
    ``filler`` (a line the read rejects) on every other line up to the last."""
    raw = [filler] * max(lines)
    for line, value in lines.items():
        raw[line - 1] = value if isinstance(value, bytes) else _json_line(value)
    path.write_bytes(b"\n".join(raw) + b"\n")
    return str(path)
