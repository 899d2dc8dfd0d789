"""The one builder (``beam_pipeline.pipeline.build_graph``): which transforms each of the four
graphs holds, and the plan's checks. The graphs' outputs are checked byte for byte by
``tests/test_output_digests.py``."""

from __future__ import annotations

from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from beam_pipeline.config import ClusterConfig, DedupConfig
from beam_pipeline.pipeline import GRAPHS, GraphPlan, build_graph
from runners.kmeans.backend import connect_backend
from runners.options import describe_stages, pipeline_proto
from transforms.cluster import BackendSpec


def _plan(graph: str, tmp_path: Path) -> GraphPlan:
    source = tmp_path / "in.json"
    source.write_text('{"text": "one two three four five six"}\n')
    spec = BackendSpec(kind="local", model_dir=str(tmp_path / "models"), connect=connect_backend)
    return GraphPlan(graph, (str(source),), str(tmp_path / "stage"), DedupConfig(),
                     ClusterConfig(backend="local"), spec, "run-test")


def _top_level(graph: str, tmp_path: Path) -> tuple[set[str], set[str], object]:
    pipeline = beam.Pipeline(options=PipelineOptions([]))
    banding = build_graph(pipeline, _plan(graph, tmp_path))
    names = set(describe_stages(pipeline_proto(pipeline)))
    return {n.split("/")[0] for n in names}, names, banding


@pytest.mark.parametrize("graph", GRAPHS)
def test_each_graph_holds_what_it_does_and_nothing_else(graph: str, tmp_path: Path) -> None:
    top, names, banding = _top_level(graph, tmp_path)
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
