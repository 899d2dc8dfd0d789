"""The shape of the graphs ``beam_pipeline.pipeline.build_pipeline`` builds for both
orderings: stage names and shuffle counts, shared by the builder's tests
(``tests/beam_pipeline/test_pipeline.py``) and the Dataflow dry run's
(``tests/runners/dataflow/test_dry_run.py``)."""

from __future__ import annotations

from pathlib import Path

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from beam_pipeline.config import ClusterConfig, DedupConfig
from beam_pipeline.pipeline import build_pipeline
from runners.kmeans.backend import connect_backend
from transforms.cluster import BackendSpec

# --- the graph: stage names and shuffles of both orderings ------------------------------------


def _graph(workflow: str, tmp_path: Path, cc_max_rounds: int = DedupConfig().cc_max_rounds,
           options: PipelineOptions | None = None) -> beam.Pipeline:
    source = tmp_path / "in.json"
    source.write_text('{"text": "one two three four five six"}\n')
    pipeline = beam.Pipeline(options=options or PipelineOptions([]))
    build_pipeline(pipeline, workflow, DedupConfig(cc_max_rounds=cc_max_rounds),
                   ClusterConfig(backend="local"), [str(source)], str(tmp_path / "stage"),
                   BackendSpec(kind="local", model_dir=str(tmp_path / "models"),
                               connect=connect_backend), "run-test")
    return pipeline


COMMON_STAGES = ["ReadDocuments", "ComputeFeatures", "RemoveExactDuplicates",
                 "FindCandidatePairs", "FetchNodes", "VerifyCandidates", "ConnectedComponents",
                 "ResolveDuplicates", "EmbedDocuments", "ClusterDocuments", "ReportFit",
                 "CollectFieldTypes", "FlattenStageStats", "WriteOutputs", "SummariseClusters",
                 "ReportClusterStats",
                 # Each stage logs its count when it ends (transforms.stage_end): no shuffle.
                 "ReportReadEnded", "ReportComputeFeaturesEnded", "ReportExactEnded",
                 "ReportLshEnded", "ReportVerifyEnded", "ReportComponentsEnded",
                 "ReportResolveEnded", "ReportClusterFitEnded", "ReportClusterLabelsEnded",
                 "ReportWriteOutputsEnded"]
# Issue 11 (no document text crosses a stage boundary): the field types are combined next to
# the first read (CollectFieldTypes) and the stage stats flattened before the writer; the
# ordering-specific steps re-read the input (ReadSelected) instead of joining batches:
# nd_cl selects the kept documents by the removed uids and reads them twice (statistics, then
# labels); cl_nd takes the statistics from the first read and re-reads every document for
# the labels (SelectKept, the join of document batches with duplicate rows, is gone).
ND_CL_STAGES = ["ListRemovedDocuments", "CollectRemovedDocuments", "SelectKeptDocuments",
                "ReadKeptForStatistics"]
CL_ND_STAGES = ["SelectEveryDocumentToEmbed", "ScopeByCluster"]
# Shuffles outside the connected-components rounds, shared by both orderings (26):
# - read: Reshuffle of the file list + the id hashes that find repeated ids (2);
# - CollectFieldTypes (1; it used to be inside WriteOutputs);
# - exact: the hash groups + the combine of the removed uids (2; no join of decisions with
#   the feature batches any more: banding drops the removed uids itself);
# - LSH: one GroupByKey of the band keys per band group (4, lsh.BAND_GROUPS; the default
#   banding has more than 4 bands) + the merge of the edges found by the groups (1): 5;
# - FetchNodes: the combine of the endpoint uids + the Reshuffle of its re-read's file list
#   (2; it used to join requested uids with the document batches);
# - verification 2 joins, resolve 3;
# - embedding: 3 combines (document frequencies, the bottom-k sample, the sample's words for
#   the clusters' top terms) + the Reshuffle of the re-read that projects (4; the projecting
#   step reads its documents itself, in both orderings);
# - WriteOutputs: the Reshuffle of its re-read's file list, rejected rows, stats sum (3; the
#   duplicate rows are a side input now, no join with the document batches);
# - 1 combine of the cluster-quality counts;
# - connected components: the gathering of what the rounds left unconverged (1; it carries
#   nothing when the rounds converged).
FIXED_SHUFFLES = 26
# Two per unrolled connected-components round (large star, small star).
CC_SHUFFLES = 2 * DedupConfig().cc_max_rounds
# The ordering's own shuffles. nd_cl: the combine of the removed uids and the Reshuffle of
# its re-read for the statistics (2; was the SelectKept join). cl_nd: the ScopeByCluster join.
ORDERING_SHUFFLES = {"nd_cl": 2, "cl_nd": 1}
ORDERING_GROUP_BY_KEYS = {
    "nd_cl": {"CollectRemovedDocuments/MergeBundleResults/CombinePerKey/GroupByKey",
              "ReadKeptForStatistics/SpreadFilesAgain/ReshufflePerKey/GroupByKey"},
    "cl_nd": {"ScopeByCluster/JoinClusterLabels/GroupTagged"},
}
