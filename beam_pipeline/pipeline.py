"""Wire the NDCL graph. ``build_dedup`` adds the near-duplicate (ND) engine to a pipeline and
never runs it; running belongs to ``beam_pipeline.run``.

Shape of the ND graph (element shapes in brackets):

    ReadDocuments            files → (batch_key, DocBatch) + rejected rows (ids made unique:
                             a GroupByKey on id hashes, repeats rejected as duplicate_id)
    ComputeFeatures          → (batch_key, FeatureBatch)         shingles, MinHash, exact hash
    RemoveExactDuplicates    → distinct feature batches + exact members (GroupByKey on hash)
    FindCandidatePairs       → star edges (GroupByKey on LSH band hashes)
    FetchNodes               → (partition, [NodeInfo]) for every edge endpoint (from the text)
    VerifyCandidates         → verified edges (exact Jaccard / signature / none)
    ConnectedComponents      → (node, component) after unrolled large/small-star rounds
    ResolveDuplicates        → (batch_key, DuplicateRow) for every removed document
    WriteOutputs             → kept/, duplicates/, rejected/, _stats.json under staging_dir

With clustering (``build_cluster``, ``build_pipeline``), ``ReportFit`` writes the K-Means fit
summary (with the sample silhouettes) to ``_cluster_fit.json``, and ``SummariseClusters``
combines the writer's per-batch counts of kept documents per (cluster_A, cluster_B, label) into
sizes and NMI/ARI, written by ``ReportClusterStats`` to ``_cluster_stats.json``.
"""

from __future__ import annotations

from dataclasses import dataclass

import apache_beam as beam

from beam_pipeline.config import ClusterConfig, DedupConfig
from transforms.cluster import BackendSpec, ClusterDocuments, LevelsConfig
from transforms.cluster_stats import CONTINGENCY_TAG, SummariseClusters
from transforms.components import STATS_TAG as CC_STATS_TAG
from transforms.components import ConnectedComponents
from transforms.embed import EmbedConfig, EmbedDocuments
from transforms.exact import EXACT_DUPLICATES_TAG, RemoveExactDuplicates
from transforms.lsh import FindCandidatePairs, optimal_param
from transforms.minhash import ComputeFeatures
from transforms.read import REJECTED_TAG, ReadDocuments
from transforms.resolve import ResolveDuplicates, SelectKept
from transforms.scope import ScopeByCluster
from transforms.verify import FetchNodes, NodeParams, VerifyCandidates
from transforms.write import WriteJsonFn, WriteOutputs

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


def add_dedup(doc_batches: beam.PCollection, cfg: DedupConfig,
              scope_labels: beam.PCollection | None = None,
              scope: str = "cluster_A") -> DedupParts:
    """The ND engine on ``doc_batches``; with ``scope_labels`` (CL→ND) only documents of the
    same cluster are compared."""
    banding = choose_banding(cfg)
    parts = cfg.shuffle_partitions
    features = doc_batches | "ComputeFeatures" >> ComputeFeatures(
        cfg.ngram, cfg.num_perm, cfg.seed, tokenizer=cfg.tokenizer)
    feature_batches = features.features
    if scope_labels is not None:
        feature_batches = feature_batches | "ScopeByCluster" >> ScopeByCluster(
            scope_labels, scope, cfg.seed)
    exact = feature_batches | "RemoveExactDuplicates" >> RemoveExactDuplicates(
        cfg.keep, cfg.batch_size, parts)
    candidates = exact["distinct"] | "FindCandidatePairs" >> FindCandidatePairs(
        banding.bands, banding.rows, cfg.seed, parts, cfg.max_bucket_size)
    node_params = NodeParams(cfg.ngram, cfg.num_perm, cfg.seed, cfg.tokenizer, cfg.verify)
    partition_to_nodes = candidates.edges | "FetchNodes" >> FetchNodes(
        doc_batches, node_params, cfg.batch_size, parts)
    verified = candidates.edges | "VerifyCandidates" >> VerifyCandidates(
        partition_to_nodes, cfg.verify, cfg.threshold, parts, cfg.seed)
    components = verified.edges | "ConnectedComponents" >> ConnectedComponents(
        cfg.cc_max_rounds, parts, cfg.seed)
    duplicate_rows = components["labels"] | "ResolveDuplicates" >> ResolveDuplicates(
        partition_to_nodes, exact[EXACT_DUPLICATES_TAG], cfg.keep, cfg.verify,
        cfg.batch_size, parts, cfg.seed)
    stats = [features.stats, candidates.stats, verified.stats, components[CC_STATS_TAG]]
    return DedupParts(duplicate_rows, stats, banding)


def build_dedup(
    pipeline: beam.Pipeline, cfg: DedupConfig, files: list[str], staging_dir: str
) -> Banding:
    """Add the ND graph reading ``files`` and writing under ``staging_dir``; returns b and r."""
    read = pipeline | "ReadDocuments" >> ReadDocuments(files, cfg.max_doc_bytes, cfg.batch_size,
                                                       cfg.shuffle_partitions)
    dedup = add_dedup(read.batches, cfg)
    _ = read.batches | "WriteOutputs" >> WriteOutputs(
        staging_dir, dedup.duplicate_rows, read[REJECTED_TAG], dedup.stats)
    return dedup.banding


def add_clustering(doc_batches: beam.PCollection, cfg: ClusterConfig, spec: BackendSpec,
                   run_id: str) -> dict[str, beam.PCollection]:
    """Embed ``doc_batches`` and label them with two K-Means levels:
    ``{"labels": (batch_key, (uids, cluster_A, cluster_B)), "fit": summary, "svd": SvdModel}``.
    """
    embed_cfg = EmbedConfig(cfg.n_features, cfg.n_components, cfg.sample_size, cfg.seed,
                            cfg.tokenizer)
    levels = LevelsConfig(cfg.k1, cfg.k2, cfg.max_iter, cfg.tol, cfg.mode, cfg.balanced,
                          cfg.seed)
    embedded = doc_batches | "EmbedDocuments" >> EmbedDocuments(embed_cfg)
    clustered = embedded | "ClusterDocuments" >> ClusterDocuments(spec, run_id, levels,
                                                                   cfg.n_features)
    return {"labels": clustered["labels"], "fit": clustered["fit"], "svd": embedded["svd"]}


def add_cluster_stats(written: dict[str, beam.PCollection], cfg: ClusterConfig,
                      staging_dir: str) -> None:
    """Sizes and NMI/ARI of the kept documents' clusters → ``_cluster_stats.json``."""
    stats = written[CONTINGENCY_TAG] | "SummariseClusters" >> SummariseClusters(
        cfg.label_field or None)
    _ = stats | "ReportClusterStats" >> beam.ParDo(WriteJsonFn(staging_dir, CLUSTER_STATS_FILE))


def build_cluster(pipeline: beam.Pipeline, cfg: ClusterConfig, files: list[str],
                  staging_dir: str, spec: BackendSpec, run_id: str,
                  max_doc_bytes: int, batch_size: int) -> None:
    """Add the CL-only graph: every readable document is kept with its cluster labels."""
    read = pipeline | "ReadDocuments" >> ReadDocuments(files, max_doc_bytes, batch_size)
    clusters = add_clustering(read.batches, cfg, spec, run_id)
    no_duplicates = pipeline | "NoDuplicates" >> beam.Create([])
    fit_report = clusters["fit"] | "ReportFit" >> beam.ParDo(
        WriteJsonFn(staging_dir, CLUSTER_FIT_FILE))
    written = read.batches | "WriteOutputs" >> WriteOutputs(
        staging_dir, no_duplicates, read[REJECTED_TAG], [fit_report], clusters["labels"],
        cfg.label_field)
    add_cluster_stats(written, cfg, staging_dir)


WORKFLOWS = ("nd_cl", "cl_nd")


def build_pipeline(pipeline: beam.Pipeline, workflow: str, dedup_cfg: DedupConfig,
                   cluster_cfg: ClusterConfig, files: list[str], staging_dir: str,
                   spec: BackendSpec, run_id: str, dedup_scope: str = "cluster_A") -> Banding:
    """Both orderings from the same transforms (nothing is built twice):

    - ``nd_cl``: global near-duplicate removal, then two-level clustering of the kept documents;
    - ``cl_nd``: two-level clustering of every document, then near-duplicate removal inside
      each ``dedup_scope`` cluster (band and exact keys scoped by cluster).
    """
    if workflow not in WORKFLOWS:
        raise ValueError(f"workflow must be one of {WORKFLOWS}, got {workflow!r}")
    read = pipeline | "ReadDocuments" >> ReadDocuments(files, dedup_cfg.max_doc_bytes,
                                                       dedup_cfg.batch_size,
                                                       dedup_cfg.shuffle_partitions)
    if workflow == "nd_cl":
        dedup = add_dedup(read.batches, dedup_cfg)
        kept = read.batches | "SelectKept" >> SelectKept(dedup.duplicate_rows)
        clusters = add_clustering(kept, cluster_cfg, spec, run_id)
    else:
        clusters = add_clustering(read.batches, cluster_cfg, spec, run_id)
        dedup = add_dedup(read.batches, dedup_cfg, clusters["labels"], dedup_scope)
    fit_report = clusters["fit"] | "ReportFit" >> beam.ParDo(
        WriteJsonFn(staging_dir, CLUSTER_FIT_FILE))
    written = read.batches | "WriteOutputs" >> WriteOutputs(
        staging_dir, dedup.duplicate_rows, read[REJECTED_TAG], [*dedup.stats, fit_report],
        clusters["labels"], cluster_cfg.label_field)
    add_cluster_stats(written, cluster_cfg, staging_dir)
    return dedup.banding
