"""A simple single-process reference of the ND engine, used as the test oracle.

It shares only the *hashing* with the pipeline (token hashes, n-gram folding, permutation
coefficients, band hashes), so that exact equality of results is meaningful; everything else
(exact groups, buckets, stars, verification, union-find, keep policy, remapping) is written
here again in the plainest possible Python, one document at a time.
"""

from __future__ import annotations

import gzip
import json
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xxhash

from transforms.lsh import band_hashes, optimal_param, recall_floor_param
from transforms.minhash import permutation_params, shingle_hashes, token_hashes, tokenize


class UnionFind:
    def __init__(self) -> None:
        self.parent: dict[object, object] = {}

    def find(self, x: object) -> object:
        self.parent.setdefault(x, x)
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a: object, b: object) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def min_labels(self) -> dict[object, object]:
        """Every node → the smallest node of its component."""
        smallest: dict[object, object] = {}
        for node in self.parent:
            root = self.find(node)
            smallest[root] = min(smallest.get(root, node), node)
        return {node: smallest[self.find(node)] for node in self.parent}

    def components(self) -> list[list[object]]:
        groups: dict[object, list[object]] = defaultdict(list)
        for x in list(self.parent):
            groups[self.find(x)].append(x)
        return [sorted(g) for g in groups.values()]


@dataclass
class RefDoc:
    uid: int
    id: str
    text: str
    derived: bool = False  # id made from file and line (the record had no id)


def smallest_id_key(doc: RefDoc) -> tuple:
    """The smallest_id order, written again: a derived id ``<file>:<line>`` ranks as
    ``(file, line)`` (file by code point, line as a number), an explicit id as ``(id, 0)``
    (code point); the text part first, then the number, then the uid."""
    if doc.derived:
        file_name, line = doc.id.rsplit(":", 1)
        return file_name, int(line), doc.uid
    return doc.id, 0, doc.uid


def read_docs(paths: list[str | Path]) -> list[RefDoc]:
    """Valid JSON-lines records of the sorted input files, with the pipeline's uid/id rules."""
    docs = []
    for file_index, path in enumerate(sorted(str(p) for p in paths)):
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rb") as handle:
            for line_no, raw in enumerate(handle, start=1):
                try:
                    record = json.loads(raw.decode("utf-8"))
                except (UnicodeDecodeError, ValueError):
                    continue
                if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                    continue
                doc_id = record.get("id")
                derived = doc_id is None
                doc_id = f"{os.path.basename(path)}:{line_no}" if derived else str(doc_id)
                docs.append(RefDoc((file_index << 40) | line_no, doc_id, record["text"],
                                   derived))
    return docs


def reference_dedup(
    docs: list[RefDoc], threshold: float = 0.7, num_perm: int = 256, ngram: int = 5,
    seed: int = 1, verify: str = "exact", weights: tuple[float, float] | None = None,
    max_bucket_size: int = 5000,
) -> dict[str, tuple[str, str]]:
    """``{removed id: (duplicate_of, reason)}`` under the smallest-id keep policy; b and r by
    the weighted areas, or with ``weights=None`` by the recall floor."""
    a, b = permutation_params(num_perm, seed)
    bands, rows = (recall_floor_param(threshold, num_perm) if weights is None
                   else optimal_param(threshold, num_perm, *weights))
    by_uid = {d.uid: d for d in docs}
    # Exact groups on the normalised text.
    groups: dict[str, list[RefDoc]] = defaultdict(list)
    for doc in docs:
        tokens = tokenize(doc.text)
        if tokens:
            groups[" ".join(tokens)].append(doc)
    exact_rep: dict[int, int] = {}
    distinct: list[RefDoc] = []
    for members in groups.values():
        rep = min(members, key=smallest_id_key)
        distinct.append(rep)
        for m in members:
            if m.uid != rep.uid:
                exact_rep[m.uid] = rep.uid
    # MinHash, one document at a time.
    shingles: dict[int, set[int]] = {}
    signatures: dict[int, np.ndarray] = {}
    for doc in distinct:
        hashes = shingle_hashes(token_hashes(tokenize(doc.text), seed), ngram, seed)
        shingles[doc.uid] = set(hashes.tolist())
        # One document at a time, without the pipeline's chunked reduceat.
        products = a[:, None] * hashes[None, :] + b[:, None]
        signature = (products.min(axis=1) >> np.uint64(32)).astype(np.uint32)
        signatures[doc.uid] = signature
    # Buckets and star edges.
    buckets: dict[tuple[int, int], list[int]] = defaultdict(list)
    for uid, signature in signatures.items():
        for band, value in enumerate(band_hashes(signature[None, :], bands, rows, seed)[0]):
            buckets[(band, int(value))].append(uid)
    edges: set[tuple[int, int]] = set()
    for members in buckets.values():
        members = sorted(members)[:max_bucket_size]
        for m in members[1:]:
            edges.add((m, members[0]))
    # Verification and union-find.
    uf = UnionFind()
    for u, v in sorted(edges):
        if verify == "exact":
            inter = len(shingles[u] & shingles[v])
            sim = inter / (len(shingles[u]) + len(shingles[v]) - inter)
        elif verify == "signature":
            sim = float(np.mean(signatures[u] == signatures[v]))
        else:
            sim = 1.0
        if sim >= threshold:
            uf.union(u, v)
    result: dict[str, tuple[str, str]] = {}
    kept_of: dict[int, int] = {}
    for component in uf.components():
        kept = min(component, key=lambda uid: smallest_id_key(by_uid[uid]))
        for uid in component:
            kept_of[uid] = kept
            if uid != kept:
                result[by_uid[uid].id] = (by_uid[kept].id, "near")
    for member, rep in exact_rep.items():
        result[by_uid[member].id] = (by_uid[kept_of.get(rep, rep)].id, "exact")
    return result


def stable_id_hash(ids: list[str]) -> str:
    return xxhash.xxh3_64_hexdigest("\n".join(sorted(ids)).encode())


def objective(bands: int, rows: int, threshold: float, fp_w: float, fn_w: float) -> float:
    """The weighted false-positive + false-negative areas, integrated independently of
    ``transforms.lsh`` (finer grid, explicit trapezoid rule)."""
    lower = np.linspace(0.0, threshold, 20001)
    upper = np.linspace(threshold, 1.0, 20001)

    def trap(y: np.ndarray, x: np.ndarray) -> float:
        return float(((y[1:] + y[:-1]) * np.diff(x)).sum() / 2)

    def prob(s: np.ndarray) -> np.ndarray:
        return 1.0 - (1.0 - s**rows) ** bands

    return fp_w * trap(prob(lower), lower) + fn_w * trap(1.0 - prob(upper), upper)
