"""Configuration of the near-duplicate (ND) engine: a frozen dataclass loaded from YAML.

Presets live in ``configs/*.yaml``. A YAML file holds a ``dedup:`` mapping whose keys are the
field names of :class:`DedupConfig`; unknown keys are errors (a misspelt ``treshold`` must not
silently fall back to a default). Command-line flags override the YAML.

Every field of :class:`DedupConfig` and :class:`ClusterConfig` is also a Beam pipeline option
and an ``ndcl`` flag (``beam_pipeline.options`` generates both from the fields); a class's
``OPTIONS`` table gives each its help line and, where the field name alone would be ambiguous,
its option name (``ClusterConfig.seed`` is ``--cluster-seed``). A new field is a flag without
any other edit.

Run ``python -m beam_pipeline.config configs/local.yaml`` to print a resolved config.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml

from beam_pipeline.config_fields import ConfigError as ConfigError  # re-exported
from beam_pipeline.config_fields import Option, config_from_mapping

VERIFY_MODES = ("none", "signature", "exact")
KEEP_POLICIES = ("smallest_id", "longest", "first")
# transforms.minhash.TOKENIZERS (importing it imports Beam; tests check that they agree).
TOKENIZERS = ("unicode", "ascii")
# What ClusterConfig accepts for ``mode`` and ``backend`` (runners.kmeans.jax_kmeans.MODES has
# the modes too, but importing it imports JAX); tests/beam_pipeline/test_cli_parser.py checks
# that they agree.
KMEANS_MODES = ("full", "minibatch")
KMEANS_BACKENDS = ("ray", "local")

ConfigT = TypeVar("ConfigT")


@dataclass(frozen=True)
class DedupConfig:
    """Parameters of the near-duplicate engine.

    ``seed`` drives every hash (token xxhash, MinHash permutations, band hashes, shuffle
    partitions); it must be the same on all workers, and it is, because the config is part of
    the pipeline graph rather than read on workers.
    """

    threshold: float = 0.7
    num_perm: int = 256
    ngram: int = 5
    bands: int | None = None
    rows: int | None = None
    seed: int = 1
    verify: str = "exact"
    # "unicode" letter/digit tokens, or "ascii" [a-z0-9] runs only (see transforms.minhash).
    tokenizer: str = "unicode"
    keep: str = "smallest_id"
    # Documents longer than this (bytes of the raw input line) are rejected as ``too_large``.
    max_doc_bytes: int = 10_000_000
    # Buckets with more members than this are cut to their first ``max_bucket_size`` members.
    max_bucket_size: int = 5_000
    # Rounds of large-star/small-star unrolled in the graph; what is still unconverged after
    # them is finished exactly on one worker (see transforms.components for the default).
    cc_max_rounds: int = 3
    # Lines per document batch, the unit that moves through the graph.
    batch_size: int = 4096
    # Number of keys used by the batched shuffles (band buckets, graph edges): a few per core
    # of the runner (the default suits one machine; configs/c4_dataflow.yaml uses 2048). Each
    # key costs arrays per batch to pickle: 8 took 0.9 s less than 32 at 184k blog posts.
    shuffle_partitions: int = 8
    # With verification, b and r are derived with a recall floor: P(threshold) >= this, then
    # the fewest false-positive candidates (transforms.lsh.recall_floor_param): verification
    # rejects a false candidate for one check, a pair the banding misses is lost.
    recall_floor: float = 0.995
    # Weights of false positives / negatives when b and r are derived by minimising the
    # weighted areas instead (transforms.lsh.optimal_param). Unset: 0.5 / 0.5 with
    # ``verify: none``, where every candidate is reported unchecked, so a floor would cost
    # precision; with verification, unset means the recall floor.
    fp_weight: float | None = None
    fn_weight: float | None = None

    # Each field as a flag and pipeline option (see the module docstring).
    OPTIONS: ClassVar[dict[str, Option]] = {
        "threshold": Option("Jaccard threshold", "T"),
        "num_perm": Option("MinHash permutations", "N"),
        "ngram": Option("shingle length in tokens", "N"),
        "bands": Option("LSH bands, given with --rows", "B",
                        none_means="derived from the threshold"),
        "rows": Option("LSH rows per band, given with --bands", "R",
                       none_means="derived from the threshold"),
        "seed": Option("seed of every hash", "S"),
        "verify": Option("how candidate pairs are checked: exact Jaccard, signature "
                         "agreement or not at all", choices=VERIFY_MODES),
        "tokenizer": Option("unicode letter/digit tokens or ASCII [a-z0-9] runs",
                            choices=TOKENIZERS),
        "keep": Option("which document of a duplicate cluster is kept", choices=KEEP_POLICIES),
        "max_doc_bytes": Option("reject longer input lines as too_large", "BYTES"),
        "max_bucket_size": Option("cut larger LSH buckets to their first N members", "N"),
        "cc_max_rounds": Option("connected-components rounds unrolled in the graph; what is "
                                "left unconverged is finished on one worker", "N"),
        "batch_size": Option("lines per document batch", "N"),
        "shuffle_partitions": Option("keys of the batched shuffles", "N"),
        "recall_floor": Option("least LSH detection probability at the threshold when b and "
                               "r are derived with verification (then the fewest false "
                               "candidates)", "P"),
        "fp_weight": Option("weight of false positives when b and r are derived by weighted "
                            "areas instead of the recall floor, given with --fn-weight", "W",
                            none_means="the recall floor, or 0.5 with --verify none"),
        "fn_weight": Option("weight of false negatives when b and r are derived by weighted "
                            "areas instead of the recall floor, given with --fp-weight", "W",
                            none_means="the recall floor, or 0.5 with --verify none"),
    }

    def __post_init__(self) -> None:
        validate(self)

    def banding_weights(self) -> tuple[float, float] | None:
        """``(fp_weight, fn_weight)`` used to derive b and r, or None for the recall floor
        (the default with verification)."""
        if self.fp_weight is not None and self.fn_weight is not None:
            return self.fp_weight, self.fn_weight
        return (0.5, 0.5) if self.verify == "none" else None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def fingerprint(self) -> str:
        """A short stable hash of the config, to tell runs with equal parameters apart."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


@dataclass(frozen=True)
class ClusterConfig:
    """Parameters of the clustering (CL) engine: embeddings and two K-Means levels.

    ``backend: ray`` calls the Ray-hosted JAX K-Means service (started locally by the run when
    ``service_address`` is unset); ``local`` runs the same JAX code in-process.
    """

    k1: int = 10
    k2: int = 10
    n_components: int = 128
    n_features: int = 2**18
    sample_size: int = 5000
    max_iter: int = 100
    tol: float = 1e-4
    mode: str = "full"
    balanced: bool = False
    seed: int = 1
    tokenizer: str = "unicode"
    backend: str = "ray"
    service_address: str | None = None
    service_num_cpus: int = 1
    service_timeout_s: float = 120.0
    # Input field holding a class label (e.g. a topic): NMI/ARI of the clusters against it are
    # reported when kept documents carry it. Empty: no label, sizes and silhouette only.
    label_field: str = "label"

    # Each field as a flag and pipeline option (see the module docstring); the K-Means fields
    # are named kmeans_*, and seed and tokenizer cluster_*, apart from DedupConfig's.
    OPTIONS: ClassVar[dict[str, Option]] = {
        "k1": Option("level-1 clusters (cluster_A)", "K"),
        "k2": Option("level-2 clusters inside each level-1 cluster (cluster_B)", "K"),
        "n_components": Option("SVD embedding dimensions", "N"),
        "n_features": Option("hashed term columns", "N"),
        "sample_size": Option("documents sampled to fit the SVD and K-Means", "N"),
        "max_iter": Option("K-Means iterations at most", "N", name="kmeans_max_iter"),
        "tol": Option("K-Means tolerance, relative to the data's variance (0: until the "
                      "labels stop changing)", "TOL", name="kmeans_tol"),
        "mode": Option("K-Means steps on the full sample or on mini-batches",
                       choices=KMEANS_MODES, name="kmeans_mode"),
        "balanced": Option("K-Means with roughly equal cluster sizes"),
        "seed": Option("seed of the sample, SVD and K-Means", "S", name="cluster_seed"),
        "tokenizer": Option("tokens of the embedding's terms: unicode letter/digit or ASCII "
                            "[a-z0-9] runs", choices=TOKENIZERS, name="cluster_tokenizer"),
        "backend": Option("ray: the Ray-hosted K-Means service; local: in this process",
                          choices=KMEANS_BACKENDS, name="kmeans_backend"),
        "service_address": Option("K-Means service: HOST:PORT or ray://HOST:10001", "ADDR",
                                  none_means="a service started on this machine"),
        "service_num_cpus": Option("CPUs of a K-Means service started for the run", "N"),
        "service_timeout_s": Option("seconds to wait for the K-Means service to start or "
                                    "answer", "SECONDS"),
        "label_field": Option("input field with a class label, for NMI/ARI; '' for none",
                              "FIELD"),
    }

    def __post_init__(self) -> None:
        for name in ("k1", "k2", "n_components", "n_features", "sample_size", "max_iter",
                     "service_num_cpus"):
            if getattr(self, name) < 1:
                raise ConfigError(f"cluster.{name} must be >= 1, got {getattr(self, name)}")
        if self.mode not in KMEANS_MODES:
            raise ConfigError(f"cluster.mode must be 'full' or 'minibatch', got {self.mode!r}")
        if self.backend not in KMEANS_BACKENDS:
            raise ConfigError(f"cluster.backend must be 'ray' or 'local', got {self.backend!r}")
        if self.tokenizer not in TOKENIZERS:
            raise ConfigError(f"cluster.tokenizer must be 'unicode' or 'ascii', "
                              f"got {self.tokenizer!r}")
        if self.tol < 0 or self.service_timeout_s <= 0:
            raise ConfigError("cluster.tol must be >= 0 and service_timeout_s > 0")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def validate(cfg: DedupConfig) -> None:
    """Raise :class:`ConfigError` for any value outside its domain."""
    if not 0.0 < cfg.threshold <= 1.0:
        raise ConfigError(f"threshold must be in (0, 1], got {cfg.threshold}")
    if cfg.num_perm < 2:
        raise ConfigError(f"num_perm must be >= 2, got {cfg.num_perm}")
    if cfg.ngram < 1:
        raise ConfigError(f"ngram must be >= 1, got {cfg.ngram}")
    if (cfg.bands is None) != (cfg.rows is None):
        raise ConfigError("bands and rows must be given together (or neither)")
    if cfg.bands is not None and cfg.rows is not None:
        if cfg.bands < 1 or cfg.rows < 1:
            raise ConfigError("bands and rows must be >= 1")
        if cfg.bands * cfg.rows > cfg.num_perm:
            raise ConfigError(
                f"bands * rows = {cfg.bands * cfg.rows} exceeds num_perm = {cfg.num_perm}"
            )
    if cfg.verify not in VERIFY_MODES:
        raise ConfigError(f"verify must be one of {VERIFY_MODES}, got {cfg.verify!r}")
    if cfg.tokenizer not in TOKENIZERS:
        raise ConfigError(f"tokenizer must be 'unicode' or 'ascii', got {cfg.tokenizer!r}")
    if cfg.keep not in KEEP_POLICIES:
        raise ConfigError(f"keep must be one of {KEEP_POLICIES}, got {cfg.keep!r}")
    for name in ("max_doc_bytes", "max_bucket_size", "cc_max_rounds", "batch_size",
                 "shuffle_partitions"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"{name} must be >= 1, got {getattr(cfg, name)}")
    if cfg.max_bucket_size < 2:
        raise ConfigError("max_bucket_size must be >= 2")
    if (cfg.fp_weight is None) != (cfg.fn_weight is None):
        raise ConfigError("fp_weight and fn_weight must be given together (or neither)")
    if cfg.fp_weight is not None and cfg.fn_weight is not None:
        if cfg.fp_weight < 0 or cfg.fn_weight < 0 or cfg.fp_weight + cfg.fn_weight <= 0:
            raise ConfigError("fp_weight and fn_weight must be >= 0 and not both 0")
    if not 0.0 < cfg.recall_floor < 1.0:
        raise ConfigError(f"recall_floor must be in (0, 1), got {cfg.recall_floor}")
    if not 0 <= cfg.seed < 2**63:
        raise ConfigError("seed must be in [0, 2**63)")


def dedup_config_from_mapping(values: dict[str, Any], source: str = "config") -> DedupConfig:
    """Build a :class:`DedupConfig`, rejecting unknown keys with the list of known ones."""
    return config_from_mapping(DedupConfig, values, "dedup", source)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a preset file; its top level may only hold known sections."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    allowed = set(SECTIONS.values())
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {unknown}; allowed: {sorted(allowed)}")
    for section in data.values():
        if section is not None and not isinstance(section, dict):
            raise ConfigError(f"{path}: every section must be a mapping")
    return data


def load_dedup_config(
    path: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> DedupConfig:
    """Defaults, then the YAML file's ``dedup`` section, then non-None ``overrides``."""
    return load_config(DedupConfig, path, overrides)


def load_cluster_config(
    path: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> ClusterConfig:
    """Defaults, then the YAML file's ``cluster`` section, then non-None ``overrides``."""
    return load_config(ClusterConfig, path, overrides)


def load_config(cls: type[ConfigT], path: str | Path | None = None,
                overrides: dict[str, Any] | None = None) -> ConfigT:
    """A config dataclass: its defaults, then its section (:data:`SECTIONS`) of the YAML
    file ``path``, then the non-None ``overrides`` (field name → value, e.g. from flags)."""
    section = SECTIONS.get(cls, cls.__name__)
    values: dict[str, Any] = {}
    if path is not None:
        values.update(load_yaml(path).get(section) or {})
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key] = value
    return config_from_mapping(cls, values, section, str(path) if path else "overrides")


@dataclass(frozen=True)
class PipelineConfig:
    """Where the job runs (the YAML ``pipeline`` section); runner flags override it."""

    input: str | None = None
    runner: str = "direct"
    job_endpoint: str | None = None
    flink_master: str | None = None
    project: str | None = None
    region: str | None = None
    temp_location: str | None = None
    staging_location: str | None = None
    worker_machine_type: str | None = None
    max_workers: int | None = None
    sdk_container_image: str | None = None

    def __post_init__(self) -> None:
        if self.runner not in ("direct", "portable", "flink", "dataflow"):
            raise ConfigError(f"pipeline.runner must be direct, portable, flink or dataflow, "
                              f"got {self.runner!r}")
        if self.max_workers is not None and self.max_workers < 1:
            raise ConfigError("pipeline.max_workers must be >= 1")


def load_pipeline_config(path: str | Path | None = None) -> PipelineConfig:
    """The YAML file's ``pipeline`` section; unknown keys are errors."""
    values = (load_yaml(path).get("pipeline") or {}) if path is not None else {}
    return config_from_mapping(PipelineConfig, values, "pipeline", str(path))


# The YAML section of each config class: the sections a preset may have.
SECTIONS: dict[type, str] = {DedupConfig: "dedup", ClusterConfig: "cluster",
                             PipelineConfig: "pipeline"}


if __name__ == "__main__":
    print(json.dumps(load_dedup_config(sys.argv[1] if len(sys.argv) > 1 else None).to_dict(),
                     indent=2))
