"""Wire the NDCL graph. ``build_graph`` adds one of the four graphs (``dedup``, ``cluster``,
``nd_cl``, ``cl_nd``) to a pipeline and never runs it; running belongs to
``beam_pipeline.run``.

Document text never crosses a stage boundary: the first read streams the input into compact
per-document features (uids, ids, exact hashes, LSH band hashes; no text, no signatures), the
decisions are made on those, and every later stage that needs text reads the input again,
fused with its consumer (``ReadSelected``: only the candidate documents for verification,
every document for the writer). Shape of the ND graph (element shapes in brackets):

    ReadDocuments            files → (batch_key, DocBatch) + rejected rows (ids made unique:
                             a GroupByKey on id hashes, repeats rejected as duplicate_id)
    ComputeFeatures          → (batch_key, FeatureBatch)      shingles, MinHash, band hashes
    CollectFieldTypes        → the output columns' types          (fused with the read)
    RemoveExactDuplicates    → exact members + their uids         (GroupByKey on the hash)
    FindCandidatePairs       → star edges                   (GroupByKey on LSH band hashes)
    FetchNodes               → (partition, [NodeInfo]) for every edge endpoint (a re-read of
                             just those documents, selected by a side input of their uids)
    VerifyCandidates         → verified edges (exact Jaccard / signature / none)
    ConnectedComponents      → (node, component) after unrolled large/small-star rounds
    ResolveDuplicates        → (batch_key, DuplicateRow) for every removed document
    WriteOutputs             → kept/, duplicates/, rejected/, _stats.json under staging_dir
                             (a re-read of the input, decisions joined as side inputs)

With clustering (the ``cluster``, ``nd_cl`` and ``cl_nd`` graphs), ``EmbedDocuments`` counts
terms for the document frequencies and the K-Means sample from one read (the first, or for ND→CL a
re-read of the kept documents) and projects a second re-read; ``ClusterDocuments`` labels
it, and only the labels (16 bytes a document) reach the writer. ``ReportFit`` writes the
K-Means fit summary (with the sample silhouettes) to ``_cluster_fit.json``, and
``SummariseClusters`` combines the writer's per-batch counts of kept documents per
(cluster_A, cluster_B, label) into sizes and NMI/ARI, written by ``ReportClusterStats`` to
``_cluster_stats.json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import apache_beam as beam

from beam_pipeline.config import ClusterConfig, DedupConfig
from transforms.batches import UidSetFn
from transforms.cluster import (
    BackendSpec,
    ClusterDocuments,
    Clustered,
    ClusterParams,
    LevelsConfig,
)
from transforms.cluster_stats import SummariseClusters
from transforms.combine import CombineGloballyInBundles
from transforms.components import ComponentsParams, ConnectedComponents
from transforms.embed import EmbedConfig, EmbedDocuments, EmbedParams
from transforms.exact import ExactParams, RemoveExactDuplicates
from transforms.lsh import FindCandidatePairs, LshParams, optimal_param, recall_floor_param
from transforms.minhash import ComputeFeatures, FeatureParams
from transforms.read import (
    ReadDocuments,
    ReadParams,
    ReadResult,
    Selection,
)
from transforms.reread import ReadSelected
from transforms.resolve import (
    ResolveDuplicates,
    ResolveParams,
    all_except,
    removed_uids,
)
from transforms.scope import ScopeByCluster, ScopeParams
from transforms.stage_end import (
    Measure,
    ReportStageEnd,
    StageEndParams,
    count_array,
    count_arrays,
    count_elements,
    count_keyed_arrays,
    count_keyed_batch,
    fit_counts,
    stats_counts,
)
from transforms.verify import (
    FetchNodes,
    FetchParams,
    NodeParams,
    VerifyCandidates,
    VerifyParams,
)
from transforms.write import FieldTypesFn, WriteJsonFn, WriteOutputs, WriteParams

# Written under the staging folder for the driver's summary (``beam_pipeline.run``).
CLUSTER_FIT_FILE = "_cluster_fit.json"
CLUSTER_STATS_FILE = "_cluster_stats.json"


@dataclass(frozen=True)
class Banding:
    bands: int
    rows: int


def choose_banding(cfg: DedupConfig) -> Banding:
    """Explicit ``bands``/``rows`` from the config, else derived from the threshold.

    With verification (``exact``, ``signature``) the banding reaches ``recall_floor`` at the
    threshold with the fewest false candidates: each costs one check, a missed pair is lost.
    With ``verify: none`` (or explicit weights) the weighted-area optimum: every candidate is
    then reported unchecked, so the floor's extra candidates below the threshold would be
    false duplicates (0.5 / 0.5 gives b = 25, r = 10 at 0.7).
    """
    if cfg.bands is not None and cfg.rows is not None:
        return Banding(cfg.bands, cfg.rows)
    weights = cfg.banding_weights()
    if weights is None:
        return Banding(*recall_floor_param(cfg.threshold, cfg.num_perm, cfg.recall_floor))
    return Banding(*optimal_param(cfg.threshold, cfg.num_perm, *weights))


@dataclass
class DedupParts:
    duplicate_rows: beam.PCollection  # (batch_key, DuplicateRow)
    stats: list[beam.PCollection]
    banding: Banding


def report_end(stage: str, template: str, singleton: bool = False,
               **outputs: tuple[beam.PCollection, Measure]) -> None:
    """Log ``stage``'s counts once its ``outputs`` are complete (``transforms.stage_end``):
    each keyword names one output and what one of its elements counts; ``singleton``: the one
    output is a global combine's result, logged where it is made."""
    label = "Report" + "".join(part.capitalize() for part in stage.split("_")) + "Ended"
    _ = ({name: pcoll for name, (pcoll, _measure) in outputs.items()}
         | label >> ReportStageEnd(StageEndParams(
             stage, template, tuple((name, measure) for name, (_pcoll, measure)
                                    in outputs.items()), singleton)))


def read_params(files: list[str], max_doc_bytes: int, batch_size: int,
                id_partitions: int = 32) -> ReadParams:
    return ReadParams(tuple(files), max_doc_bytes, batch_size, id_partitions)


def add_dedup(read: ReadResult, cfg: DedupConfig, files: list[str],
              scope_labels: beam.PCollection | None = None,
              scope: str = "cluster_A") -> DedupParts:
    """The ND engine on the first read's batches; with ``scope_labels`` (CL→ND) only
    documents of the same cluster are compared."""
    banding = choose_banding(cfg)
    parts = cfg.shuffle_partitions
    features = read.batches | "ComputeFeatures" >> ComputeFeatures(FeatureParams(
        cfg.ngram, cfg.num_perm, cfg.seed, cfg.tokenizer, (banding.bands, banding.rows)))
    feature_batches = features.features
    if scope_labels is not None:
        feature_batches = ({"features": feature_batches, "labels": scope_labels}
                           | "ScopeByCluster" >> ScopeByCluster(ScopeParams(scope, cfg.seed)))
    exact = feature_batches | "RemoveExactDuplicates" >> RemoveExactDuplicates(
        ExactParams(cfg.keep, cfg.batch_size, parts))
    candidates = (
        {"features": feature_batches, "removed": exact.removed}
        | "FindCandidatePairs" >> FindCandidatePairs(LshParams(
            banding.bands, banding.rows, cfg.seed, parts, cfg.max_bucket_size)))
    node_params = NodeParams(cfg.ngram, cfg.num_perm, cfg.seed, cfg.tokenizer, cfg.verify)
    partition_to_nodes = (
        {"edges": candidates.edges, "repeats": read.repeats}
        | "FetchNodes" >> FetchNodes(FetchParams(
            node_params, read_params(files, cfg.max_doc_bytes, cfg.batch_size), parts)))
    verified = ({"edges": candidates.edges, "nodes": partition_to_nodes}
                | "VerifyCandidates" >> VerifyCandidates(
                    VerifyParams(cfg.verify, cfg.threshold, parts, cfg.seed)))
    components = verified.edges | "ConnectedComponents" >> ConnectedComponents(
        ComponentsParams(cfg.cc_max_rounds, parts, cfg.seed))
    duplicate_rows = (
        {"labels": components.labels, "nodes": partition_to_nodes,
         "exact_members": exact.members}
        | "ResolveDuplicates" >> ResolveDuplicates(
            ResolveParams(cfg.keep, cfg.verify, cfg.batch_size, parts, cfg.seed)))
    report_end("compute_features", "{documents:,} documents hashed, {kept_untokenized:,} "
               "without a token (kept)",
               features=(features.features, partial(count_keyed_batch, "documents")),
               stats=(features.stats, stats_counts))
    report_end("exact", "{exact_duplicates:,} exact duplicates", singleton=True,
               removed=(exact.removed, partial(count_array, "exact_duplicates")))
    report_end("lsh", "{candidate_edges:,} candidate pairs",
               stats=(candidates.stats, stats_counts))
    report_end("verify", "{edges_verified:,} pairs verified, {edges_rejected:,} rejected",
               stats=(verified.stats, stats_counts))
    report_end("components", "{documents:,} documents in near-duplicate groups",
               labels=(components.labels, partial(count_arrays, "documents")))
    report_end("resolve", "{removed:,} documents to remove (exact and near duplicates)",
               rows=(duplicate_rows, partial(count_elements, "removed")))
    stats = [features.stats, candidates.stats, verified.stats, components.stats]
    return DedupParts(duplicate_rows, stats, banding)


def flatten_stats(stats: list[beam.PCollection]) -> beam.PCollection:
    """The stages' stats dicts as one PCollection, for the writer to sum."""
    return tuple(stats) | "FlattenStageStats" >> beam.Flatten()


def collect_field_types(read: ReadResult) -> beam.PCollection:
    """The output columns' unified types, combined while the first read streams."""
    return read.batches | "CollectFieldTypes" >> CombineGloballyInBundles(FieldTypesFn())


def add_clustering(statistics: beam.PCollection, read: ReadResult, selection: beam.PCollection,
                   params: ReadParams, cfg: ClusterConfig, spec: BackendSpec, run_id: str
                   ) -> Clustered:
    """Two K-Means levels: term statistics and the sample from ``statistics``, labels for the
    documents of ``selection``, read again by the projecting step."""
    embed_cfg = EmbedConfig(cfg.n_features, cfg.n_components, cfg.sample_size, cfg.seed,
                            cfg.tokenizer)
    levels = LevelsConfig(cfg.k1, cfg.k2, cfg.max_iter, cfg.tol, cfg.mode, cfg.balanced,
                          cfg.seed)
    embedded = ({"statistics": statistics, "repeats": read.repeats, "selection": selection}
                | "EmbedDocuments" >> EmbedDocuments(EmbedParams(embed_cfg, params)))
    return ({"embeddings": embedded.embeddings, "sample": embedded.sample, "svd": embedded.svd,
             "sample_terms": embedded.sample_terms}
            | "ClusterDocuments" >> ClusterDocuments(
                ClusterParams(spec, run_id, levels, cfg.n_features)))


def add_cluster_stats(contingency: beam.PCollection, cfg: ClusterConfig,
                      staging_dir: str) -> None:
    """Sizes and NMI/ARI of the kept documents' clusters → ``_cluster_stats.json``."""
    stats = contingency | "SummariseClusters" >> SummariseClusters(cfg.label_field or None)
    _ = stats | "ReportClusterStats" >> beam.ParDo(WriteJsonFn(staging_dir, CLUSTER_STATS_FILE))


def reread(read: ReadResult, selection: beam.PCollection, params: ReadParams, label: str
           ) -> beam.PCollection:
    """The documents of ``selection`` read again (``label`` names the step)."""
    return ({"repeats": read.repeats, "selection": selection}
            | label >> ReadSelected(params))


# What ``ndcl dedup``, ``ndcl cluster`` and ``ndcl run --workflow nd_cl|cl_nd`` build.
WORKFLOWS = ("nd_cl", "cl_nd")
GRAPHS = ("dedup", "cluster", *WORKFLOWS)


@dataclass(frozen=True)
class GraphPlan:
    """Everything one graph is built from. ``dedup`` also gives the read's parameters
    (document size cap, batch size, shuffle partitions) in a cluster-only graph; ``cluster``
    and ``spec`` are needed by the graphs that cluster."""

    graph: str
    files: tuple[str, ...]
    staging_dir: str
    dedup: DedupConfig
    cluster: ClusterConfig | None = None
    spec: BackendSpec | None = None
    run_id: str = ""
    dedup_scope: str = "cluster_A"

    def __post_init__(self) -> None:
        if self.graph not in GRAPHS:
            raise ValueError(f"graph must be one of {GRAPHS}, got {self.graph!r}")
        if self.graph != "dedup" and (self.cluster is None or self.spec is None):
            raise ValueError(f"the {self.graph} graph clusters: it needs a ClusterConfig and "
                             "a BackendSpec")


def build_graph(pipeline: beam.Pipeline, plan: GraphPlan) -> Banding | None:
    """The one builder: the same transforms composed into each of the four graphs (nothing
    built twice, no stand-in PCollections):

    - ``dedup``: near-duplicate removal only;
    - ``cluster``: two-level clustering of every readable document, none removed;
    - ``nd_cl``: global near-duplicate removal, then two-level clustering of the kept documents
      (read again, minus the removed uids: twice, for the statistics and for the labels);
    - ``cl_nd``: two-level clustering of every document (statistics from the first read,
      labels for a re-read), then near-duplicate removal inside each ``dedup_scope`` cluster
      (band and exact keys scoped by cluster).

    Returns the LSH banding of the graphs that remove near-duplicates.
    """
    cfg, files = plan.dedup, list(plan.files)
    params = read_params(files, cfg.max_doc_bytes, cfg.batch_size, cfg.shuffle_partitions)
    read = pipeline | "ReadDocuments" >> ReadDocuments(params)
    report_end("read", "{documents:,} documents read, {rejected:,} rejected",
               batches=(read.batches, partial(count_keyed_batch, "documents")),
               rejected=(read.rejected, partial(count_elements, "rejected")))
    dedup: DedupParts | None = None
    clusters: Clustered | None = None
    if plan.graph in ("dedup", "nd_cl"):
        dedup = add_dedup(read, cfg, files)
    if plan.graph == "nd_cl":
        kept = (dedup.duplicate_rows
                | "ListRemovedDocuments" >> beam.Map(removed_uids)
                | "CollectRemovedDocuments" >> CombineGloballyInBundles(UidSetFn())
                | "SelectKeptDocuments" >> beam.Map(all_except))
        clusters = add_clustering(reread(read, kept, params, "ReadKeptForStatistics"),
                                  read, kept, params, plan.cluster, plan.spec, plan.run_id)
    if plan.graph in ("cluster", "cl_nd"):
        every = pipeline | "SelectEveryDocumentToEmbed" >> beam.Create([Selection()])
        clusters = add_clustering(read.batches, read, every, params, plan.cluster, plan.spec,
                                  plan.run_id)
    if plan.graph == "cl_nd":
        dedup = add_dedup(read, cfg, files, clusters.labels, plan.dedup_scope)
    outputs = {"repeats": read.repeats, "field_types": collect_field_types(read),
               "rejected": read.rejected}
    stats = list(dedup.stats) if dedup else []
    if dedup:
        outputs["duplicates"] = dedup.duplicate_rows
    if clusters:
        report_end("cluster_fit", "K-Means level 1 and {models_B:,} level-2 models fitted on "
                   "a sample of {sample:,}", singleton=True, fit=(clusters.fit, fit_counts))
        report_end("cluster_labels", "{documents:,} documents labelled",
                   labels=(clusters.labels, partial(count_keyed_arrays, "documents")))
        stats.append(clusters.fit | "ReportFit" >> beam.ParDo(
            WriteJsonFn(plan.staging_dir, CLUSTER_FIT_FILE)))
        outputs["clusters"] = clusters.labels
    outputs["stats"] = flatten_stats(stats)
    label_field = plan.cluster.label_field if clusters else None
    written = outputs | "WriteOutputs" >> WriteOutputs(WriteParams(plan.staging_dir, params,
                                                                   label_field))
    report_end("write_outputs", "{kept:,} kept, {duplicates_exact:,} exact and "
               "{duplicates_near:,} near duplicates, {rejected:,} rejected written",
               singleton=True, totals=(written.totals, stats_counts))
    if clusters:
        add_cluster_stats(written.contingency, plan.cluster, plan.staging_dir)
    return dedup.banding if dedup else None


def build_dedup(pipeline: beam.Pipeline, cfg: DedupConfig, files: list[str],
                staging_dir: str) -> Banding:
    """``build_graph`` of the ``dedup`` graph (the CLI's call)."""
    return build_graph(pipeline, GraphPlan("dedup", tuple(files), staging_dir, cfg))


def build_cluster(pipeline: beam.Pipeline, cfg: ClusterConfig, files: list[str],
                  staging_dir: str, spec: BackendSpec, run_id: str,
                  max_doc_bytes: int, batch_size: int) -> None:
    """``build_graph`` of the ``cluster`` graph (the CLI's call)."""
    read_cfg = DedupConfig(max_doc_bytes=max_doc_bytes, batch_size=batch_size)
    build_graph(pipeline, GraphPlan("cluster", tuple(files), staging_dir, read_cfg, cfg, spec,
                                    run_id))


def build_pipeline(pipeline: beam.Pipeline, workflow: str, dedup_cfg: DedupConfig,
                   cluster_cfg: ClusterConfig, files: list[str], staging_dir: str,
                   spec: BackendSpec, run_id: str, dedup_scope: str = "cluster_A") -> Banding:
    """``build_graph`` of one ordering, ``nd_cl`` or ``cl_nd`` (the CLI's call)."""
    if workflow not in WORKFLOWS:
        raise ValueError(f"workflow must be one of {WORKFLOWS}, got {workflow!r}")
    return build_graph(pipeline, GraphPlan(workflow, tuple(files), staging_dir, dedup_cfg,
                                           cluster_cfg, spec, run_id, dedup_scope))
