"""The graph builder (``beam_pipeline.pipeline``): the banding it chooses, which transforms
each of the four graphs holds and the plan's checks, and the stage names and shuffles of both
orderings. The graphs' outputs are checked byte for byte by
``tests/end_to_end/test_output_digests.py``."""

from __future__ import annotations

from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability import common_urns
from apache_beam.portability.api import beam_runner_api_pb2

from beam_pipeline.config import ClusterConfig, DedupConfig
from beam_pipeline.pipeline import GRAPHS, Banding, GraphPlan, build_graph, choose_banding
from runners.kmeans.backend import connect_backend
from runners.options import count_group_by_keys, describe_stages, group_by_key_names, pipeline_proto
from tests.graphs import (
    CC_SHUFFLES,
    CL_ND_STAGES,
    COMMON_STAGES,
    FIXED_SHUFFLES,
    ND_CL_STAGES,
    ORDERING_GROUP_BY_KEYS,
    ORDERING_SHUFFLES,
    _graph,
)
from tests.reference import objective
from transforms.cluster import BackendSpec
from transforms.lsh import BAND_GROUPS, RECALL_FLOOR, detection_probability, recall_floor_param


def _plan(graph: str, tmp_path: Path) -> GraphPlan:
    source = tmp_path / "in.json"
    source.write_text('{"text": "one two three four five six"}\n')
    spec = BackendSpec(kind="local", model_dir=str(tmp_path / "models"), connect=connect_backend)
    return GraphPlan(graph, (str(source),), str(tmp_path / "stage"), DedupConfig(),
                     ClusterConfig(backend="local"), spec, "run-test")


def _top_level_of(graph: str, tmp_path: Path) -> tuple[set[str], set[str], object]:
    pipeline = beam.Pipeline(options=PipelineOptions([]))
    banding = build_graph(pipeline, _plan(graph, tmp_path))
    names = set(describe_stages(pipeline_proto(pipeline)))
    return {n.split("/")[0] for n in names}, names, banding


@pytest.mark.parametrize("graph", GRAPHS)
def test_each_graph_holds_what_it_does_and_nothing_else(graph: str, tmp_path: Path) -> None:
    top, names, banding = _top_level_of(graph, tmp_path)
    removes = graph != "cluster"
    clusters = graph != "dedup"
    assert {"ReadDocuments", "CollectFieldTypes", "WriteOutputs"} <= top
    assert ("ConnectedComponents" in top) == removes
    assert ("EmbedDocuments" in top and "ClusterDocuments" in top) == clusters
    assert ("SummariseClusters" in top) == clusters
    # A cluster-only graph has no duplicate rows at all, not an empty stand-in for them.
    assert any(n.startswith("WriteOutputs/PackDuplicateRows") for n in names) == removes
    assert "NoDuplicates" not in top
    assert (banding is not None) == removes


def test_plan_checks_its_graph_and_what_clustering_needs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="graph must be one of"):
        GraphPlan("nd-cl", (), str(tmp_path), DedupConfig())
    with pytest.raises(ValueError, match="needs a ClusterConfig and a BackendSpec"):
        GraphPlan("cluster", (), str(tmp_path), DedupConfig())
    assert GraphPlan("dedup", (), str(tmp_path), DedupConfig()).cluster is None


def false_positive_area(bands: int, rows: int, threshold: float) -> float:
    return objective(bands, rows, threshold, 1.0, 0.0)


@pytest.mark.parametrize("threshold", [0.5, 0.6, 0.7, 0.8, 0.9])
def test_default_banding_reaches_the_recall_floor(threshold: float) -> None:
    """With verification the default b and r detect a pair at the threshold with probability
    at least the floor, and no banding that does has a smaller false-positive area."""
    cfg = DedupConfig(threshold=threshold)
    banding = choose_banding(cfg)
    assert cfg.recall_floor == RECALL_FLOOR == 0.995
    assert banding.bands * banding.rows <= cfg.num_perm
    assert float(detection_probability(threshold, banding.bands, banding.rows)) >= 0.995
    area = false_positive_area(banding.bands, banding.rows, threshold)
    for rows in range(1, cfg.num_perm + 1):
        for bands in range(1, cfg.num_perm // rows + 1):
            if float(detection_probability(threshold, bands, rows)) >= 0.995:
                assert area <= false_positive_area(bands, rows, threshold) + 1e-9, (bands, rows)


def test_banding_rules() -> None:
    assert choose_banding(DedupConfig()) == Banding(29, 5)
    # Without verification every candidate is reported: the weighted areas, 0.5 / 0.5.
    assert choose_banding(DedupConfig(verify="none")) == Banding(25, 10)
    # Explicit weights and explicit b, r still win (0.1 / 0.9 was the default before the floor).
    assert choose_banding(DedupConfig(fp_weight=0.1, fn_weight=0.9)) == Banding(32, 8)
    assert choose_banding(DedupConfig(bands=32, rows=8)) == Banding(32, 8)
    # A lower floor: a steeper curve (P(0.7) = 0.90), fewer candidates below the threshold.
    assert choose_banding(DedupConfig(recall_floor=0.9)) == Banding(27, 7)
    assert recall_floor_param(0.7, 64) == (13, 3)
    # A floor no banding reaches: the highest P(threshold).
    assert recall_floor_param(0.7, 2) == (2, 1)


def _top_level(names: list[str]) -> list[str]:
    return [n for n in names if "/" not in n]


def test_stage_names_of_both_orderings(tmp_path: Path) -> None:
    nd_cl = describe_stages(pipeline_proto(_graph("nd_cl", tmp_path)))
    cl_nd = describe_stages(pipeline_proto(_graph("cl_nd", tmp_path)))
    for names in (nd_cl, cl_nd):
        assert set(COMMON_STAGES) <= set(_top_level(names))
        assert "ConnectedComponents/GroupLargeStar1" in names
        assert f"ConnectedComponents/GroupSmallStar{DedupConfig().cc_max_rounds}" in names
        assert "ConnectedComponents/GatherUnconverged" in names
        assert "ClusterDocuments/PredictClusters" in names  # RunInference
        assert any(n.startswith("ClusterDocuments/PredictClusters/") for n in names)
        assert "EmbedDocuments/FitSvd" in names
        # Verification and the writer re-read the input themselves (ReadSelected).
        assert "FetchNodes/ReadCandidateDocuments/ParseSelected" in names
        assert "WriteOutputs/ReadAndWriteKeptAndDuplicates/ParseAndConsume" in names
        assert "EmbedDocuments/ReadAndProject/ParseAndConsume" in names
    assert set(_top_level(nd_cl)) == set(COMMON_STAGES) | set(ND_CL_STAGES)
    assert set(_top_level(cl_nd)) == set(COMMON_STAGES) | set(CL_ND_STAGES)
    assert "ReadKeptForStatistics/ParseSelected" in nd_cl
    # The orderings: ND before embedding in nd_cl, embedding before ND in cl_nd.
    top_nd, top_cl = _top_level(nd_cl), _top_level(cl_nd)
    assert top_nd.index("ResolveDuplicates") < top_nd.index("CollectRemovedDocuments") < \
        top_nd.index("ReadKeptForStatistics") < top_nd.index("EmbedDocuments")
    assert top_cl.index("SelectEveryDocumentToEmbed") < top_cl.index("EmbedDocuments") < \
        top_cl.index("ClusterDocuments") < top_cl.index("ComputeFeatures") < \
        top_cl.index("ScopeByCluster") < top_cl.index("RemoveExactDuplicates")
    assert not any(n.startswith("ref_AppliedPTransform") for n in nd_cl)


def _side_input_consumers(proto: beam_runner_api_pb2.Pipeline) -> dict[str, str]:
    """``ParDo with side inputs → the producer of its main input`` (unique names)."""
    transforms = proto.components.transforms
    producer = {pc: t.unique_name for t in transforms.values() if not t.subtransforms
                for pc in t.outputs.values()}
    found = {}
    for t in transforms.values():
        if t.spec.urn != common_urns.primitives.PAR_DO.urn:
            continue
        payload = beam_runner_api_pb2.ParDoPayload.FromString(t.spec.payload)
        if payload.side_inputs:
            main = [pc for tag, pc in t.inputs.items() if tag not in payload.side_inputs]
            found[t.unique_name] = producer[main[0]]
    return found


def test_no_step_with_side_inputs_waits_on_document_text(tmp_path: Path) -> None:
    """Beam's portable fusion starts a new stage at every ParDo with side inputs, and Flink
    holds its main input until the side inputs are ready: none may be fed the batches of a
    read (text) or their term counts; the writer and the projection read their documents in
    the step that has the side inputs, which then hold back file names only."""
    for workflow in ("nd_cl", "cl_nd"):
        consumers = _side_input_consumers(pipeline_proto(_graph(workflow, tmp_path)))
        # Text, or per-document term counts (about as large).
        bulky = ("ParseFiles", "ParseSelected", "ParseAndConsume", "CountTerms")
        waiting = {c for c, p in consumers.items() if p.split("/")[-1] in bulky}
        # The one exception, known: the embeddings (512 bytes a document) wait for the K-Means
        # fit, which needs only the sample and the SVD, so what waits is what the projection
        # made while the fit ran, not the corpus.
        assert waiting == {"ClusterDocuments/WaitForModels"}
        for step in ("WriteOutputs/ReadAndWriteKeptAndDuplicates", "EmbedDocuments/ReadAndProject"):
            (fed,) = [p for c, p in consumers.items() if c.startswith(f"{step}/ParseAndConsume")]
            assert fed.startswith(f"{step}/SpreadFilesAgain/")


def test_group_by_key_counts_are_stable_and_differ_only_in_the_ordering_steps(
        tmp_path: Path) -> None:
    protos = {wf: pipeline_proto(_graph(wf, tmp_path)) for wf in ("nd_cl", "cl_nd")}
    counts = {wf: count_group_by_keys(p) for wf, p in protos.items()}
    # The rounds x (large star + small star) + the fixed shuffles + the ordering's own.
    assert counts == {wf: FIXED_SHUFFLES + ORDERING_SHUFFLES[wf] + CC_SHUFFLES for wf in protos}
    names = {wf: set(group_by_key_names(p)) for wf, p in protos.items()}
    assert choose_banding(DedupConfig()).bands >= BAND_GROUPS
    lsh = {f"FindCandidatePairs/GroupBandKeys{g}" for g in range(BAND_GROUPS)}
    assert {n for n in names["nd_cl"] if n.startswith("FindCandidatePairs/")} == \
        lsh | {"FindCandidatePairs/GroupCandidateEdges"}
    assert names["nd_cl"] - names["cl_nd"] == ORDERING_GROUP_BY_KEYS["nd_cl"]
    assert names["cl_nd"] - names["nd_cl"] == ORDERING_GROUP_BY_KEYS["cl_nd"]
    assert not any("JoinDuplicateRows" in n or "JoinRequestedDocuments" in n
                   or "JoinExactDecisions" in n for wf in names for n in names[wf])
    # Stable: a rebuild gives the same graph; fewer CC rounds remove exactly 2 per round.
    again = pipeline_proto(_graph("cl_nd", tmp_path))
    assert describe_stages(again) == describe_stages(protos["cl_nd"])
    assert count_group_by_keys(pipeline_proto(_graph("cl_nd", tmp_path, cc_max_rounds=4))) \
        == FIXED_SHUFFLES + ORDERING_SHUFFLES["cl_nd"] + 8
