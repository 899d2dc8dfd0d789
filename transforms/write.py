"""Write the output contract: ``kept/`` and ``duplicates/`` Parquet, ``rejected/`` JSON lines.

Each document batch, read again by the writer itself, meets the duplicate rows of its
documents through a side input keyed by batch (rows packed per batch: :class:`PackedRows`) and
is written as one Parquet part per directory, named after the batch key. The names are a
function of the input, so a bundle retried by the runner overwrites its own files instead of
adding a second copy, and outputs are identical across runners and worker counts.

Columns of ``kept/``: ``id``, ``text``, ``url``, ``timestamp``, then ``cluster_A`` and
``cluster_B`` when clustering ran, then every other input field in name order. A field's
Parquet type is unified over the whole corpus (computed by a
CombineGlobally, passed to the writers as a side input): strings, integers, floats and
booleans keep their type (integers mixed with floats become floats); anything else (objects,
lists, mixed types) is written as a JSON-encoded string (strings too, so every cell of such a
column decodes with ``json.loads``).

With clusters, the writer also emits each batch's kept documents per ``(cluster_A, cluster_B,
label)`` on a second output, which ``transforms.cluster_stats`` merges into the cluster
sizes and NMI/ARI: the batch's records and labels are already joined here, so this costs no
shuffle of its own.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict, deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, NamedTuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import xxhash
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindows
from apache_beam.utils.windowed_value import WindowedValue

from transforms import faults
from transforms.batches import DocBatch, stage_counter, stage_cpu_counter, timed_process
from transforms.cluster_stats import CONTINGENCY_TAG, batch_contingency, label_value
from transforms.read import ReadParams, Selection
from transforms.reread import ReadSelected
from transforms.resolve import DuplicateRow
from transforms.stage_end import add_counts

FIXED_COLUMNS = ("id", "text", "url", "timestamp")
DUPLICATE_SCHEMA = pa.schema([
    ("id", pa.string()), ("duplicate_of", pa.string()), ("reason", pa.string()),
    ("similarity", pa.float64()), ("component_size", pa.int64()), ("url", pa.string()),
])
STATS_TAG = "stats"


class PackedRows(NamedTuple):
    """Several :class:`DuplicateRow` of one batch as columns: one side-input element where
    there were many. On Flink every side-input element is a separate Java object in the
    TaskManager's heap (about 600 bytes for one pickled row); 700,000 removed documents held
    480 MB of a 630 MB heap before the rows were packed."""

    uids: list[int]
    ids: list[str]
    duplicate_of: list[str]
    reasons: list[str]
    similarities: list[float]
    component_sizes: list[int]

    @classmethod
    def pack(cls, rows: list[DuplicateRow]) -> PackedRows:
        return cls(*(list(column) for column in zip(*rows)))

    def rows(self) -> Iterator[DuplicateRow]:
        return (DuplicateRow(*values) for values in zip(*self))


class PackRowsByBatchFn(beam.DoFn):
    """``(batch_key, DuplicateRow)`` → ``(batch_key, PackedRows)``: the rows of each batch met
    in one bundle, packed when the bundle ends (a batch may get several packs)."""

    def start_bundle(self) -> None:
        self.rows: dict[int, list[DuplicateRow]] = defaultdict(list)

    def process(self, element: tuple[int, DuplicateRow]) -> Iterator[Any]:
        self.rows[element[0]].append(element[1])
        return iter(())

    def finish_bundle(self) -> Iterator[WindowedValue]:
        rows, self.rows = self.rows, defaultdict(list)
        for key in sorted(rows):
            yield GlobalWindows.windowed_value((key, PackedRows.pack(rows[key])))


# value_type by exact class, for the common classes (FieldTypesFn looks up every value).
_TYPE_NAMES: dict[type, str] = {type(None): "null", bool: "bool", int: "int", float: "float",
                                str: "string"}


def value_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    return "json"


def unify_types(types: set[str]) -> str:
    """One column type for a field seen with these value types."""
    types = types - {"null"}
    if not types or types == {"string"}:
        return "string"
    if types == {"bool"}:
        return "bool"
    if types == {"int"}:
        return "int"
    if types <= {"int", "float"}:
        return "float"
    return "json"


ARROW_TYPES = {"string": pa.string(), "bool": pa.bool_(), "int": pa.int64(),
               "float": pa.float64(), "json": pa.string()}


def kept_schema(field_types: dict[str, set[str]]) -> list[tuple[str, str]]:
    """``(column, unified type)`` for the kept output, fixed columns first."""
    columns = [("id", "string"), ("text", "string")]
    for name in ("url", "timestamp"):
        columns.append((name, unify_types(field_types.get(name, set()))))
    for name in sorted(set(field_types) - set(FIXED_COLUMNS)):
        columns.append((name, unify_types(field_types[name])))
    return columns


def _cell(value: Any, kind: str) -> Any:
    if value is None:
        return None
    if kind == "json":
        # Every value of a mixed column is JSON, strings included, so each cell decodes back.
        return json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)
    if kind == "string" and not isinstance(value, str):
        return str(value)
    if kind == "float":
        return float(value)
    return value


def kept_table(ids: list[str], records: list[dict[str, Any]],
               columns: list[tuple[str, str]],
               clusters: tuple[list[int], list[int]] | None = None) -> pa.Table:
    """Kept rows; with ``clusters``, ``cluster_A``/``cluster_B`` follow the fixed columns."""
    data: dict[str, list[Any]] = {"id": ids, "text": [r["text"] for r in records]}
    fields = [pa.field(name, ARROW_TYPES[kind]) for name, kind in columns[:4]]
    for name, kind in columns[2:4]:
        data[name] = [_cell(r.get(name), kind) for r in records]
    if clusters is not None:
        data["cluster_A"], data["cluster_B"] = clusters
        fields += [pa.field("cluster_A", pa.int64()), pa.field("cluster_B", pa.int64())]
    for name, kind in columns[4:]:
        data[name] = [_cell(r.get(name), kind) for r in records]
        fields.append(pa.field(name, ARROW_TYPES[kind]))
    return arrow_table(data, pa.schema(fields))


# Python values -> Arrow columns without ``pa.array``: its first call imports pandas (about
# 0.25 s of every run, measured) only to ask whether the values are a pandas object. The four
# column types are laid out from buffers instead (validity bitmap, offsets, values), the same
# arrays ``pa.array`` makes, so the Parquet bytes are unchanged (tests/end_to_end digests);
# anything the fast layout does not take (a string with a lone surrogate, an int past 64 bits,
# more than 2 GiB of text) goes through ``pa.array``, which decides as it always did.
_LAYOUT_ERRORS = (UnicodeEncodeError, OverflowError, TypeError, ValueError)
_MAX_STRING_BYTES = 2**31 - 1  # pa.string()'s int32 offsets
# The Python types each column type takes from buffers (exactly these: bool is not an int here).
_LAYOUT_TYPES = {pa.string(): (str, type(None)), pa.bool_(): (bool, type(None)),
                 pa.int64(): (int, type(None)), pa.float64(): (float, type(None))}


def _validity(values: list[Any]) -> pa.Buffer | None:
    valid = np.fromiter((v is not None for v in values), dtype=bool, count=len(values))
    return None if valid.all() else pa.py_buffer(np.packbits(valid, bitorder="little"))


def _laid_out(values: list[Any], arrow_type: pa.DataType) -> pa.Array:
    count, validity = len(values), _validity(values)
    if arrow_type == pa.string():
        encoded = [b"" if v is None else v.encode() for v in values]
        offsets = np.zeros(count + 1, dtype=np.int64)
        np.cumsum(np.fromiter(map(len, encoded), dtype=np.int64, count=count), out=offsets[1:])
        if offsets[-1] > _MAX_STRING_BYTES:
            raise ValueError("too much text for int32 offsets")
        buffers = [validity, pa.py_buffer(offsets.astype(np.int32)),
                   pa.py_buffer(b"".join(encoded))]
    elif arrow_type == pa.bool_():
        bits = np.packbits(np.fromiter((bool(v) for v in values), dtype=bool, count=count),
                           bitorder="little")
        buffers = [validity, pa.py_buffer(bits)]
    elif arrow_type in (pa.int64(), pa.float64()):
        dtype = np.int64 if arrow_type == pa.int64() else np.float64
        if validity is not None:
            values = [0 if v is None else v for v in values]
        buffers = [validity, pa.py_buffer(np.array(values, dtype=dtype))]
    else:
        raise TypeError(f"no buffer layout for {arrow_type}")
    return pa.Array.from_buffers(arrow_type, count, buffers)


def arrow_column(values: list[Any], arrow_type: pa.DataType) -> pa.Array:
    """``pa.array(values, arrow_type)`` for string, bool, int64 and float64 columns (see above)."""
    allowed = _LAYOUT_TYPES.get(arrow_type)
    if allowed is None or any(type(v) not in allowed for v in values):
        return pa.array(values, arrow_type)
    try:
        return _laid_out(values, arrow_type)
    except _LAYOUT_ERRORS:
        return pa.array(values, arrow_type)


def arrow_table(columns: dict[str, list[Any]], schema: pa.Schema) -> pa.Table:
    """``pa.table(columns, schema=schema)`` by :func:`arrow_column`."""
    return pa.Table.from_arrays([arrow_column(columns[f.name], f.type) for f in schema],
                                schema=schema)


def write_parquet(table: pa.Table, path: str) -> None:
    with FileSystems.create(path) as handle:
        pq.write_table(table, handle, compression="zstd")


def _write_timed(table: pa.Table, path: str) -> float:
    """:func:`write_parquet`, returning the CPU seconds of the thread that ran it."""
    began = time.thread_time()
    write_parquet(table, path)
    return time.thread_time() - began


# Tables a writer may have queued before it waits for the oldest: bounded memory (a batch's
# table is a few MB) while the next batch is read and parsed.
MAX_PENDING_WRITES = 2


class BackgroundWriter:
    """Writes Parquet parts on a thread of its own, so that Arrow's encoding and zstd (which
    release the GIL) overlap the parsing of the next batch on a second core.

    A write's error is raised by the call that waits for it: the next :meth:`submit` beyond
    :data:`MAX_PENDING_WRITES`, or :meth:`drain`, which the DoFn calls in ``finish_bundle``,
    so a bundle never completes before its files are written."""

    def __init__(self) -> None:
        self.pool: ThreadPoolExecutor | None = None
        self.pending: deque[Future] = deque()
        self.cpu_seconds = 0.0

    def submit(self, table: pa.Table, path: str) -> None:
        if self.pool is None:
            self.pool = ThreadPoolExecutor(1, thread_name_prefix="ndcl-write")
        while len(self.pending) >= MAX_PENDING_WRITES:
            self.cpu_seconds += self.pending.popleft().result()
        self.pending.append(self.pool.submit(_write_timed, table, path))

    def drain(self) -> float:
        """Wait for every queued write (raising the first error); the CPU seconds of the writes
        since the last drain."""
        while self.pending:
            self.cpu_seconds += self.pending.popleft().result()
        seconds, self.cpu_seconds = self.cpu_seconds, 0.0
        return seconds

    def discard(self) -> None:
        """Wait for writes left by a failed bundle, ignoring their errors (a retry rewrites
        the same part names)."""
        while self.pending:
            self.pending.popleft().exception()
        self.cpu_seconds = 0.0

    def close(self) -> None:
        self.discard()
        if self.pool is not None:
            self.pool.shutdown(wait=True)
            self.pool = None


_MISSING = object()


class FieldTypesFn(beam.CombineFn):
    """Union of ``field → {value types}`` over all records (``id``/``text`` excluded)."""

    def create_accumulator(self) -> dict[str, set[str]]:
        return {}

    def add_input(self, acc: dict[str, set[str]], element: tuple[int, DocBatch]
                  ) -> dict[str, set[str]]:
        # The batch's distinct (field, value class) pairs first: one set comprehension, then
        # a type name per pair rather than per value.
        pairs = {(name, value.__class__) for record in element[1].records
                 for name, value in record.items()}
        for name, cls in pairs:
            if name not in ("id", "text"):
                kind = _TYPE_NAMES.get(cls)
                if kind is None:  # a subclass or another class: the full rule, on one value
                    kind = next(value_type(record[name]) for record in element[1].records
                                if record.get(name, _MISSING).__class__ is cls)
                acc.setdefault(name, set()).add(kind)
        return acc

    def merge_accumulators(self, accs: Iterable[dict[str, set[str]]]) -> dict[str, set[str]]:
        merged: dict[str, set[str]] = {}
        for acc in accs:
            for name, kinds in acc.items():
                merged.setdefault(name, set()).update(kinds)
        return merged

    def extract_output(self, acc: dict[str, set[str]]) -> dict[str, set[str]]:
        return acc


class WriteBatchFn(beam.DoFn):
    """One re-read document batch + its duplicate rows (a side input keyed by batch) → a kept
    part and a duplicates part; with clusters (a side input of labels keyed by batch), also
    the batch's kept documents per ``(cluster_A, cluster_B, label)`` on the ``contingency``
    output (``transforms.cluster_stats``): the records are at hand here, so the label costs
    no extra shuffle."""

    def __init__(self, staging_dir: str, with_clusters: bool = False,
                 label_field: str | None = None, with_duplicates: bool = True) -> None:
        self.staging_dir = staging_dir.rstrip("/")
        self.with_clusters = with_clusters
        self.with_duplicates = with_duplicates
        self.label_field = label_field or None
        self.timer = stage_counter("write_outputs")
        # CPU seconds, this thread's and the background writes': see ComputeFeaturesFn.
        self.cpu_timer = stage_cpu_counter("write_outputs")
        self.writer = BackgroundWriter()
        self.thread_cpu = 0.0  # this bundle's CPU seconds on the DoFn's thread

    def setup(self) -> None:
        self.writer = BackgroundWriter()

    def start_bundle(self) -> None:
        self.writer.discard()
        self.thread_cpu = 0.0

    def finish_bundle(self) -> None:
        began = time.perf_counter()
        background = self.writer.drain()
        self.timer.inc(round((time.perf_counter() - began) * 1000))
        self.cpu_timer.inc(round((self.thread_cpu + background) * 1000))

    def teardown(self) -> None:
        self.writer.close()

    def process(self, element: tuple[int, DocBatch], field_types: dict[str, set[str]],
                *keyed: Any) -> Iterator[object]:
        began = time.thread_time()
        try:
            yield from self._process(element, field_types, *keyed)
        finally:
            self.thread_cpu += time.thread_time() - began

    @timed_process
    def _process(self, element: tuple[int, DocBatch], field_types: dict[str, set[str]],
                 *keyed: Any) -> Iterator[object]:
        """``keyed``: the duplicate rows' multimap (unless ``with_duplicates`` is off: a
        cluster-only run), then the labels' multimap (with clusters)."""
        key, batch = element
        duplicates = keyed[0] if self.with_duplicates else None
        clusters = keyed[-1] if self.with_clusters else None
        # Multimap side inputs answer [] for a key they do not hold (and support no ``in``).
        rows: list[DuplicateRow] = [row for packed in duplicates[key] for row in packed.rows()
                                    ] if duplicates is not None else []
        removed = {row.uid: row for row in rows}
        index = {int(uid): i for i, uid in enumerate(batch.uids.tolist())}
        unknown = set(removed) - set(index)
        if unknown:
            raise RuntimeError(f"batch {key:#x}: duplicate rows for unknown uids {sorted(unknown)}")
        keep_rows = [i for i, uid in enumerate(batch.uids.tolist()) if uid not in removed]
        name = f"part-{key:016x}.parquet"
        labels = list(clusters[key]) if self.with_clusters else None
        cluster_columns = self._cluster_columns(key, labels, batch, keep_rows)
        if keep_rows:
            table = kept_table([batch.ids[i] for i in keep_rows],
                               [batch.records[i] for i in keep_rows],
                               kept_schema(field_types), cluster_columns)
            self.writer.submit(table, f"{self.staging_dir}/kept/{name}")
        if rows:
            rows.sort(key=lambda r: r.uid)
            urls = [batch.records[index[r.uid]].get("url") for r in rows]
            table = arrow_table({
                "id": [r.id for r in rows],
                "duplicate_of": [r.duplicate_of for r in rows],
                "reason": [r.reason for r in rows],
                "similarity": [float(r.similarity) for r in rows],
                "component_size": [int(r.component_size) for r in rows],
                "url": [u if isinstance(u, str) or u is None else str(u) for u in urls],
            }, DUPLICATE_SCHEMA)
            self.writer.submit(table, f"{self.staging_dir}/duplicates/{name}")
        # Test hook (a no-op unless NDCL_FAULTS names it): fail or stall after the side effects,
        # so the files must be there first.
        if faults.enabled():
            self.thread_cpu += self.writer.drain()
        faults.inject("write")
        exact = sum(1 for r in rows if r.reason == "exact")
        yield {"parsed": len(batch.ids), "kept": len(keep_rows), "duplicates_exact": exact,
               "duplicates_near": len(rows) - exact}
        if cluster_columns is not None and keep_rows:
            labels_of_kept = [label_value(batch.records[i].get(self.label_field))
                              if self.label_field else None for i in keep_rows]
            yield beam.pvalue.TaggedOutput(CONTINGENCY_TAG,
                                           batch_contingency(*cluster_columns, labels_of_kept))

    def _cluster_columns(self, key: int, grouped_labels: list | None, batch: DocBatch,
                         rows: list[int]) -> tuple[list[int], list[int]] | None:
        if grouped_labels is None:
            return None
        labels: dict[int, tuple[int, int]] = {}
        for uids, labels_a, labels_b in grouped_labels:
            labels.update(zip(uids.tolist(), zip(labels_a.tolist(), labels_b.tolist())))
        missing = [int(batch.uids[i]) for i in rows if int(batch.uids[i]) not in labels]
        if missing:
            raise RuntimeError(f"batch {key:#x}: {len(missing)} kept documents without cluster "
                               f"labels (first uid {missing[0]})")
        pairs = [labels[int(batch.uids[i])] for i in rows]
        return [a for a, _ in pairs], [b for _, b in pairs]


class WriteRejectedFn(beam.DoFn):
    """All rejected rows of one source file → one JSON-lines part, in line order."""

    def __init__(self, staging_dir: str) -> None:
        self.staging_dir = staging_dir.rstrip("/")

    def process(self, element: tuple[str, Iterable[dict]]) -> Iterator[dict]:
        source, rows = element
        rows = sorted(rows, key=lambda r: (r["line"], r["reason"]))
        name = f"part-{xxhash.xxh3_64_hexdigest(source.encode())}.jsonl"
        with FileSystems.create(f"{self.staging_dir}/rejected/{name}") as handle:
            for row in rows:
                handle.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
        stats = {"rejected": len(rows)}
        for row in rows:
            key = f"rejected:{row['reason']}"
            stats[key] = stats.get(key, 0) + 1
        yield stats


def sum_stats(dicts: Iterable[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for item in dicts:
        add_counts(total, item)
    return total


class WriteStatsFn(beam.DoFn):
    def __init__(self, staging_dir: str) -> None:
        self.staging_dir = staging_dir.rstrip("/")

    def process(self, stats: dict[str, int]) -> Iterator[str]:
        path = f"{self.staging_dir}/_stats.json"
        with FileSystems.create(path) as handle:
            handle.write(json.dumps(stats, sort_keys=True).encode())
        yield path


class WriteJsonFn(beam.DoFn):
    """Writes one element as ``<staging_dir>/<name>`` (JSON); emits no stats."""

    def __init__(self, staging_dir: str, name: str) -> None:
        self.staging_dir = staging_dir.rstrip("/")
        self.name = name

    def process(self, element: Any) -> Iterator[dict[str, int]]:
        with FileSystems.create(f"{self.staging_dir}/{self.name}") as handle:
            handle.write(json.dumps(element, sort_keys=True, default=str).encode())
        return iter(())


class WriteParams(NamedTuple):
    """Where and how :class:`WriteOutputs` writes."""

    staging_dir: str
    read: ReadParams
    label_field: str | None = None


class Written(NamedTuple):
    """``stats``: the written ``_stats.json`` path; ``contingency``: per-batch cluster counts
    of the kept documents (empty without clusters); ``totals``: the summed stats written
    there (one dict)."""

    stats: beam.PCollection
    contingency: beam.PCollection
    totals: beam.PCollection


def every_document() -> Selection:
    return Selection()


class WriteOutputs(beam.PTransform):
    """Write the output contract under ``staging_dir`` from named inputs:

    - ``repeats`` (``transforms.read.ReadDocuments``): the input is read once more here, fused
      with the writer, so document text never waits in the graph for the decisions;
    - ``field_types``: the unified field types (:class:`FieldTypesFn`, from the first read);
    - ``duplicates`` (absent in a cluster-only run): ``(batch_key, DuplicateRow)``, packed
      per batch and bundle (:class:`PackRowsByBatchFn`) and joined as a side input keyed by
      batch (its size follows the duplicates, not the corpus);
    - ``rejected``: dead-letter rows; ``stats``: the other stages' stats dicts, to sum;
    - ``clusters`` (optional): ``(batch_key, (uids, cluster_A, cluster_B))`` labels (16 bytes
      a document), a side input keyed by batch.
    """

    def __init__(self, params: WriteParams) -> None:
        super().__init__()
        self.params = params

    def expand(self, inputs: dict[str, Any]) -> Written:
        params = self.params
        clusters, duplicates = inputs.get("clusters"), inputs.get("duplicates")
        selection = inputs["repeats"].pipeline | "SelectEveryDocument" >> beam.Create(
            [every_document()])
        side_inputs = [beam.pvalue.AsSingleton(inputs["field_types"])]
        if duplicates is not None:
            side_inputs.append(beam.pvalue.AsMultiMap(
                duplicates | "PackDuplicateRows" >> beam.ParDo(PackRowsByBatchFn())))
        if clusters is not None:
            side_inputs.append(beam.pvalue.AsMultiMap(clusters))
        # The writer reads its batches itself (one step): its side inputs then hold back
        # file names, not the corpus (``transforms.reread.ReadThenFn``).
        written = (
            {"repeats": inputs["repeats"], "selection": selection}
            | "ReadAndWriteKeptAndDuplicates" >> ReadSelected(
                params.read,
                WriteBatchFn(params.staging_dir, clusters is not None, params.label_field,
                             with_duplicates=duplicates is not None),
                tuple(side_inputs), tags=(CONTINGENCY_TAG,), main="stats")
        )
        rejected_stats = (
            inputs["rejected"]
            | "KeyRejectedBySource" >> beam.Map(lambda row: (row["source"], row))
            | "GroupRejected" >> beam.GroupByKey()
            | "WriteRejected" >> beam.ParDo(WriteRejectedFn(params.staging_dir))
        )
        totals = (
            (written.stats, rejected_stats, inputs["stats"])
            | "FlattenStats" >> beam.Flatten()
            | "SumStats" >> beam.CombineGlobally(sum_stats)
        )
        stats_file = totals | "WriteStats" >> beam.ParDo(WriteStatsFn(params.staging_dir))
        return Written(stats_file, written[CONTINGENCY_TAG], totals)
