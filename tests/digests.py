"""Digests of NDCL outputs, to prove that a rework of the graph leaves every byte as it was.

``CASES`` are CLI runs on the bundled demo corpus and on ``../shared/data`` corpora; a case's
digest is the SHA-256 over the relative path and bytes of every part file of ``kept/``,
``duplicates/`` and ``rejected/``. ``tests/data/output-digests.json`` holds the digests the
code wrote before the bounded-memory rework (issue 11), recorded by
``python -m tests.digests --record``; ``tests/end_to_end/test_output_digests.py`` recomputes them.
``news-20ng-dedup`` and ``blogs-3-nd_cl`` were re-recorded when the default banding became the
recall floor (issue 14: 29 x 5 at 0.7, more near-duplicates found); with ``--bands 32 --rows 8``
both still give their former digests, and every other case was unchanged by it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

from tests.conftest import DEMO_CORPUS, REPO, SHARED_DATA

DIGESTS = REPO / "tests" / "data" / "output-digests.json"
SMALL_K = ["--k1", "4", "--k2", "3", "--kmeans-backend", "local"]
# name → (inputs relative to the repo (demo) or to ../shared/data, CLI arguments)
CASES: dict[str, tuple[list[str], list[str]]] = {
    "demo-dedup": ([str(DEMO_CORPUS)], ["dedup"]),
    "demo-dedup-signature": ([str(DEMO_CORPUS)], ["dedup", "--verify", "signature",
                                                  "--keep", "longest"]),
    "demo-nd_cl": ([str(DEMO_CORPUS)], ["run", "--workflow", "nd_cl", *SMALL_K]),
    "demo-cl_nd": ([str(DEMO_CORPUS)], ["run", "--workflow", "cl_nd", *SMALL_K]),
    "demo-cluster": ([str(DEMO_CORPUS)], ["cluster", *SMALL_K]),
    "news-20ng-dedup": (["news/20newsgroups-bydate.json.gz"], ["dedup"]),
    "news-bbc-cl_nd": (["news/bbc-news-2225.json.gz"], ["run", "--workflow", "cl_nd",
                                                       *SMALL_K]),
}
# Checked by hand (``python -m tests.digests blogs-3-nd_cl``), too slow for ``make test`` (~60 s).
EXTRA_CASES = {
    "blogs-3-nd_cl": (["blogs/blogs.00003.json.gz"], ["run", "--workflow", "nd_cl", *SMALL_K,
                                                     "--tokenizer", "ascii"]),
}


def needs_shared(name: str) -> bool:
    return not name.startswith("demo-")


def output_digest(out: Path) -> str:
    digest = hashlib.sha256()
    for sub in ("kept", "duplicates", "rejected"):
        folder = out / sub
        for path in sorted(folder.iterdir()) if folder.is_dir() else []:
            digest.update(f"{sub}/{path.name}\n".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def run_case(name: str, workdir: Path, runner_args: tuple[str, ...] = ()) -> str:
    """Run case ``name`` into ``workdir/name`` (with ``runner_args`` appended, e.g. another
    runner's flags) and return its output digest."""
    from beam_pipeline.cli import main

    inputs, args = {**CASES, **EXTRA_CASES}[name]
    paths = [str(SHARED_DATA / p) if needs_shared(name) else p for p in inputs]
    out = workdir / name
    command, *flags = args
    code = main(["-q", "--db-url", f"sqlite:///{workdir / 'runs.db'}", command, "--input",
                 *paths, "--output", str(out), *flags, *runner_args])
    if code != 0:
        raise RuntimeError(f"{name}: ndcl exited {code}")
    return output_digest(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--record", action="store_true", help=f"write {DIGESTS}")
    parser.add_argument("cases", nargs="*", default=list(CASES),
                        help=f"default: all but {', '.join(EXTRA_CASES)}")
    args = parser.parse_args(argv)
    recorded = json.loads(DIGESTS.read_text()) if DIGESTS.exists() else {}
    different = 0
    with tempfile.TemporaryDirectory(prefix="ndcl-digests-") as tmp:
        for name in args.cases:
            if needs_shared(name) and not SHARED_DATA.is_dir():
                print(f"{name}: skipped (no ../shared/data)")
                continue
            digest = run_case(name, Path(tmp))
            same = recorded.get(name) == digest
            different += not same
            print(f"{name}: {digest} {'same' if same else 'DIFFERENT'}", flush=True)
            recorded[name] = digest
    if args.record:
        DIGESTS.write_text(json.dumps(dict(sorted(recorded.items())), indent=1) + "\n")
    return 1 if different and not args.record else 0


if __name__ == "__main__":
    sys.exit(main())
