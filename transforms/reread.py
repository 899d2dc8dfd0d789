"""Read the input again, selecting documents by uid (:class:`ReadSelected`).

Document text never crosses a stage boundary in NDCL: a stage that needs text reads it here,
fused with its consumer, instead of the first read's batches being kept (and, on a
distributed runner, shuffled or materialised) until then. A re-read yields the documents as
the first read (``transforms.read.ReadDocuments``) made them: same uids, ids, records and
batch keys; its rejects are not reported again.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import apache_beam as beam

from transforms.batches import DocBatch, stage_counter, timed
from transforms.read import ReadFileFn, ReadParams, Selection, id_names


class ReadSelectedFn(ReadFileFn):
    """``(file_index, path)`` + repeats + a :class:`Selection` → ``(batch_key, DocBatch)`` of
    the selected documents, as the first read made them (same uids, ids, records and batch
    keys). Rejects are not reported again; lines not selected are not parsed."""

    timer = stage_counter("reread")

    def process(self, element: tuple[int, str], repeats: dict[int, int],
                selection: Selection) -> Iterator[Any]:
        return timed(self._process(element, repeats or {}, selection), self.timer)


class ReadThenFn(beam.DoFn):
    """A :class:`ReadSelectedFn` and the DoFn that consumes its batches, as one step: the
    consumer's side inputs then hold back only ``(file_index, path)`` elements.

    Beam's portable fusion (``GreedyPipelineFuser``) makes every ParDo with side inputs the
    root of a new stage. A consumer with side inputs placed after a separate re-read would
    receive the text across a stage boundary, and on Flink hold it all in the TaskManager's
    heap until its side inputs are ready (measured: the writer's duplicates side input kept
    the whole re-read corpus waiting, ``OutOfMemoryError`` with a 2g TaskManager at 184k
    posts)."""

    def __init__(self, read: ReadSelectedFn, consumer: beam.DoFn) -> None:
        self.read = read
        self.consumer = consumer

    def setup(self) -> None:
        self.read.setup()
        self.consumer.setup()

    def start_bundle(self) -> None:
        self.consumer.start_bundle()

    def process(self, element: tuple[int, str], repeats: dict[int, int], selection: Selection,
                *side_inputs: Any) -> Iterator[Any]:
        for batch in self.read.process(element, repeats, selection):
            yield from self.consumer.process(batch, *side_inputs) or ()

    def finish_bundle(self) -> Iterator[Any]:
        yield from self.consumer.finish_bundle() or ()

    def teardown(self) -> None:
        self.consumer.teardown()
        self.read.teardown()


class ReadSelected(beam.PTransform):
    """Read the input again: ``{"repeats", "selection"}`` (``read.repeats`` of
    :class:`ReadDocuments` and a singleton :class:`Selection`) → ``(batch_key, DocBatch)``.

    Each re-read lists the input files itself: a step that shared the first read's file list
    would be fused with the first read by the runner, and then wait for side inputs that
    only exist after the first read has finished.

    Document text never crosses a stage boundary in NDCL: a stage that needs text reads it
    here, fused with its consumer, instead of the first read's batches being kept (and, on a
    distributed runner, shuffled or materialised) until then.

    With ``consumer`` (a DoFn taking ``(batch_key, DocBatch)`` and ``side_inputs``), the
    batches are consumed in the reading step itself (:class:`ReadThenFn`) and the result is
    the consumer's output: with ``tags``, a tuple of outputs (``with_outputs(*tags,
    main=main)``).
    """

    def __init__(self, params: ReadParams, consumer: beam.DoFn | None = None,
                 side_inputs: tuple[Any, ...] = (), tags: tuple[str, ...] = (),
                 main: str = "main") -> None:
        super().__init__()
        self.params = params
        self.consumer = consumer
        self.side_inputs = side_inputs
        self.tags = tags
        self.main = main

    def expand(self, inputs: dict[str, beam.PCollection]) -> beam.PCollection:
        files = list(self.params.files)
        fn = ReadSelectedFn(self.params.max_doc_bytes, self.params.batch_size,
                            id_names(files), files)
        indexed_files = (
            inputs["selection"].pipeline
            | "ListFilesAgain" >> beam.Create(list(enumerate(files)))
            | "SpreadFilesAgain" >> beam.Reshuffle()
        )
        selected = (beam.pvalue.AsDict(inputs["repeats"]),
                    beam.pvalue.AsSingleton(inputs["selection"]))
        if self.consumer is not None:
            consume = beam.ParDo(ReadThenFn(fn, self.consumer), *selected, *self.side_inputs)
            if self.tags:
                consume = consume.with_outputs(*self.tags, main=self.main)
            return indexed_files | "ParseAndConsume" >> consume
        return indexed_files | "ParseSelected" >> beam.ParDo(fn, *selected).with_output_types(
            tuple[int, DocBatch])
