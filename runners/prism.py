"""Beam's Prism runner for ``--runner prism``: the binary (``make prism``) and its Beam options.

Prism is Beam's local portable runner written in Go: one process that is both the job service
and the runner, with the SDK workers in the submitting process (LOOPBACK). Beam's Python
``PrismRunner`` starts it; given no ``--prism_location`` it downloads a release zip from
GitHub, which these machines cannot reach. So the binary is built from source instead::

    GOBIN=.ndcl/prism/bin go install github.com/apache/beam/sdks/v2/go/cmd/prism@v<beam>

at the Beam version of the Python SDK in the venv (so the runner and the SDK harness speak the
same protocol revision), from the Go module proxy. Everything lands under ``.ndcl/prism/``
(gitignored; ``NDCL_PRISM_DIR`` moves it)::

    bin/prism         the runner (about 63 MiB; the first install took 2 min 39 s on 2 cores:
                      ~110 MB of modules, then the compile, ~100 s on its own)
    installed.json    what was installed: module, version, go version, seconds, bytes

Decisions:

- ``--prism_location`` is always the installed binary; without it ``prism_beam_args`` fails
  with one line naming ``make prism`` rather than letting Beam try the download.
- ``CGO_ENABLED=0``: a static binary, independent of the machine's libc.
- ``--environment_type=LOOPBACK`` (the PrismRunner's own default for Python): Beam starts an
  SDK worker pool inside ``ndcl`` and Prism connects to it. EXTERNAL with a separate
  ``python -m apache_beam.runners.worker.worker_pool_main --service_port=P`` also gives
  byte-identical outputs but is no faster (still one worker process) and needs the pool
  started with this venv's ``python`` first on PATH (it runs ``python -c ...``); DOCKER needs
  Docker. So
  ``--environment-type`` stays a portable/flink-only flag.
- Parallelism: Prism (2.77, ``internal/execute.go``) starts exactly one SDK worker per
  environment and runs up to 8 bundles at a time on it; it has no ``sdk_worker_parallelism``
  and ignores ``--direct_num_workers``. The one Python worker runs those bundles on threads,
  so Python-heavy stages use about one core (the GIL). Prism's Go process adds 0.3-0.8 of
  the other core (4-16 s of CPU on the demo runs: it moves every element between stages), so
  a run uses 100-145 % CPU yet takes 1.3-2x the direct runner's time. For two busy cores
  locally use the direct runner's ``--direct_num_workers=2
  --direct_running_mode=multi_processing``.
- ``-q`` adds ``--prism_log_level=warn``: Beam logs Prism's lines at INFO whatever the
  root logger's level.

Run ``python -m runners.prism install`` (or ``make prism``) and ``python -m runners.prism where``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from runners.errors import RunnerConfigError

REPO = Path(__file__).resolve().parents[1]
MODULE = "github.com/apache/beam/sdks/v2/go/cmd/prism"


class PrismSetupError(RuntimeError):
    """``go`` is missing or ``go install`` failed; the message says what to do."""


def beam_version() -> str:
    """The Python SDK's Beam version (2.77.0): the Prism version to install."""
    from apache_beam.version import __version__

    return __version__


def prism_dir() -> Path:
    """Where ``make prism`` installs: ``$NDCL_PRISM_DIR``, else ``<repo>/.ndcl/prism``."""
    env = os.environ.get("NDCL_PRISM_DIR")
    return Path(env) if env else REPO / ".ndcl" / "prism"


def prism_binary(base: Path | None = None) -> Path:
    """The installed Prism binary (it may not exist yet)."""
    return (base or prism_dir()) / "bin" / "prism"


def installed(base: Path | None = None) -> dict[str, Any] | None:
    """The record ``install`` wrote, or ``None``."""
    record = (base or prism_dir()) / "installed.json"
    try:
        return json.loads(record.read_text())
    except (OSError, ValueError):
        return None


def install(force: bool = False, base: Path | None = None,
            version: str | None = None) -> dict[str, Any]:
    """``go install`` Prism at the SDK's Beam version into ``<prism_dir>/bin``; returns (and
    writes to ``installed.json``) what was installed. Does nothing when that version is
    already there, unless ``force``."""
    base = base or prism_dir()
    version = version or beam_version()
    binary = prism_binary(base)
    record = installed(base)
    if (not force and binary.is_file() and record
            and record.get("version") == f"v{version}"):
        return record
    go = shutil.which("go")
    if not go:
        raise PrismSetupError(
            "`go` is not on PATH: install Go 1.26+ (what Beam "
            f"{beam_version()}'s go.mod asks for) to build Beam's Prism runner")
    binary.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GOBIN": str(binary.parent), "CGO_ENABLED": "0"}
    target = f"{MODULE}@v{version}"
    start = time.monotonic()
    # Outside the repository so that no go.mod around it changes the resolution.
    proc = subprocess.run([go, "install", target], env=env, cwd=str(base),
                          capture_output=True, text=True)
    seconds = round(time.monotonic() - start, 1)
    if proc.returncode != 0 or not binary.is_file():
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise PrismSetupError(f"`go install {target}` failed (exit {proc.returncode}):\n{tail}")
    go_version = subprocess.run([go, "env", "GOVERSION"], capture_output=True,
                                text=True).stdout.strip()
    record = {"module": MODULE, "version": f"v{version}", "go": go_version,
              "binary": str(binary), "bytes": binary.stat().st_size, "seconds": seconds,
              "installed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    (base / "installed.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def prism_beam_args(args: argparse.Namespace | Any) -> list[str]:
    """Beam options for ``--runner prism`` (``runners.options`` adds ``--setup_file``);
    ``RunnerConfigError`` when the binary is absent."""
    binary = prism_binary()
    if not binary.is_file():
        raise RunnerConfigError(
            f"--runner prism needs the Prism binary: run `make prism` ({binary} is missing)")
    if not os.access(binary, os.X_OK):
        raise RunnerConfigError(f"--runner prism: {binary} is not executable")
    out = ["--runner=PrismRunner", f"--prism_location={binary}",
           "--environment_type=LOOPBACK"]
    if getattr(args, "quiet", False):
        # Beam logs Prism's own lines at INFO whatever the root level; -q means warnings only.
        out.append("--prism_log_level=warn")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m runners.prism",
        description="Beam's Prism runner for `ndcl --runner prism`, built with `go install` "
                    f"into $NDCL_PRISM_DIR (default {REPO / '.ndcl' / 'prism'})")
    sub = parser.add_subparsers(dest="command", required=True)
    inst = sub.add_parser("install", help="go install Prism at the SDK's Beam version")
    inst.add_argument("--force", action="store_true", help="reinstall even if present")
    sub.add_parser("where", help="print the binary's path (exit 1 when it is missing)")
    ns = parser.parse_args(argv)
    if ns.command == "where":
        binary = prism_binary()
        print(binary)
        return 0 if binary.is_file() else 1
    before = installed()
    try:
        record = install(force=ns.force)
    except PrismSetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    how = "already installed" if record == before else f"installed in {record['seconds']} s"
    print(f"prism {record['version']} at {record['binary']} "
          f"({record['bytes'] / 2**20:.0f} MiB, {how})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
