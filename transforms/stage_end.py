"""Each stage logs its count when it ends, while the job runs (``ndcl.progress`` logger):

    stage compute_features ended: 1,308 documents
    stage verify ended: 512 pairs verified, 31 rejected

A stage has ended when its output PCollection is complete, and in Beam only a step that
waits for the whole of that output knows this: :class:`ReportStageEnd` measures each element
of the stage's outputs (a dict of counts, e.g. the documents of a batch), sums them per bundle
where they are made, and hands the per-bundle sums as a side input to one logging step; every
runner gives a side input only once it is complete. The line is written by the worker that
runs that step: in the driver's log for the in-process runner, Prism and an embedded Flink at
parallelism 1 (threads of the driver); a worker process the driver started (an embedded
Flink at parallelism > 1, ``--direct_running_mode=multi_processing``) configures no logging,
so it hands the line to the driver through the relay folder of ``transforms.progress`` (all
checked by tests); elsewhere, in the workers' logs (Dataflow). A stage with an empty output
still logs its zeros.

The driver's end-of-job lines (``beam_pipeline.progress.log_stage_counts``) add each stage's
processing seconds, which only the job's metrics give.
"""

from __future__ import annotations

import logging
import string
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import apache_beam as beam

from transforms.combine import FoldBundleFn
from transforms.progress import relay_line

LOG = logging.getLogger("ndcl.progress")

Counts = dict[str, int]
Measure = Callable[[Any], Counts]


# --------------------------------------------------------------------------------------------
# Pure: measures of one element, sums, the line
# --------------------------------------------------------------------------------------------


def count_elements(name: str, _element: Any) -> Counts:
    """One per element (a dead-letter row, a duplicate row)."""
    return {name: 1}


def count_keyed_batch(name: str, element: tuple[Any, Any]) -> Counts:
    """The documents of a ``(batch_key, DocBatch | FeatureBatch)`` element."""
    return {name: len(element[1].uids)}


def count_keyed_arrays(name: str, element: tuple[Any, tuple[Any, ...]]) -> Counts:
    """The rows of a ``(batch_key, (uids, ...))`` element (labels, embeddings)."""
    return {name: len(element[1][0])}


def count_arrays(name: str, arrays: tuple[Any, ...]) -> Counts:
    """The rows of a ``(uids, ...)`` tuple of parallel arrays (edges, component labels)."""
    return {name: len(arrays[0])}


def count_array(name: str, array: Any) -> Counts:
    """The length of one array (a sorted uid set)."""
    return {name: len(array)}


def stats_counts(stats: Any) -> Counts:
    """The integer figures of a stage's stats dict (other stats elements count nothing)."""
    if not isinstance(stats, dict):
        return {}
    return {key: int(value) for key, value in stats.items()
            if isinstance(value, int) or hasattr(value, "__index__")}


def fit_counts(summary: dict[str, Any]) -> Counts:
    """What a two-level K-Means fit summary counts: its sample and its level-2 models."""
    return {"sample": int(summary.get("sample", 0)), "models_B": len(summary.get("B") or {})}


def add_counts(total: Counts, counts: Counts) -> Counts:
    for key, value in counts.items():
        total[key] = total.get(key, 0) + int(value)
    return total


class _ZeroForMissing(dict):
    def __missing__(self, key: str) -> int:
        return 0


def stage_end_line(stage: str, template: str, counts: Counts) -> str:
    """``stage verify ended: 512 pairs verified, 31 rejected`` (absent counts are 0)."""
    return f"stage {stage} ended: " + string.Formatter().vformat(
        template, (), _ZeroForMissing(counts))


# --------------------------------------------------------------------------------------------
# Beam
# --------------------------------------------------------------------------------------------


class SumCountsFn(beam.CombineFn):
    """Key-wise sums of count dicts."""

    def create_accumulator(self) -> Counts:
        return {}

    def add_input(self, acc: Counts, counts: Counts) -> Counts:
        return add_counts(acc, counts)

    def merge_accumulators(self, accs: Iterable[Counts]) -> Counts:
        total: Counts = {}
        for acc in accs:
            add_counts(total, acc)
        return total

    def extract_output(self, acc: Counts) -> Counts:
        return dict(sorted(acc.items()))


def log_stage_end(_start: None, bundle_sums: list[Counts], stage: str, template: str
                  ) -> Counts:
    fn = SumCountsFn()
    counts = fn.extract_output(fn.merge_accumulators(bundle_sums))
    _log(stage_end_line(stage, template, counts))
    return counts


def _log_one(element: Any, measure: Measure, stage: str, template: str) -> Counts:
    counts = measure(element)
    _log(stage_end_line(stage, template, counts))
    return counts


def _log(line: str) -> None:
    # A worker process's own logging goes nowhere the user looks; its driver relays the line.
    if not relay_line(line):
        LOG.info("%s", line)


@dataclass(frozen=True)
class StageEndParams:
    """``stage``: its name (as in the summary's ``stage_seconds``); ``template``: the line's
    figures, ``str.format`` fields named by the counts; ``measures``: for each named input
    (a key of the mapping :class:`ReportStageEnd` takes), what one element counts."""

    stage: str
    template: str
    measures: tuple[tuple[str, Measure], ...]
    # The one input has exactly one element, made once the stage is complete (the result of a
    # global combine): it is measured and logged where it is made, with no step of its own.
    singleton: bool = False


class ReportStageEnd(beam.PTransform):
    """``{input name: PCollection}`` (the stage's outputs) → the summed counts (one dict),
    logged once every input is complete.

    Each bundle's counts are folded where they are made (fused with the stage's last step),
    and the per-bundle sums reach one logging step as a side input, which a runner hands over
    only once complete: no shuffle, which made the reports cheaper to start than a global
    combine each (measured by hand on the demo corpus; see the README's Progress section)."""

    def __init__(self, params: StageEndParams) -> None:
        super().__init__()
        self.params = params

    def expand(self, outputs: dict[str, beam.PCollection]) -> beam.PCollection:
        params = self.params
        if params.singleton:
            (name, measure), = params.measures
            return outputs[name] | "LogStageEnd" >> beam.Map(
                _log_one, measure, params.stage, params.template)
        pipeline = next(iter(outputs.values())).pipeline
        measured = [outputs[name] | f"Measure{_camel(name)}" >> beam.Map(measure)
                    for name, measure in params.measures]
        sums = (measured
                | "FlattenCounts" >> beam.Flatten()
                | "SumEachBundle" >> beam.ParDo(FoldBundleFn(SumCountsFn())))
        return (
            pipeline
            | "StartReport" >> beam.Create([None])
            | "LogStageEnd" >> beam.Map(log_stage_end, beam.pvalue.AsList(sums), params.stage,
                                        params.template)
        )


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))
