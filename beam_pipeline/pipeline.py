"""Wire the NDCL graph. ``build_dedup`` adds the near-duplicate (ND) engine to a pipeline and
never runs it; running belongs to ``beam_pipeline.run``.

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

With clustering (``build_cluster``, ``build_pipeline``), ``EmbedDocuments`` counts terms for
the document frequencies and the K-Means sample from one read (the first, or for ND→CL a
re-read of the kept documents) and projects a second re-read; ``ClusterDocuments`` labels
it, and only the labels (16 bytes a document) reach the writer. ``ReportFit`` writes the
K-Means fit summary (with the sample silhouettes) to ``_cluster_fit.json``, and
``SummariseClusters`` combines the writer's per-batch counts of kept documents per
(cluster_A, cluster_B, label) into sizes and NMI/ARI, written by ``ReportClusterStats`` to
``_cluster_stats.json``.
"""

from __future__ import annotations

from dataclasses import dataclass

import apache_beam as beam

from beam_pipeline.config import ClusterConfig, DedupConfig
from transforms.batches import UidSetFn
from transforms.cluster import BackendSpec, ClusterDocuments, LevelsConfig
from transforms.cluster_stats import SummariseClusters
from transforms.combine import CombineGloballyInBundles
from transforms.components import STATS_TAG as CC_STATS_TAG
from transforms.components import ConnectedComponents
from transforms.embed import EmbedConfig, EmbedDocuments
from transforms.exact import RemoveExactDuplicates
from transforms.lsh import FindCandidatePairs, optimal_param
from transforms.minhash import ComputeFeatures
from transforms.read import (
    REJECTED_TAG,
    ReadDocuments,
    ReadParams,
    ReadResult,
    Selection,
)
from transforms.reread import ReadSelected
from transforms.resolve import (
    DuplicateRow,
    ResolveDuplicates,
    ResolveParams,
    all_except,
    removed_uids,
)
from transforms.scope import ScopeByCluster
from transforms.verify import FetchNodes, NodeParams, VerifyCandidates, VerifyParams
from transforms.write import FieldTypesFn, WriteJsonFn, WriteOutputs, WriteParams

# Written under the staging folder for the driver's summary (``beam_pipeline.run``).
CLUSTER_FIT_FILE = "_cluster_fit.json"
CLUSTER_STATS_FILE = "_cluster_stats.json"


@dataclass(frozen=True)
class Banding:
    bands: int
    rows: int


def choose_banding(cfg: DedupConfig) -> Banding:
    """Explicit ``bands``/``rows`` from the config, else the optimum for the threshold."""
    if cfg.bands is not None and cfg.rows is not None:
        return Banding(cfg.bands, cfg.rows)
    bands, rows = optimal_param(cfg.threshold, cfg.num_perm, *cfg.banding_weights())
    return Banding(bands, rows)


@dataclass
class DedupParts:
    duplicate_rows: beam.PCollection  # (batch_key, DuplicateRow)
    stats: list[beam.PCollection]
    banding: Banding


def read_params(files: list[str], max_doc_bytes: int, batch_size: int) -> ReadParams:
    return ReadParams(tuple(files), max_doc_bytes, batch_size)


def add_dedup(read: ReadResult, cfg: DedupConfig, files: list[str],
              scope_labels: beam.PCollection | None = None,
              scope: str = "cluster_A") -> DedupParts:
    """The ND engine on the first read's batches; with ``scope_labels`` (CL→ND) only
    documents of the same cluster are compared."""
    banding = choose_banding(cfg)
    parts = cfg.shuffle_partitions
    features = read.batches | "ComputeFeatures" >> ComputeFeatures(
        cfg.ngram, cfg.num_perm, cfg.seed, tokenizer=cfg.tokenizer,
        banding=(banding.bands, banding.rows))
    feature_batches = features.features
    if scope_labels is not None:
        feature_batches = ({"features": feature_batches, "labels": scope_labels}
                           | "ScopeByCluster" >> ScopeByCluster(scope, cfg.seed))
    exact = feature_batches | "RemoveExactDuplicates" >> RemoveExactDuplicates(
        cfg.keep, cfg.batch_size, parts)
    candidates = (
        {"features": feature_batches, "removed": exact.removed}
        | "FindCandidatePairs" >> FindCandidatePairs(
            banding.bands, banding.rows, cfg.seed, parts, cfg.max_bucket_size))
    node_params = NodeParams(cfg.ngram, cfg.num_perm, cfg.seed, cfg.tokenizer, cfg.verify)
    partition_to_nodes = (
        {"edges": candidates.edges, "repeats": read["repeats"]}
        | "FetchNodes" >> FetchNodes(
            node_params, read_params(files, cfg.max_doc_bytes, cfg.batch_size), parts))
    verified = ({"edges": candidates.edges, "nodes": partition_to_nodes}
                | "VerifyCandidates" >> VerifyCandidates(
                    VerifyParams(cfg.verify, cfg.threshold, parts, cfg.seed)))
    components = verified.edges | "ConnectedComponents" >> ConnectedComponents(
        cfg.cc_max_rounds, parts, cfg.seed)
    duplicate_rows = (
        {"labels": components["labels"], "nodes": partition_to_nodes,
         "exact_members": exact.members}
        | "ResolveDuplicates" >> ResolveDuplicates(
            ResolveParams(cfg.keep, cfg.verify, cfg.batch_size, parts, cfg.seed)))
    stats = [features.stats, candidates.stats, verified.stats, components[CC_STATS_TAG]]
    return DedupParts(duplicate_rows, stats, banding)


def flatten_stats(stats: list[beam.PCollection]) -> beam.PCollection:
    """The stages' stats dicts as one PCollection, for the writer to sum."""
    return tuple(stats) | "FlattenStageStats" >> beam.Flatten()


def collect_field_types(read: ReadResult) -> beam.PCollection:
    """The output columns' unified types, combined while the first read streams."""
    return read.batches | "CollectFieldTypes" >> CombineGloballyInBundles(FieldTypesFn())


def build_dedup(
    pipeline: beam.Pipeline, cfg: DedupConfig, files: list[str], staging_dir: str
) -> Banding:
    """Add the ND graph reading ``files`` and writing under ``staging_dir``; returns b and r."""
    read = pipeline | "ReadDocuments" >> ReadDocuments(files, cfg.max_doc_bytes, cfg.batch_size,
                                                       cfg.shuffle_partitions)
    field_types = collect_field_types(read)
    dedup = add_dedup(read, cfg, files)
    _ = (
        {"repeats": read["repeats"], "field_types": field_types,
         "duplicates": dedup.duplicate_rows, "rejected": read[REJECTED_TAG],
         "stats": flatten_stats(dedup.stats)}
        | "WriteOutputs" >> WriteOutputs(WriteParams(
            staging_dir, read_params(files, cfg.max_doc_bytes, cfg.batch_size)))
    )
    return dedup.banding


def add_clustering(statistics: beam.PCollection, read: ReadResult, selection: beam.PCollection,
                   params: ReadParams, cfg: ClusterConfig, spec: BackendSpec, run_id: str
                   ) -> dict[str, beam.PCollection]:
    """Two K-Means levels: term statistics and the sample from ``statistics``, labels for the
    documents of ``selection``, read again by the projecting step: ``{"labels": (batch_key,
    (uids, cluster_A, cluster_B)), "fit": summary, "svd": SvdModel}``."""
    embed_cfg = EmbedConfig(cfg.n_features, cfg.n_components, cfg.sample_size, cfg.seed,
                            cfg.tokenizer)
    levels = LevelsConfig(cfg.k1, cfg.k2, cfg.max_iter, cfg.tol, cfg.mode, cfg.balanced,
                          cfg.seed)
    embedded = ({"statistics": statistics, "repeats": read["repeats"], "selection": selection}
                | "EmbedDocuments" >> EmbedDocuments(embed_cfg, params))
    clustered = embedded | "ClusterDocuments" >> ClusterDocuments(spec, run_id, levels,
                                                                   cfg.n_features)
    return {"labels": clustered["labels"], "fit": clustered["fit"], "svd": embedded["svd"]}


def add_cluster_stats(contingency: beam.PCollection, cfg: ClusterConfig,
                      staging_dir: str) -> None:
    """Sizes and NMI/ARI of the kept documents' clusters → ``_cluster_stats.json``."""
    stats = contingency | "SummariseClusters" >> SummariseClusters(cfg.label_field or None)
    _ = stats | "ReportClusterStats" >> beam.ParDo(WriteJsonFn(staging_dir, CLUSTER_STATS_FILE))


def reread(read: ReadResult, selection: beam.PCollection, params: ReadParams, label: str
           ) -> beam.PCollection:
    """The documents of ``selection`` read again (``label`` names the step)."""
    return ({"repeats": read["repeats"], "selection": selection}
            | label >> ReadSelected(params))


def build_cluster(pipeline: beam.Pipeline, cfg: ClusterConfig, files: list[str],
                  staging_dir: str, spec: BackendSpec, run_id: str,
                  max_doc_bytes: int, batch_size: int) -> None:
    """Add the CL-only graph: every readable document is kept with its cluster labels."""
    read = pipeline | "ReadDocuments" >> ReadDocuments(files, max_doc_bytes, batch_size)
    params = read_params(files, max_doc_bytes, batch_size)
    every = pipeline | "SelectEveryDocumentToEmbed" >> beam.Create([Selection()])
    clusters = add_clustering(read.batches, read, every, params, cfg, spec, run_id)
    no_duplicates = pipeline | "NoDuplicates" >> beam.Create([]).with_output_types(
        tuple[int, DuplicateRow])
    fit_report = clusters["fit"] | "ReportFit" >> beam.ParDo(
        WriteJsonFn(staging_dir, CLUSTER_FIT_FILE))
    written = (
        {"repeats": read["repeats"],
         "field_types": collect_field_types(read), "duplicates": no_duplicates,
         "rejected": read[REJECTED_TAG], "stats": flatten_stats([fit_report]),
         "clusters": clusters["labels"]}
        | "WriteOutputs" >> WriteOutputs(WriteParams(staging_dir, params, cfg.label_field))
    )
    add_cluster_stats(written.contingency, cfg, staging_dir)


WORKFLOWS = ("nd_cl", "cl_nd")


def build_pipeline(pipeline: beam.Pipeline, workflow: str, dedup_cfg: DedupConfig,
                   cluster_cfg: ClusterConfig, files: list[str], staging_dir: str,
                   spec: BackendSpec, run_id: str, dedup_scope: str = "cluster_A") -> Banding:
    """Both orderings from the same transforms (nothing is built twice):

    - ``nd_cl``: global near-duplicate removal, then two-level clustering of the kept documents
      (read again, minus the removed uids: twice, for the statistics and for the labels);
    - ``cl_nd``: two-level clustering of every document (statistics from the first read,
      labels for a re-read), then near-duplicate removal inside each ``dedup_scope`` cluster
      (band and exact keys scoped by cluster).
    """
    if workflow not in WORKFLOWS:
        raise ValueError(f"workflow must be one of {WORKFLOWS}, got {workflow!r}")
    read = pipeline | "ReadDocuments" >> ReadDocuments(files, dedup_cfg.max_doc_bytes,
                                                       dedup_cfg.batch_size,
                                                       dedup_cfg.shuffle_partitions)
    params = read_params(files, dedup_cfg.max_doc_bytes, dedup_cfg.batch_size)
    if workflow == "nd_cl":
        dedup = add_dedup(read, dedup_cfg, files)
        kept = (dedup.duplicate_rows
                | "ListRemovedDocuments" >> beam.Map(removed_uids)
                | "CollectRemovedDocuments" >> CombineGloballyInBundles(UidSetFn())
                | "SelectKeptDocuments" >> beam.Map(all_except))
        clusters = add_clustering(reread(read, kept, params, "ReadKeptForStatistics"),
                                  read, kept, params, cluster_cfg, spec, run_id)
    else:
        every = pipeline | "SelectEveryDocumentToEmbed" >> beam.Create([Selection()])
        clusters = add_clustering(read.batches, read, every, params, cluster_cfg, spec,
                                  run_id)
        dedup = add_dedup(read, dedup_cfg, files, clusters["labels"], dedup_scope)
    fit_report = clusters["fit"] | "ReportFit" >> beam.ParDo(
        WriteJsonFn(staging_dir, CLUSTER_FIT_FILE))
    written = (
        {"repeats": read["repeats"],
         "field_types": collect_field_types(read), "duplicates": dedup.duplicate_rows,
         "rejected": read[REJECTED_TAG], "stats": flatten_stats([*dedup.stats, fit_report]),
         "clusters": clusters["labels"]}
        | "WriteOutputs" >> WriteOutputs(WriteParams(staging_dir, params,
                                                     cluster_cfg.label_field))
    )
    add_cluster_stats(written.contingency, cluster_cfg, staging_dir)
    return dedup.banding
