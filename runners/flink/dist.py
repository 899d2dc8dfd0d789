"""Beam's Flink job server and a Flink distribution, fetched with Maven and pip (``make flink``).

Everything lands under ``.ndcl/flink/`` (gitignored; ``NDCL_FLINK_DIR`` moves it)::

    job-server/beam-flink-job-server.jar   launcher: Main-Class FlinkJobServerDriver, and a
                                           Class-Path naming every jar of lib/
    job-server/lib/*.jar                   Beam's Flink runner + Flink + their dependencies
    flink-<FLINK_VERSION>/                 a Flink distribution (bin/ conf/ lib/ opt/ plugins/)
                                           for a standalone cluster (bin/jobmanager.sh, ...)
    fetched.json                           what was fetched: versions, files, bytes, seconds

Why it is assembled rather than downloaded whole:

- Beam's prebuilt job-server jar (``org.apache.beam:beam-runners-flink-<flink>-job-server``, what
  Beam's Python ``FlinkRunner`` downloads itself) is not served by the Maven Central these
  machines reach, at any Beam version. The Flink runner *library* is served for a few versions,
  and for one of them together with the job service it needs: ``beam-runners-flink-1.19`` and
  ``beam-runners-java-job-service`` 2.62.0 (2.70.0 of the runner exists, but its 2.70.0 job
  service does not). ``runners/flink/jobserver/pom.xml`` resolves that runner with Maven and
  writes a launcher jar, so ``java -jar beam-flink-job-server.jar`` behaves like the upstream
  shadow jar and can be given to Beam as ``--flink_job_server_jar``.
- Flink's binary distribution is not a Maven artifact (``flink-dist`` is not served either). PyPI
  carries it in two parts: ``apache-flink-libraries`` (an sdist: ``deps/lib`` with
  ``flink-dist``, ``deps/opt``, ``deps/plugins``, ``deps/bin/bash-java-utils.jar``) and
  ``apache-flink``'s wheel (``pyflink/bin`` with ``jobmanager.sh``, ``taskmanager.sh``,
  ``config.sh``, ... and ``pyflink/conf``). Both are downloaded with ``pip download --no-deps``
  and unpacked (then deleted), not installed: PyFlink pins an old ``apache-beam``.

So the job server is Beam 2.62.0, not the Python SDK's 2.77.0 (the SDK harness still is
2.77.0: it runs in this venv). Run ``python -m runners.flink.dist --help``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
POM = Path(__file__).resolve().parent / "jobserver" / "pom.xml"
# The newest Beam whose Flink runner and job service resolve from Maven Central here (above).
BEAM_VERSION = "2.62.0"
FLINK_MINOR = "1.19"  # Beam 2.62's Flink runners: 1.17, 1.18, 1.19 (1.19 is the one served)
FLINK_VERSION = "1.19.3"  # newest 1.19 patch: job server's Flink and the distribution alike
JAR_NAME = "beam-flink-job-server.jar"
MANIFEST_KEYS = {"Beam-Version": "beam", "Beam-Job-Service-Version": "job_service",
                 "Flink-Minor-Version": "flink_minor", "Flink-Version": "flink"}


class FlinkSetupError(RuntimeError):
    """``make flink`` cannot proceed (no Java, Maven or network); the message says what."""


def flink_dir() -> Path:
    """Where ``make flink`` puts things: ``$NDCL_FLINK_DIR`` or ``<repo>/.ndcl/flink``."""
    override = os.environ.get("NDCL_FLINK_DIR")
    return Path(override) if override else REPO / ".ndcl" / "flink"


def job_server_jar(base: Path | None = None) -> Path:
    """The launcher jar ``make flink`` writes (it may not exist)."""
    return (base or flink_dir()) / "job-server" / JAR_NAME


def flink_home(base: Path | None = None, version: str = FLINK_VERSION) -> Path:
    """The Flink distribution ``make flink`` assembles (it may not exist)."""
    return (base or flink_dir()) / f"flink-{version}"


def jar_versions(jar: Path) -> dict[str, str]:
    """Versions a job-server jar declares in its manifest (``beam``, ``flink_minor``, ...);
    empty for a jar without them (e.g. Beam's own shadow jar)."""
    try:
        with zipfile.ZipFile(jar) as zf:
            text = zf.read("META-INF/MANIFEST.MF").decode("utf-8", "replace")
    except (OSError, KeyError, zipfile.BadZipFile):
        return {}
    # Manifest lines wrap at 72 bytes; a continuation line starts with one space.
    text = text.replace("\r\n", "\n").replace("\n ", "")
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(": ")
        if key in MANIFEST_KEYS:
            out[MANIFEST_KEYS[key]] = value.strip()
    return out


def _tree_size(path: Path) -> tuple[int, int]:
    files = [p for p in path.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def _need(tool: str, why: str) -> str:
    found = shutil.which(tool)
    if not found:
        raise FlinkSetupError(f"`make flink` needs {tool} ({why}) on PATH")
    return found


def java_major() -> int | None:
    """Major version of ``java`` on PATH, or None without one."""
    java = shutil.which("java")
    if not java:
        return None
    proc = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    for token in (proc.stderr + proc.stdout).split('"')[1:2]:
        head = token.split(".")
        return int(head[1]) if head[0] == "1" else int(head[0].split("-")[0])
    return None


def fetch_job_server(base: Path, beam_version: str = BEAM_VERSION,
                     flink_minor: str = FLINK_MINOR, flink_version: str = FLINK_VERSION,
                     force: bool = False) -> dict[str, Any]:
    """Build ``job-server/`` with Maven (dependencies from Maven Central, cached in
    ``~/.m2``). Skipped when the jar there already has these versions, unless ``force``."""
    jar = job_server_jar(base)
    wanted = {"beam": beam_version, "flink_minor": flink_minor, "flink": flink_version}
    have = jar_versions(jar) if jar.is_file() else {}
    if not force and all(have.get(k) == v for k, v in wanted.items()):
        count, size = _tree_size(jar.parent)
        return {"skipped": True, "jar": str(jar), **have, "files": count, "bytes": size}
    mvn = _need("mvn", "Maven, to fetch Beam's Flink runner from Maven Central")
    _need("java", "Java 11+, to run Maven and the job server")
    shutil.rmtree(jar.parent, ignore_errors=True)  # no stale lib/ jars of another version
    command = [mvn, "-B", "-q", "-f", str(POM), "package", f"-Dbeam.version={beam_version}",
               f"-Dflink.minor={flink_minor}", f"-Dflink.version={flink_version}",
               f"-Dndcl.flink.dir={base}"]
    start = time.monotonic()
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - start
    shutil.rmtree(base / "build", ignore_errors=True)  # Maven's target/
    if proc.returncode != 0 or not jar.is_file():
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise FlinkSetupError(f"Maven could not assemble the job server ({' '.join(command)}):"
                              f"\n{tail}")
    count, size = _tree_size(jar.parent)
    return {"skipped": False, "jar": str(jar), **jar_versions(jar), "files": count,
            "bytes": size, "seconds": round(seconds, 1),
            "maven": f"org.apache.beam:beam-runners-flink-{flink_minor}:{beam_version}"}


def _pip_download(dest: Path, *args: str) -> Path:
    before = set(dest.glob("*"))
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d",
               str(dest), *args]
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise FlinkSetupError(f"pip could not download {args[-1]}: "
                              f"{(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
    project, version = args[-1].split("==")
    # apache-flink-libraries-1.19.3.tar.gz, apache_flink-1.19.3-cp311-...whl
    prefix = f"{project}_{version}".replace("-", "_").lower()
    matches = [p for p in dest.glob("*")
               if p.name.replace("-", "_").lower().startswith(prefix)]
    if not matches:
        raise FlinkSetupError(f"pip download {args[-1]} left no file in {dest} "
                              f"(new: {sorted(set(dest.glob('*')) - before)})")
    return matches[0]


def _write(target: Path, data: bytes, executable: bool) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    if executable:
        target.chmod(target.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def _safe(rel: str) -> bool:
    parts = Path(rel).parts
    return bool(parts) and not Path(rel).is_absolute() and ".." not in parts


def assemble_flink_home(libraries_sdist: Path, flink_wheel: Path, home: Path) -> None:
    """Unpack ``deps/{lib,opt,plugins,bin,licenses}`` of the apache-flink-libraries sdist and
    ``pyflink/{bin,conf}`` of the apache-flink wheel into ``home`` (a Flink distribution's
    layout). Written to a temporary folder first, then renamed."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{home.name}-", dir=home.parent))
    try:
        with tarfile.open(libraries_sdist, "r:gz") as tar:
            for member in tar:
                parts = member.name.split("/", 2)  # apache-flink-libraries-V/deps/...
                if not member.isfile() or len(parts) < 3 or parts[1] != "deps":
                    continue
                rel = parts[2]
                if rel.split("/")[0] not in ("lib", "opt", "plugins", "bin", "licenses") \
                        or not _safe(rel):
                    continue
                handle = tar.extractfile(member)
                assert handle is not None
                _write(tmp / rel, handle.read(), executable=False)
        with zipfile.ZipFile(flink_wheel) as zf:
            for info in zf.infolist():
                parts = info.filename.split("/", 2)  # pyflink/bin/..., pyflink/conf/...
                if info.is_dir() or len(parts) < 3 or parts[0] != "pyflink" \
                        or parts[1] not in ("bin", "conf") or not _safe(parts[2]):
                    continue
                rel = f"{parts[1]}/{parts[2]}"
                script = parts[1] == "bin" and not rel.endswith((".jar", ".bat"))
                _write(tmp / rel, zf.read(info), executable=script)
        (tmp / "log").mkdir(exist_ok=True)
        missing = [p for p in ("bin/jobmanager.sh", "bin/taskmanager.sh", "bin/config.sh",
                               "bin/bash-java-utils.jar", "conf/config.yaml")
                   if not (tmp / p).is_file()]
        if not list((tmp / "lib").glob("flink-dist-*.jar")):
            missing.append("lib/flink-dist-*.jar")
        if missing:
            raise FlinkSetupError(f"the PyPI files lack {', '.join(missing)}")
        shutil.rmtree(home, ignore_errors=True)
        tmp.rename(home)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fetch_flink(base: Path, flink_version: str = FLINK_VERSION,
                force: bool = False) -> dict[str, Any]:
    """Download the two PyPI files of Flink ``flink_version`` and assemble ``flink-V/``."""
    home = flink_home(base, flink_version)
    if not force and list((home / "lib").glob(f"flink-dist-{flink_version}.jar")) and \
            (home / "bin" / "jobmanager.sh").is_file():
        count, size = _tree_size(home)
        return {"skipped": True, "home": str(home), "flink": flink_version, "files": count,
                "bytes": size}
    downloads = base / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    sdist = _pip_download(downloads, "--no-binary=:all:",
                          f"apache-flink-libraries=={flink_version}")
    # Only bin/ and conf/ (text) are used, so any one wheel will do: pick a fixed one so that
    # the interpreter running this does not matter.
    wheel = _pip_download(downloads, "--only-binary=:all:", "--platform",
                          "manylinux2014_x86_64", "--python-version", "3.11",
                          "--implementation", "cp", "--abi", "cp311",
                          f"apache-flink=={flink_version}")
    downloaded = time.monotonic() - start
    sizes = {p.name: p.stat().st_size for p in (sdist, wheel)}
    assemble_flink_home(sdist, wheel, home)
    shutil.rmtree(downloads, ignore_errors=True)  # 220 MiB; pip's cache keeps a copy
    count, size = _tree_size(home)
    return {"skipped": False, "home": str(home), "flink": flink_version, "downloads": sizes,
            "download_seconds": round(downloaded, 1),
            "seconds": round(time.monotonic() - start, 1), "files": count, "bytes": size}


def fetch(base: Path | None = None, *, beam_version: str = BEAM_VERSION,
          flink_minor: str = FLINK_MINOR, flink_version: str = FLINK_VERSION,
          job_server: bool = True, distribution: bool = True,
          force: bool = False) -> dict[str, Any]:
    """Fetch what is asked for, record it in ``fetched.json`` and return that record."""
    base = (base or flink_dir()).resolve()
    base.mkdir(parents=True, exist_ok=True)
    record_path = base / "fetched.json"
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError):
        record = {}
    if job_server:
        record["job_server"] = fetch_job_server(base, beam_version, flink_minor, flink_version,
                                                force)
    if distribution:
        record["flink_home"] = fetch_flink(base, flink_version, force)
    record["java"] = java_major()
    record["fetched_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    record_path.write_text(json.dumps(record, indent=2) + "\n")
    return record


def _mib(n: int) -> str:
    return f"{n / 2**20:.0f} MiB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m runners.flink.dist",
        description="Fetch Beam's Flink job server (Maven) and a Flink distribution (PyPI) "
                    "into .ndcl/flink/ ($NDCL_FLINK_DIR).")
    sub = parser.add_subparsers(dest="command", required=True)
    get = sub.add_parser("fetch", help="fetch what is missing (what `make flink` runs)")
    get.add_argument("--beam-version", default=BEAM_VERSION,
                     help=f"Beam version of the Flink runner (default: {BEAM_VERSION})")
    get.add_argument("--flink-minor", default=FLINK_MINOR,
                     help=f"Flink line of the runner artifact (default: {FLINK_MINOR})")
    get.add_argument("--flink-version", default=FLINK_VERSION,
                     help=f"Flink release (default: {FLINK_VERSION})")
    get.add_argument("--job-server-only", action="store_true",
                     help="skip the Flink distribution (enough for the embedded Flink)")
    get.add_argument("--force", action="store_true", help="fetch again even if present")
    sub.add_parser("where", help="print the job server jar and Flink home (may not exist)")
    args = parser.parse_args(argv)
    if args.command == "where":
        print(json.dumps({"dir": str(flink_dir()), "job_server_jar": str(job_server_jar()),
                          "job_server_present": job_server_jar().is_file(),
                          "flink_home": str(flink_home()),
                          "flink_home_present": (flink_home() / "bin").is_dir()}, indent=2))
        return 0
    major = java_major()
    if major is None or major < 11:
        print(f"make flink: needs Java 11+ on PATH (found: {major})", file=sys.stderr)
        return 2
    try:
        record = fetch(beam_version=args.beam_version, flink_minor=args.flink_minor,
                       flink_version=args.flink_version, distribution=not args.job_server_only,
                       force=args.force)
    except FlinkSetupError as exc:
        print(f"make flink: {exc}", file=sys.stderr)
        return 1
    js = record["job_server"]
    print(f"job server: {js['jar']} (Beam {js.get('beam')}, Flink {js.get('flink')}; "
          f"{js['files']} files, {_mib(js['bytes'])}"
          + (", already there)" if js["skipped"] else f", {js['seconds']} s)"))
    if "flink_home" in record and not args.job_server_only:
        fh = record["flink_home"]
        print(f"flink home: {fh['home']} ({fh['files']} files, {_mib(fh['bytes'])}"
              + (", already there)" if fh["skipped"] else f", {fh['seconds']} s)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
