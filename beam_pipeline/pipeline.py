"""Wire the NDCL graph. ``build_dedup`` adds the near-duplicate (ND) engine to a pipeline and
never runs it; running belongs to ``beam_pipeline.run``.

Shape of the ND graph (element shapes in brackets):

    ReadDocuments            files → (batch_key, DocBatch) + rejected rows
    ComputeFeatures          → (batch_key, FeatureBatch)         shingles, MinHash, exact hash
    RemoveExactDuplicates    → distinct feature batches + exact members (GroupByKey on hash)
    FindCandidatePairs       → star edges (GroupByKey on LSH band hashes)
    FetchNodes               → (partition, [NodeInfo]) for every edge endpoint (from the text)
    VerifyCandidates         → verified edges (exact Jaccard / signature / none)
    ConnectedComponents      → (node, component) after unrolled large/small-star rounds
    ResolveDuplicates        → (batch_key, DuplicateRow) for every removed document
    WriteOutputs             → kept/, duplicates/, rejected/, _stats.json under staging_dir
"""

from __future__ import annotations

from dataclasses import dataclass

import apache_beam as beam

from beam_pipeline.config import ClusterConfig, DedupConfig
from transforms.cluster import BackendSpec, ClusterDocuments, LevelsConfig
from transforms.components import STATS_TAG as CC_STATS_TAG
from transforms.components import ConnectedComponents
from transforms.embed import EmbedConfig, EmbedDocuments
from transforms.exact import EXACT_DUPLICATES_TAG, RemoveExactDuplicates
from transforms.lsh import FindCandidatePairs, optimal_param
from transforms.minhash import ComputeFeatures
from transforms.read import REJECTED_TAG, ReadDocuments
from transforms.resolve import ResolveDuplicates
from transforms.verify import FetchNodes, NodeParams, VerifyCandidates
from transforms.write import WriteJsonFn, WriteOutputs


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


def build_dedup(
    pipeline: beam.Pipeline, cfg: DedupConfig, files: list[str], staging_dir: str
) -> Banding:
    """Add the ND graph reading ``files`` and writing under ``staging_dir``; returns b and r."""
    banding = choose_banding(cfg)
    parts = cfg.shuffle_partitions
    read = pipeline | "ReadDocuments" >> ReadDocuments(files, cfg.max_doc_bytes, cfg.batch_size)
    doc_batches = read.batches
    features = doc_batches | "ComputeFeatures" >> ComputeFeatures(
        cfg.ngram, cfg.num_perm, cfg.seed, tokenizer=cfg.tokenizer)
    exact = features.features | "RemoveExactDuplicates" >> RemoveExactDuplicates(
        cfg.keep, cfg.batch_size, parts)
    distinct = exact["distinct"]
    candidates = distinct | "FindCandidatePairs" >> FindCandidatePairs(
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
    _ = doc_batches | "WriteOutputs" >> WriteOutputs(
        staging_dir, duplicate_rows, read[REJECTED_TAG], stats)
    return banding


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


def build_cluster(pipeline: beam.Pipeline, cfg: ClusterConfig, files: list[str],
                  staging_dir: str, spec: BackendSpec, run_id: str,
                  max_doc_bytes: int, batch_size: int) -> None:
    """Add the CL-only graph: every readable document is kept with its cluster labels."""
    read = pipeline | "ReadDocuments" >> ReadDocuments(files, max_doc_bytes, batch_size)
    clusters = add_clustering(read.batches, cfg, spec, run_id)
    no_duplicates = pipeline | "NoDuplicates" >> beam.Create([])
    fit_report = clusters["fit"] | "ReportFit" >> beam.ParDo(
        WriteJsonFn(staging_dir, "_cluster_fit.json"))
    _ = read.batches | "WriteOutputs" >> WriteOutputs(
        staging_dir, no_duplicates, read[REJECTED_TAG], [fit_report], clusters["labels"])
