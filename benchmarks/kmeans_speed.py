"""K-Means speed: JAX (``runners/kmeans/jax_kmeans.py``) against scikit-learn, fit and predict.

What it measures: on ``--n`` × ``--d`` float32 vectors (default 100,000 × 128; seeded Gaussian
blobs, each vector then scaled to unit length, the shape of text embeddings) and for each k in
``--ks`` (default 10 and 100), in the same run:

- fit: scikit-learn ``KMeans(algorithm="lloyd", n_init=1, init=C0, tol=0, max_iter=M)`` against
  ``jax_kmeans.fit`` with ``KMeansConfig(init="given", tol=0, max_iter=M)`` and the same
  initial centres C0 (JAX k-means++ on the data), M = ``--iters`` (default 30). With tol=0 both
  stop only at M iterations or when no label changes; the iterations each ran are reported
  (equal work needs equal counts; the default data keep both at M) with the time per iteration.
  Both fit times are the whole call: checks, centring, the iterations and the final labels;
- predict: ``KMeans.predict`` against ``jax_kmeans.predict`` on the same vectors;
- medians over ``--repeats`` (default 3), alternating the two libraries repeat by repeat. JAX's
  first call of each shape compiles; it is timed separately ("first call") and not in the
  medians, and "compile ≈" is first call minus the median (fit compiles the predict blocks
  too, since it labels the training points with them, so predict's first call is warm);
- agreement: share of equal labels and the relative inertia difference (they start from the same
  centres and run the same algorithm, so they should agree up to float32 rounding).

Then the ratios scikit-learn time / JAX time (above 1: JAX faster) against the target: JAX fit
time at most scikit-learn's on CPU (``PASS``/``MISS``; the exit status is 0 either way).

JAX uses its default device: the CPU here; on a machine with a GPU, JAX runs there, which the
output states (``jax.devices()``), and the comparison is then GPU against scikit-learn's CPU.
scikit-learn uses all cores through OpenMP, XLA:CPU all cores through its thread pool.

``--single-core`` pins the process to one core and both libraries to one thread (XLA:CPU
without its Eigen thread pool, OpenMP/BLAS with one thread), and times CPU seconds of the
process as well as wall seconds: a per-core comparison that other processes on a busy machine
barely move (they take turns on the core, but CPU time counts only this process's share),
where the all-cores wall times are only meaningful on a quiet machine.

Run from the repository root (about 20 s on 2 cores)::

    .venv/bin/python benchmarks/kmeans_speed.py --json /tmp/kmeans_speed.json
    .venv/bin/python benchmarks/kmeans_speed.py --single-core
    .venv/bin/python benchmarks/kmeans_speed.py --n 20000 --ks 10 --repeats 1   # quick look
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script: make `runners` importable
    sys.path.insert(0, str(REPO_ROOT))

SINGLE_CORE = "--single-core" in sys.argv[1:]
if SINGLE_CORE:
    # Before JAX and scikit-learn load: thread counts are read once, at start-up.
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "")
        + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    )
    for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_name] = "1"
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

import jax  # noqa: E402
import sklearn  # noqa: E402
from sklearn.cluster import KMeans  # noqa: E402

from runners.kmeans import jax_kmeans  # noqa: E402

T = TypeVar("T")


def make_data(n: int, d: int, n_blobs: int, seed: int) -> np.ndarray:
    """Unit-length vectors around ``n_blobs`` random directions (overlapping blobs).

    The noise is large enough that the blobs overlap, so Lloyd keeps moving a few labels for
    many iterations and both libraries run the full iteration count.
    """
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(n_blobs, d))
    x = directions[rng.integers(n_blobs, size=n)] + rng.normal(scale=1.5, size=(n, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    """Seconds taken by ``fn()``: CPU seconds of this process with --single-core, else wall."""
    clock = time.process_time if SINGLE_CORE else time.perf_counter
    start = clock()
    result = fn()
    return clock() - start, result


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="vectors")
    parser.add_argument("--d", type=int, default=128, help="dimensions")
    parser.add_argument("--ks", type=int, nargs="+", default=[10, 100], help="cluster counts")
    parser.add_argument("--iters", type=int, default=30, help="Lloyd iterations (tol=0)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats; medians")
    parser.add_argument("--blobs", type=int, default=256, help="blob centres in the data")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="save the results here")
    parser.add_argument("--single-core", action="store_true",
                        help="one core, one thread each; CPU seconds (see the docstring)")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.iters < 1 or args.n < max(args.ks) or min(args.ks) < 1:
        parser.error("need --repeats >= 1, --iters >= 1 and 1 <= k <= --n")
    return args


def bench_k(x: np.ndarray, k: int, args: argparse.Namespace) -> dict[str, Any]:
    init = np.asarray(
        jax_kmeans.kmeans_plus_plus(x, k, jax_kmeans.prng_key(args.seed)), dtype=np.float32
    )
    config = jax_kmeans.KMeansConfig(k=k, init="given", max_iter=args.iters, tol=0.0)

    def jax_fit() -> tuple[jax_kmeans.KMeansModel, np.ndarray, np.ndarray]:
        return jax_kmeans.fit_predict(x, config, centres=init)

    def sk_fit() -> KMeans:
        return KMeans(
            n_clusters=k, init=init, n_init=1, algorithm="lloyd", max_iter=args.iters, tol=0.0
        ).fit(x)

    jax_fit_first, (model, labels, _) = timed(jax_fit)
    jax_predict_first, _ = timed(lambda: jax_kmeans.predict(model, x))
    jax_fit_s: list[float] = []
    sk_fit_s: list[float] = []
    jax_predict_s: list[float] = []
    sk_predict_s: list[float] = []
    sk_model: KMeans | None = None
    for _ in range(args.repeats):
        seconds, sk_model = timed(sk_fit)
        sk_fit_s.append(seconds)
        seconds, (model, labels, _) = timed(jax_fit)
        jax_fit_s.append(seconds)
        seconds, _ = timed(lambda m=sk_model: m.predict(x))
        sk_predict_s.append(seconds)
        seconds, _ = timed(lambda m=model: jax_kmeans.predict(m, x))
        jax_predict_s.append(seconds)
    assert sk_model is not None

    jax_fit_med = statistics.median(jax_fit_s)
    sk_fit_med = statistics.median(sk_fit_s)
    jax_predict_med = statistics.median(jax_predict_s)
    sk_predict_med = statistics.median(sk_predict_s)
    return {
        "k": k,
        "iterations_jax": model.n_iter,
        "iterations_sklearn": int(sk_model.n_iter_),
        "fit_s_jax": jax_fit_med,
        "fit_s_sklearn": sk_fit_med,
        "fit_s_jax_all": jax_fit_s,
        "fit_s_sklearn_all": sk_fit_s,
        "fit_ms_per_iter_jax": 1000 * jax_fit_med / max(model.n_iter, 1),
        "fit_ms_per_iter_sklearn": 1000 * sk_fit_med / max(int(sk_model.n_iter_), 1),
        "fit_first_call_s_jax": jax_fit_first,
        "fit_compile_s_jax": max(jax_fit_first - jax_fit_med, 0.0),
        "predict_s_jax": jax_predict_med,
        "predict_s_sklearn": sk_predict_med,
        "predict_first_call_s_jax": jax_predict_first,
        "fit_speedup": sk_fit_med / jax_fit_med,
        "predict_speedup": sk_predict_med / jax_predict_med,
        "fit_target_met": jax_fit_med <= sk_fit_med,
        "label_agreement": float(np.mean(labels == sk_model.labels_)),
        "inertia_jax": model.inertia,
        "inertia_sklearn": float(sk_model.inertia_),
        "inertia_rel_diff": abs(model.inertia - sk_model.inertia_) / sk_model.inertia_,
    }


def print_table(results: list[dict[str, Any]]) -> None:
    header = (
        f"{'k':>4} {'iters jax/sk':>12} {'fit jax s':>9} {'fit sk s':>9} {'ms/it jax':>9} "
        f"{'ms/it sk':>9} {'1st call':>8} {'compile':>8} {'pred jax':>8} {'pred sk':>8} "
        f"{'1st pred':>8} {'labels=':>8} {'dInertia':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r['k']:>4} {r['iterations_jax']:>5}/{r['iterations_sklearn']:<6} "
            f"{r['fit_s_jax']:>9.3f} {r['fit_s_sklearn']:>9.3f} "
            f"{r['fit_ms_per_iter_jax']:>9.1f} {r['fit_ms_per_iter_sklearn']:>9.1f} "
            f"{r['fit_first_call_s_jax']:>8.2f} {r['fit_compile_s_jax']:>8.2f} "
            f"{r['predict_s_jax']:>8.3f} {r['predict_s_sklearn']:>8.3f} "
            f"{r['predict_first_call_s_jax']:>8.2f} {r['label_agreement']:>8.4f} "
            f"{r['inertia_rel_diff']:>9.1e}"
        )
    print()
    for r in results:
        verdict = "PASS" if r["fit_target_met"] else "MISS"
        print(
            f"k={r['k']}: fit sklearn/JAX = {r['fit_speedup']:.2f}x (target >= 1.00x: {verdict}); "
            f"predict sklearn/JAX = {r['predict_speedup']:.2f}x"
        )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    devices = [str(device) for device in jax.devices()]
    backend = jax.default_backend()
    print(f"JAX {jax.__version__} on {backend}: {', '.join(devices)}")
    if backend != "cpu":
        print(f"note: JAX is running on {backend.upper()}, scikit-learn on the CPU")
    if SINGLE_CORE:
        print("single core: one thread each, pinned to one CPU; times are CPU seconds")
    print(
        f"scikit-learn {sklearn.__version__}; {os.cpu_count()} CPU cores; "
        f"data {args.n} x {args.d} float32, unit-normalised blobs ({args.blobs} centres, "
        f"seed {args.seed}); Lloyd, tol=0, max_iter={args.iters}; medians of {args.repeats}"
    )
    x = make_data(args.n, args.d, args.blobs, args.seed)
    load_before = os.getloadavg()
    results = []
    for k in args.ks:
        results.append(bench_k(x, k, args))
    load_after = os.getloadavg()
    print()
    print_table(results)
    # Other processes on the machine slow both libraries (and not equally): say how busy it was.
    print(
        f"\n1-minute load average: {load_before[0]:.2f} before, {load_after[0]:.2f} after "
        f"({os.cpu_count()} cores; above ~0.5 other processes were competing)"
    )
    if args.json:
        payload = {
            "jax_version": jax.__version__,
            "sklearn_version": sklearn.__version__,
            "jax_backend": backend,
            "jax_devices": devices,
            "cpu_count": os.cpu_count(),
            "machine": platform.machine(),
            "n": args.n,
            "d": args.d,
            "iters": args.iters,
            "repeats": args.repeats,
            "blobs": args.blobs,
            "seed": args.seed,
            "single_core": SINGLE_CORE,
            "load_average_before": load_before,
            "load_average_after": load_after,
            "results": results,
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
