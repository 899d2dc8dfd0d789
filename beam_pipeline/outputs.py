"""Output safety: NDCL replaces only what it wrote, and says so before any work starts.

Rules (README "Output safety"; local paths and object stores such as ``gs://`` alike):

- ``OUT`` is replaced only when it is absent, an empty folder, or an earlier NDCL output. An
  NDCL output is recognised by ``_ndcl.json``, a manifest that only NDCL writes: a signature and
  the list of every file the run wrote. Outputs of NDCL versions older than the manifest are
  recognised by ``_SUCCESS`` + an NDCL ``summary.json``, with their files told apart by NDCL's
  file names. Anything else in ``OUT`` (a file NDCL did not write, a folder of the user's) is
  an :class:`OutputError` (exit 2) naming the path and the first foreign files, before any
  work. A plain file or a symbolic link as ``OUT`` is refused and left untouched.
- Replacing an earlier output deletes exactly the files its manifest lists (plus the files
  NDCL adds to a finished output: ``evaluation.json``, ``run-record.json``), never a folder
  or prefix wholesale, so a file that appears in ``OUT`` during the run survives.
- An input file inside ``OUT`` (or its staging or set-aside folders) is refused: the commit
  would delete it.
- The output location is proved writable before the job starts: the staging folder
  ``OUT.ndcl-staging`` is created and its marker ``_ndcl_staging.json`` written first. A
  staging folder left by a crashed run (it holds the marker, or the manifest, or nothing) is
  NDCL's own and is cleared; one that is not NDCL's is refused. ``OUT.ndcl-old`` (the earlier
  output, set aside during a local commit) is cleared only when it is an NDCL output.

Nothing named ``*.ndcl-staging`` or ``*.ndcl-old`` is left after a successful run.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import dataclass, field

from apache_beam.io.filesystems import FileSystems

LOG = logging.getLogger("ndcl")

MANIFEST = "_ndcl.json"
STAGING_MARKER = "_ndcl_staging.json"
SIGNATURE = "NDCL output"
STAGING_SIGNATURE = "NDCL staging"
# Files NDCL adds to a finished output (``ndcl evaluate``; the run record when the database
# is unreachable) and the markers themselves: NDCL's whatever the manifest says.
NDCL_NAMES = frozenset({MANIFEST, "_SUCCESS", "summary.json", "evaluation.json",
                        "run-record.json"})
# What outputs written before the manifest existed hold (kept/duplicates/rejected parts, the
# stats and cluster reports, the K-Means models).
_LEGACY_FILE = re.compile(
    r"(kept|duplicates)/part-[0-9a-f]+\.parquet|rejected/part-[0-9a-f]+\.jsonl"
    r"|_models/[^/]+|_stats\.json|_cluster_[a-z_]+\.json")
_LEGACY_SUMMARY_KEYS = {"read", "kept", "duplicates", "rejected", "wall_seconds"}
SHOWN = 3  # foreign files named in an error


class OutputError(ValueError):
    """The output location cannot be used safely; one line naming the path and why."""


def is_local(path: str) -> bool:
    return "://" not in path


def staging_path(output: str) -> str:
    return output.rstrip("/") + ".ndcl-staging"


def aside_path(output: str) -> str:
    return output.rstrip("/") + ".ndcl-old"


def _join(folder: str, relative: str) -> str:
    return f"{folder.rstrip('/')}/{relative}"


def list_files(folder: str) -> list[str] | None:
    """Every file under ``folder`` as a sorted relative path; ``None`` when there is no such
    folder (on an object store: no object under the prefix). Local symbolic links and empty
    folders count as entries (``name/`` for a folder), since they are the user's too."""
    if is_local(folder):
        if not os.path.lexists(folder):
            return None
        if os.path.islink(folder) or not os.path.isdir(folder):
            raise OutputError(f"{folder} is not a folder")
        found = []
        for root, dirs, files in os.walk(folder):
            rel = os.path.relpath(root, folder)
            prefix = "" if rel == "." else rel.replace(os.sep, "/") + "/"
            found += [prefix + name for name in files]
            found += [prefix + name for name in dirs if os.path.islink(os.path.join(root, name))]
            if not dirs and not files and prefix:
                found.append(prefix)  # an empty folder of the user's
        return sorted(found)
    prefix = folder.rstrip("/") + "/"
    metadata = FileSystems.match([prefix + "**"])[0].metadata_list
    found = sorted(m.path[len(prefix):] for m in metadata if m.path.startswith(prefix))
    return found or None


def read_json_or_none(path: str) -> object:
    """The JSON at ``path`` (any Beam filesystem), or None when it is absent or unreadable."""
    try:
        with FileSystems.open(path) as handle:
            return json.loads(handle.read().decode("utf-8"))
    except Exception:
        return None


@dataclass(frozen=True)
class Existing:
    """What is at an output location: ``absent``, ``empty`` or an earlier ``ndcl`` output,
    with the files that are NDCL's (the ones a commit may delete)."""

    path: str
    kind: str
    files: tuple[str, ...] = field(default=())


def _manifest_files(folder: str, files: list[str]) -> set[str] | None:
    if MANIFEST in files:
        manifest = read_json_or_none(_join(folder, MANIFEST))
        if isinstance(manifest, dict) and manifest.get("signature") == SIGNATURE:
            return set(manifest.get("files") or ()) | NDCL_NAMES
        return None
    if "_SUCCESS" in files and "summary.json" in files:
        summary = read_json_or_none(_join(folder, "summary.json"))
        if isinstance(summary, dict) and _LEGACY_SUMMARY_KEYS <= set(summary):
            return {f for f in files if f in NDCL_NAMES or _LEGACY_FILE.fullmatch(f)}
    return None


def _foreign(path: str, files: list[str], why: str) -> OutputError:
    shown = ", ".join(files[:SHOWN]) + (f" and {len(files) - SHOWN} more"
                                        if len(files) > SHOWN else "")
    return OutputError(f"{path} {why}: {shown}; NDCL replaces only an empty folder or its own "
                       "earlier output, so move those away or choose another --output")


def inspect_output(path: str) -> Existing:
    """Classify ``path``; raises :class:`OutputError` when it holds anything not NDCL's."""
    if is_local(path) and os.path.lexists(path):
        if os.path.islink(path):
            raise OutputError(f"{path} is a symbolic link; give the folder it points to, or "
                              "another --output (NDCL will not replace a link)")
        if not os.path.isdir(path):
            raise OutputError(f"{path} is a file, not a folder; NDCL writes a folder of part "
                              "files and will not replace a file (choose another --output)")
    files = list_files(path)
    if files is None:
        if not is_local(path) and FileSystems.exists(path.rstrip("/")):
            raise OutputError(f"{path} is an object (a file), not a folder; NDCL will not "
                              "replace it (choose another --output)")
        return Existing(path, "absent")
    if not files:
        return Existing(path, "empty")
    ours = _manifest_files(path, files)
    if ours is None:
        raise _foreign(path, files, "is not empty and is not an NDCL output (no "
                                    f"{MANIFEST}); it holds")
    foreign = [f for f in files if f not in ours]
    if foreign:
        raise _foreign(path, foreign, "is an earlier NDCL output but also holds files NDCL "
                                      "did not write")
    return Existing(path, "ndcl", tuple(files))


def _inside(path: str, folder: str) -> bool:
    if is_local(path) != is_local(folder):
        return False
    if is_local(path):
        path, folder = os.path.realpath(path), os.path.realpath(folder)
        return os.path.commonpath([path, folder]) == folder
    return path.startswith(folder.rstrip("/") + "/")


def check_inputs_outside(files: list[str], output: str) -> None:
    for folder in (output, staging_path(output), aside_path(output)):
        inside = [f for f in files if _inside(f, folder)]
        if inside:
            raise OutputError(f"input file {inside[0]} is inside the output folder {folder}, "
                              "which NDCL replaces; choose another --output")


def delete_files(folder: str, files: list[str] | tuple[str, ...]) -> None:
    """Delete exactly ``files`` (relative to ``folder``), then the local folders they leave
    empty (``folder`` included); a folder still holding anything else is left as it is."""
    if not files:
        if is_local(folder) and os.path.isdir(folder) and not os.listdir(folder):
            os.rmdir(folder)
        return
    if not is_local(folder):
        FileSystems.delete([_join(folder, f) for f in files])
        return
    parents = set()
    for name in files:
        target = os.path.join(folder, *name.rstrip("/").split("/"))
        if name.endswith("/"):
            parents.add(target)
            continue
        if os.path.lexists(target):
            os.remove(target)
        parents.add(os.path.dirname(target))
    for parent in sorted(parents, key=len, reverse=True):
        while _inside(parent, folder):
            try:
                os.rmdir(parent)
            except OSError:
                break  # not empty: something that is not ours, or a sibling still there
            if os.path.realpath(parent) == os.path.realpath(folder):
                break
            parent = os.path.dirname(parent)


def _clear_stale_staging(staging: str) -> None:
    files = list_files(staging)
    if files is None:
        return
    marked = STAGING_MARKER in files or MANIFEST in files
    if files and not marked:
        raise _foreign(staging, files, "exists and was not made by NDCL (no "
                                       f"{STAGING_MARKER}); it holds")
    LOG.info("clearing %s, left by an earlier run that did not finish", staging)
    delete_files(staging, files)


def discard_staging(staging: str) -> None:
    """Delete a failed run's staging folder, if it is NDCL's (its marker is there); never
    raises, so that the run's own error is what the user sees."""
    try:
        files = list_files(staging)
        if files and STAGING_MARKER in files:
            delete_files(staging, files)
    except Exception:  # best effort: the next run clears a marked staging folder anyway
        LOG.warning("could not remove the staging folder %s", staging, exc_info=True)


def prepare_output(output: str, files: list[str]) -> tuple[str, Existing]:
    """Check ``output`` against the rules of this module, clear NDCL's own leftovers and
    create the staging folder with its marker; returns ``(staging, existing output)``.
    Raises :class:`OutputError` before anything of the user's is touched."""
    existing = inspect_output(output)
    check_inputs_outside(files, output)
    staging = staging_path(output)
    if is_local(output):
        aside = aside_path(output)
        if os.path.lexists(aside):
            old = inspect_output(aside)  # an NDCL output whose commit was interrupted
            LOG.info("clearing %s, an earlier output set aside by a commit that did not "
                     "finish", aside)
            delete_files(aside, old.files)
    _clear_stale_staging(staging)
    marker = {"signature": STAGING_SIGNATURE, "output": output, "pid": os.getpid(),
              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    try:
        if is_local(staging):
            os.makedirs(staging)
        write_bytes(_join(staging, STAGING_MARKER), json.dumps(marker).encode())
    except Exception as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        reason = reason.splitlines()[0] if reason else type(exc).__name__
        raise OutputError(f"cannot write the output {output}: creating {staging} failed "
                          f"({reason})") from exc
    return staging, existing


def write_bytes(path: str, data: bytes) -> None:
    with FileSystems.create(path) as handle:
        handle.write(data)


def write_manifest(staging: str, run: dict[str, object] | None = None) -> list[str]:
    """Write ``_ndcl.json`` listing every file in ``staging`` (the marker excepted) and
    ``_SUCCESS``; returns the listed files."""
    files = [f for f in list_files(staging) or [] if f not in (STAGING_MARKER, MANIFEST)]
    files = sorted({*files, "_SUCCESS", MANIFEST})
    manifest = {"signature": SIGNATURE, "format": 1, "files": files, **(run or {})}
    write_bytes(_join(staging, MANIFEST), (json.dumps(manifest, indent=1) + "\n").encode())
    return files


def commit_output(staging: str, output: str, run: dict[str, object] | None = None) -> None:
    """Replace ``output`` by ``staging`` so that no crash can leave an ``output`` that looks
    finished (``_SUCCESS``) but is not, and delete only what NDCL wrote.

    The manifest and ``_SUCCESS`` are written into the staging folder first. Local disk: the
    old output is renamed aside, the staging folder renamed into place, then the old one's
    files deleted; a crash between the two renames leaves no ``output`` (and the old one
    complete under ``<output>.ndcl-old``), never a half-deleted one. Object stores have no
    folder rename: the old ``_SUCCESS`` goes first, the manifest is renamed first and the new
    ``_SUCCESS`` last.
    """
    existing = inspect_output(output)  # again: the user may have added files meanwhile
    write_manifest(staging, run)
    write_bytes(_join(staging, "_SUCCESS"), b"")
    if is_local(output):
        marker = _join(staging, STAGING_MARKER)
        if os.path.lexists(marker):
            os.remove(marker)
        aside = aside_path(output)
        old = existing
        if existing.kind != "absent":
            os.replace(output, aside)
        elif os.path.lexists(aside):
            old = inspect_output(aside)  # set aside by a commit that was interrupted
        os.replace(staging, output)
        if os.path.lexists(aside):
            delete_files(aside, old.files)
            if os.path.lexists(aside):
                LOG.warning("%s still holds files NDCL did not write; left as it is", aside)
        return
    old = list(existing.files)
    if "_SUCCESS" in old:
        FileSystems.delete([_join(output, "_SUCCESS")])
        old.remove("_SUCCESS")
    delete_files(output, old)
    files = [f for f in list_files(staging) or [] if f != STAGING_MARKER]
    # Three calls: a batch rename may run its copies in any order; the manifest goes first
    # (a partial output is then still recognised as NDCL's) and the marker last.
    for batch in ([MANIFEST], [f for f in files if f not in (MANIFEST, "_SUCCESS")],
                  ["_SUCCESS"]):
        FileSystems.rename([_join(staging, f) for f in batch], [_join(output, f) for f in batch])
    FileSystems.delete([_join(staging, STAGING_MARKER)])


def check_report_folder(folder: str, names: tuple[str, ...], marks: tuple[str, ...]) -> None:
    """``ndcl report``'s folder may hold anything, but the files the report writes
    (``index.html`` and ``names``) may only replace an earlier report: when any of them is
    there, ``index.html`` must be there and carry one of ``marks``. Other files are left
    alone (a report folder may sit beside a run database or a truth file)."""
    files = set(list_files(folder) or ())
    clashing = sorted(files & {"index.html", *names})
    if not clashing:
        return
    if "index.html" not in files:
        raise _foreign(folder, clashing, "holds files that ndcl report would overwrite but "
                                         "did not write (no index.html of a report)")
    with FileSystems.open(_join(folder, "index.html")) as handle:
        head = handle.read(4096).decode("utf-8", errors="replace")
    if not any(mark in head for mark in marks):
        raise OutputError(f"{folder}/index.html was not written by ndcl report; NDCL will "
                          "not replace it (choose another --output)")


def check_replaceable_file(path: str, keys: tuple[str, ...]) -> None:
    """A single-file output (``ndcl truth``): absent, or an earlier NDCL file (a JSON object
    with ``keys``); anything else is refused before any work."""
    if is_local(path) and os.path.isdir(path):
        raise OutputError(f"{path} is a folder; give a file name")
    if not FileSystems.exists(path):
        return
    data = read_json_or_none(path)
    if not (isinstance(data, dict) and set(keys) <= set(data)):
        raise OutputError(f"{path} exists and is not a file NDCL wrote (a JSON object with "
                          f"{', '.join(keys)}); NDCL will not replace it (choose another "
                          "--output)")
