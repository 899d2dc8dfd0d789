"""A global combine that never sends its raw input through a shuffle, on any runner.

Beam's runners normally *lift* a combine: each worker folds its bundle's elements into one
accumulator before the GroupByKey, so only accumulators cross the shuffle. The Python SDK
skips that lifting for a job submitted in streaming mode (``portable_runner.py``: the
``lift_combiners`` phase runs only when ``not streaming``), and NDCL submits to Flink in
streaming mode (its batch translation does not finish on this graph; ``runners.options``).
Measured on Flink (184,361 blog posts, TaskManager of 4g): ``CombineGlobally(FieldTypesFn())``
on the document batches then sent every document's text to one key, and the TaskManager died
of ``OutOfMemoryError: Java heap space`` encoding that one grouped element.

:class:`CombineGloballyInBundles` does the lifting in the graph itself: a DoFn folds each
bundle into one accumulator (emitted in ``finish_bundle``), and a ``CombineGlobally`` merges
the accumulators. The result equals ``CombineGlobally(fn)``'s for any bundling, since a
CombineFn's merge is associative and commutative; on a runner that lifts as well, the second
combine is lifted again over accumulators, which costs little.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindows
from apache_beam.utils.windowed_value import WindowedValue


class MergeAccumulatorsFn(beam.CombineFn):
    """``fn`` over inputs that are already ``fn``'s accumulators."""

    def __init__(self, fn: beam.CombineFn) -> None:
        self.fn = fn

    def setup(self) -> None:
        self.fn.setup()

    def create_accumulator(self) -> Any:
        return self.fn.create_accumulator()

    def add_input(self, acc: Any, partial: Any) -> Any:
        return self.fn.merge_accumulators([acc, partial])

    def merge_accumulators(self, accs: Iterable[Any]) -> Any:
        return self.fn.merge_accumulators(accs)

    def compact(self, acc: Any) -> Any:
        return self.fn.compact(acc)

    def extract_output(self, acc: Any) -> Any:
        return self.fn.extract_output(acc)

    def teardown(self) -> None:
        self.fn.teardown()


class FoldBundleFn(beam.DoFn):
    """Every element of a bundle folded into one accumulator of ``fn``, emitted at its end
    (in the global window: the graph has no other)."""

    def __init__(self, fn: beam.CombineFn) -> None:
        self.fn = fn
        self.acc: Any = None

    def setup(self) -> None:
        self.fn.setup()

    def start_bundle(self) -> None:
        self.acc = None

    def process(self, element: Any) -> Iterator[Any]:
        if self.acc is None:
            self.acc = self.fn.create_accumulator()
        self.acc = self.fn.add_input(self.acc, element)
        return iter(())

    def finish_bundle(self) -> Iterator[WindowedValue]:
        if self.acc is not None:
            acc, self.acc = self.fn.compact(self.acc), None
            yield GlobalWindows.windowed_value(acc)

    def teardown(self) -> None:
        self.fn.teardown()


class CombineGloballyInBundles(beam.PTransform):
    """``CombineGlobally(fn)`` whose shuffle carries one accumulator per bundle, never the
    input elements (see the module docstring)."""

    def __init__(self, fn: beam.CombineFn) -> None:
        super().__init__()
        self.fn = fn

    def expand(self, pcoll: beam.PCollection) -> beam.PCollection:
        return (
            pcoll
            | "FoldEachBundle" >> beam.ParDo(FoldBundleFn(self.fn))
            | "MergeBundleResults" >> beam.CombineGlobally(MergeAccumulatorsFn(self.fn))
        )
