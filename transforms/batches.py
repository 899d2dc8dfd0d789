"""Element shapes shared by the transforms, and the document uid scheme.

NDCL moves documents through the graph in *batches* (a few thousand consecutive lines of one
input file) rather than one element per document: Beam's Python runner pays a few microseconds
per element per shuffle, so per-document elements would cost more than the MinHash maths itself.

Every document gets an internal 64-bit ``uid``: ``file_index << 40 | line_number``, where
``file_index`` is the position of its file in the sorted, de-duplicated list of input files
(fixed when the graph is built) and ``line_number`` is 1-based. The uid is deterministic, unique
per input record, orders documents in input order, and tells which batch a document lives in,
so decisions about a document can be routed back to its batch without a lookup table.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import pickle
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import apache_beam as beam
import numpy as np
import xxhash

from transforms.progress import LIVE

T = TypeVar("T")
LOG = logging.getLogger("ndcl.progress")

LINE_BITS = 40
LINE_MASK = (1 << LINE_BITS) - 1


def make_uid(file_index: int, line_number: int) -> int:
    """The uid of the record at ``line_number`` (1-based) of input file ``file_index``."""
    return (file_index << LINE_BITS) | line_number


def batch_key_of(uid: int, batch_size: int) -> int:
    """Key of the batch holding ``uid``: its file index and the block of ``batch_size`` lines."""
    return ((uid >> LINE_BITS) << LINE_BITS) | ((uid & LINE_MASK) // batch_size)


def batch_keys_of(uids: np.ndarray, batch_size: int) -> np.ndarray:
    """Vectorised :func:`batch_key_of` for an int64 array of uids."""
    uids = uids.astype(np.int64, copy=False)
    return ((uids >> LINE_BITS) << LINE_BITS) | ((uids & LINE_MASK) // batch_size)


def sorted_runs(*keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The runs of equal consecutive rows of sorted key columns (a 2-D column compares whole
    rows): ``(starts, sizes, run index of each row)``. The one grouping of sorted arrays that
    the exact, LSH, verification, components, read and truth steps share."""
    n = len(keys[0])
    new = np.ones(n, dtype=bool)
    if n > 1:
        new[1:] = False
        for key in keys:
            differs = key[1:] != key[:-1]
            new[1:] |= differs.any(axis=1) if differs.ndim > 1 else differs
    starts = np.flatnonzero(new)
    return starts, np.diff(np.append(starts, n)), np.cumsum(new) - 1


def partition_of(values: np.ndarray, num_partitions: int, seed: int) -> np.ndarray:
    """Shuffle partition of each int64 value, from a seeded mix (never Python's salted hash)."""
    mixed = splitmix64(values.astype(np.uint64) ^ np.uint64(seed & 0xFFFFFFFFFFFFFFFF))
    return (mixed % np.uint64(num_partitions)).astype(np.int64)


def rows_by_part(parts: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """``(part, rows)`` for each partition id in ``parts``, ascending; ``rows`` ascending.

    One stable sort instead of a comparison per partition, for the DoFns that split a batch
    into its shuffle partitions.
    """
    if len(parts) == 0:
        return
    order = np.argsort(parts, kind="stable")
    present, starts = np.unique(parts[order], return_index=True)
    yield from zip(present.tolist(), np.split(order, starts[1:]), strict=True)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The SplitMix64 finaliser: a bijective 64-bit mix, vectorised over a uint64 array."""
    x = x.astype(np.uint64, copy=True)
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def scope_mix(scopes: np.ndarray, seed: int) -> np.ndarray:
    """A seeded 64-bit mix of each scope id, xor-ed into keys that must stay within a scope."""
    return splitmix64(scopes.astype(np.uint64) ^ np.uint64((seed * 0x9E3779B1 + 7) & (2**64 - 1)))


def stable_hash64(text: str, seed: int) -> int:
    """Seeded 64-bit xxhash of a string, identical in every process."""
    return xxhash.xxh3_64_intdigest(text.encode("utf-8"), seed=seed)


@dataclass
class DocBatch:
    """Consecutive parsed records of one input file (``records`` keep every input field)."""

    batch_key: int
    uids: np.ndarray  # int64[m]
    ids: list[str]
    records: list[dict[str, Any]]
    nbytes: int = 0  # raw input bytes, for Beam's size estimates

    def estimated_size(self) -> int:
        return self.nbytes + 16 * len(self.ids)


@dataclass
class FeatureBatch:
    """What the near-duplicate stages need of a batch: no text, only hashes.

    ``band_hashes`` holds each document's LSH band hashes, computed where the signatures are
    (``transforms.minhash``): the 256-value signatures themselves are dropped there, since
    nothing after banding needs them (verification recomputes what it needs from a re-read of
    the few candidate documents). ``signatures`` is only kept when asked for (tests, tools).
    Documents with no token have no row in any array here (they are kept without comparison).
    """

    batch_key: int
    uids: np.ndarray  # int64[m]
    ids: list[str]
    norm_lengths: np.ndarray  # int64[m], UTF-8 length of the normalised text
    exact_hashes: np.ndarray  # uint64[m, 2], xxh3-128 of the normalised text
    signatures: np.ndarray | None  # uint32[m, num_perm], or None once banded
    # Dedup scope of each row (CL→ND: the document's cluster); None = one global scope.
    scopes: np.ndarray | None = None  # int64[m]
    # Whether each row's id was derived from file and line (no ``id`` in the record), for the
    # smallest_id keep policy (transforms.exact.rank_key); None = every id explicit.
    derived: np.ndarray | None = None  # bool[m]
    band_hashes: np.ndarray | None = None  # uint64[m, bands]

    def __len__(self) -> int:
        return len(self.uids)

    def estimated_size(self) -> int:
        arrays = (self.uids, self.norm_lengths, self.exact_hashes, self.signatures,
                  self.band_hashes)
        return sum(a.nbytes for a in arrays if a is not None) + 32 * len(self.ids)

    def derived_flags(self) -> np.ndarray:
        """``bool[m]``: whether each row's id is derived (all False when not recorded)."""
        if self.derived is None:
            return np.zeros(len(self.uids), dtype=bool)
        return self.derived

    def select(self, rows: np.ndarray) -> FeatureBatch:
        """The sub-batch made of ``rows`` (sorted row indices); absent parts stay absent."""

        def pick(array: np.ndarray | None) -> np.ndarray | None:
            return None if array is None or len(array) == 0 else array[rows]

        return FeatureBatch(
            batch_key=self.batch_key,
            uids=self.uids[rows],
            ids=[self.ids[int(r)] for r in rows] if self.ids else [],
            norm_lengths=self.norm_lengths[rows],
            exact_hashes=self.exact_hashes[rows] if len(self.exact_hashes) else self.exact_hashes,
            signatures=pick(self.signatures),
            scopes=pick(self.scopes),
            derived=pick(self.derived),
            band_hashes=pick(self.band_hashes),
        )

    def with_scopes(self, scopes: np.ndarray, seed: int) -> FeatureBatch:
        """This batch with a dedup scope per row; the scope is mixed into the exact key so
        that equal texts in different scopes never meet (band keys mix it in too)."""
        mixed = self.exact_hashes.copy()
        if len(mixed):
            mixed[:, 0] = splitmix64(mixed[:, 0] ^ scope_mix(scopes, seed))
        return dataclasses.replace(self, exact_hashes=mixed, scopes=scopes.astype(np.int64))


@dataclass
class NodeInfo:
    """What later stages need about one document that takes part in a duplicate graph."""

    uid: int
    id: str
    norm_length: int
    signature: np.ndarray | None  # uint32[num_perm]; absent with exact verification
    shingles: np.ndarray | None = None  # sorted unique uint64, exact verification only
    derived: bool = False  # id derived from file and line (transforms.exact.rank_key)


class UidSetFn(beam.CombineFn):
    """Sorted unique uids (``int64[n]``) of every uid array of the input: the compact sets that
    select documents (candidate endpoints, removed duplicates) for a re-read."""

    def create_accumulator(self) -> list[np.ndarray]:
        return []

    def add_input(self, acc: list[np.ndarray], uids: np.ndarray) -> list[np.ndarray]:
        acc.append(np.asarray(uids, dtype=np.int64))
        if len(acc) > 64:  # bound the list; np.unique keeps the set compact
            acc = [np.unique(np.concatenate(acc))]
        return acc

    def merge_accumulators(self, accs: Iterable[list[np.ndarray]]) -> list[np.ndarray]:
        arrays = [a for acc in accs for a in acc]
        return [np.unique(np.concatenate(arrays))] if arrays else []

    def extract_output(self, acc: list[np.ndarray]) -> np.ndarray:
        return np.unique(np.concatenate(acc)) if acc else np.zeros(0, dtype=np.int64)


def timed(items: Iterable[T], counter: Any) -> Iterator[T]:
    """Yield from ``items``, adding to ``counter`` the milliseconds spent producing them.

    Time spent by fused downstream steps while an item is being consumed is not counted, so
    each stage reports its own work only.
    """
    stage = counter.metric_name.name.removeprefix("msecs_")
    if LIVE.stage_started(stage):
        # The driver's progress line names the stage (beam_pipeline.progress); a worker in
        # another process only says it in its own log.
        LOG.debug("stage reached: %s", stage)
    total = 0.0
    iterator = iter(items)
    while True:
        start = time.perf_counter()
        try:
            item = next(iterator)
        except StopIteration:
            total += time.perf_counter() - start
            break
        total += time.perf_counter() - start
        yield item
    counter.inc(round(total * 1000))


def timed_process(process: Callable[..., Iterable[T]]) -> Callable[..., Iterator[T]]:
    """Decorate a DoFn's ``process`` so that its output is produced under :func:`timed` with
    the DoFn's ``timer`` (a :func:`stage_counter`). ``functools.wraps`` keeps the signature
    Beam reads for side inputs."""

    @functools.wraps(process)
    def timed_call(self: Any, *args: Any, **kwargs: Any) -> Iterator[T]:
        return timed(process(self, *args, **kwargs), self.timer)

    return timed_call


def stage_counter(stage: str) -> Any:
    """Beam counter of a stage's processing milliseconds (summed over workers)."""
    return beam.metrics.Metrics.counter("ndcl", f"msecs_{stage}")


def stage_cpu_counter(stage: str) -> Any:
    """Beam counter of a stage's CPU milliseconds (all its threads, summed over workers), for a
    stage that runs work on threads of its own."""
    return beam.metrics.Metrics.counter("ndcl", f"cpu_msecs_{stage}")


class JoinItem:
    """One value of a :class:`JoinByKey` input, tagged with the input's name."""

    __slots__ = ("tag", "value")

    def __init__(self, tag: str, value: Any) -> None:
        self.tag = tag
        self.value = value

    def __reduce__(self) -> tuple:
        return JoinItem, (self.tag, self.value)

    def estimated_size(self) -> int:
        sizer = getattr(self.value, "estimated_size", None)
        return sizer() if sizer is not None else 64


class Grouped(dict):
    """``{input name: [values]}`` for one key of a :class:`JoinByKey`."""

    def estimated_size(self) -> int:
        return sum(JoinItem(tag, v).estimated_size() for tag, vs in self.items() for v in vs)


class BatchCoder(beam.coders.Coder):
    """Pickle coder for batch elements whose size estimate does not encode the element.

    Beam's workers sample element sizes for their metrics, and for a value typed ``Any`` the
    estimate is a full pickling; with multi-megabyte batches that tripled the coding work.
    """

    def encode(self, value: Any) -> bytes:
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)

    def decode(self, encoded: bytes) -> Any:
        return pickle.loads(encoded)

    def is_deterministic(self) -> bool:
        return False

    def estimate_size(self, value: Any) -> int:
        return value.estimated_size()

    def to_type_hint(self) -> Any:
        return Any


for _type in (DocBatch, FeatureBatch, JoinItem, Grouped):
    beam.coders.registry.register_coder(_type, BatchCoder)


def _tag(element: tuple[int, Any], tag: str) -> tuple[int, JoinItem]:
    return element[0], JoinItem(tag, element[1])


def _untag(element: tuple[int, Iterable[JoinItem]], tags: list[str]) -> tuple[int, Grouped]:
    key, items = element
    grouped = Grouped({tag: [] for tag in tags})
    for item in items:
        grouped[item.tag].append(item.value)
    return key, grouped


class JoinByKey(beam.PTransform):
    """CoGroupByKey for ``(int key, value)`` inputs: ``(key, Grouped{name: [values]})``.

    Unlike ``beam.CoGroupByKey`` every intermediate PCollection is typed, so batch values go
    through :class:`BatchCoder` and are pickled only when they really cross a stage.
    """

    def expand(self, inputs: dict[str, beam.PCollection]) -> beam.PCollection:
        tags = sorted(inputs)
        tagged = [
            inputs[tag]
            | f"Tag{index}{tag.title().replace('_', '')}"
            >> beam.Map(_tag, tag).with_output_types(tuple[int, JoinItem])
            for index, tag in enumerate(tags)
        ]
        return (
            tagged
            | "FlattenTagged" >> beam.Flatten().with_output_types(tuple[int, JoinItem])
            | "GroupTagged" >> beam.GroupByKey()
            | "Untag" >> beam.Map(_untag, tags).with_output_types(tuple[int, Grouped])
        )
