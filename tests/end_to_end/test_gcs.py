"""``gs://`` input and output through Beam's FileSystems, against a local GCS emulator
(the ``gcp-storage-emulator`` package, started in-process on 127.0.0.1; no cloud needed)."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from beam_pipeline.cli import main
from tests.fixtures import planted_records, write_corpus
from tests.reference import read_docs, reference_dedup

emulator = pytest.importorskip("gcp_storage_emulator.server")
storage = pytest.importorskip("google.cloud.storage")

BUCKET = "ndcl-test"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def gcs_bucket() -> Iterator[object]:
    port = free_port()
    server = emulator.create_server("127.0.0.1", port, in_memory=True)
    server.start()
    previous = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = f"http://127.0.0.1:{port}"
    try:
        client = storage.Client.create_anonymous_client()
        client.project = "ndcl-test"
        yield client.create_bucket(BUCKET)
    finally:
        server.stop()
        if previous is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = previous


def test_gs_input_and_output(gcs_bucket: object, tmp_path: Path) -> None:
    files = write_corpus(tmp_path / "in", planted_records(seed=3), files=2)
    for path in files:
        gcs_bucket.blob(f"in/{path.name}").upload_from_filename(str(path))
    out = f"gs://{BUCKET}/out"
    assert main(["-q", "dedup", "--input", f"gs://{BUCKET}/in/part-*", "--output", out]) == 0
    names = {blob.name for blob in gcs_bucket.list_blobs(prefix="out/")}
    assert "out/summary.json" in names and "out/_SUCCESS" in names
    assert not any(n.startswith("out.ndcl-staging/") for n in
                   (b.name for b in gcs_bucket.list_blobs()))
    summary = json.loads(gcs_bucket.blob("out/summary.json").download_as_bytes())
    local_dups = tmp_path / "dups"
    local_dups.mkdir()
    for name in names:
        if name.startswith("out/duplicates/"):
            gcs_bucket.blob(name).download_to_filename(str(local_dups / Path(name).name))
    dups = pq.read_table(local_dups).to_pylist()
    # Ids come from the file base names, so they match a local read of the same files.
    expected = reference_dedup(read_docs(files))
    assert {d["id"]: (d["duplicate_of"], d["reason"]) for d in dups} == expected
    assert summary["read"] == summary["kept"] + summary["duplicates"] + summary["rejected"]


def test_gs_pattern_matching_nothing_is_an_error(gcs_bucket: object, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="matches no file"):
        from transforms.read import match_inputs

        match_inputs([f"gs://{BUCKET}/nothing-here/*.json"])


def _objects(bucket: object, prefix: str = "") -> dict[str, bytes]:
    return {b.name: b.download_as_bytes() for b in bucket.list_blobs(prefix=prefix)}


def test_gs_output_safety(gcs_bucket: object, tmp_path: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    """The output rules on an object store: a prefix holding objects NDCL did not write is
    refused untouched; an earlier NDCL output is replaced object by object (neighbours whose
    names merely start alike survive); an object as OUT is refused; a stale staging prefix
    of NDCL's is cleared."""
    files = write_corpus(tmp_path / "in", planted_records(seed=4), files=1)
    gcs_bucket.blob("safe/in.json").upload_from_filename(str(files[0]))
    source = f"gs://{BUCKET}/safe/in.json"

    gcs_bucket.blob("safe/theirs/notes.txt").upload_from_string(b"mine")
    before = _objects(gcs_bucket, "safe/theirs")
    assert main(["-q", "dedup", "--input", source, "--output", f"gs://{BUCKET}/safe/theirs"]) == 2
    assert "not an NDCL output" in capsys.readouterr().err
    assert _objects(gcs_bucket, "safe/theirs") == before

    gcs_bucket.blob("safe/anobject").upload_from_string(b"data")
    assert main(["-q", "dedup", "--input", source, "--output", f"gs://{BUCKET}/safe/anobject"]
                ) == 2
    assert "is an object" in capsys.readouterr().err
    assert gcs_bucket.blob("safe/anobject").download_as_bytes() == b"data"

    out = f"gs://{BUCKET}/safe/out"
    gcs_bucket.blob("safe/out-notes.txt").upload_from_string(b"neighbour")
    gcs_bucket.blob("safe/out2/keep.txt").upload_from_string(b"neighbour")
    gcs_bucket.blob("safe/out.ndcl-staging/_ndcl_staging.json").upload_from_string(b"{}")
    gcs_bucket.blob("safe/out.ndcl-staging/kept/part-1.parquet").upload_from_string(b"half")
    assert main(["-q", "dedup", "--input", source, "--output", out]) == 0
    first = _objects(gcs_bucket, "safe/out/")
    assert "safe/out/_ndcl.json" in first and "safe/out/_SUCCESS" in first
    assert not _objects(gcs_bucket, "safe/out.ndcl-staging")
    gcs_bucket.blob("safe/out/evaluation.json").upload_from_string(b"{}")
    assert main(["-q", "dedup", "--input", source, "--output", out]) == 0
    assert _objects(gcs_bucket, "safe/out/").keys() == first.keys()
    assert gcs_bucket.blob("safe/out-notes.txt").download_as_bytes() == b"neighbour"
    assert gcs_bucket.blob("safe/out2/keep.txt").download_as_bytes() == b"neighbour"

    gcs_bucket.blob("safe/out/user.csv").upload_from_string(b"1,2")
    assert main(["-q", "dedup", "--input", source, "--output", out]) == 2
    assert "did not write" in capsys.readouterr().err
    assert gcs_bucket.blob("safe/out/user.csv").download_as_bytes() == b"1,2"

    gcs_bucket.blob("safe/out/user.csv").delete()
    assert main(["-q", "dedup", "--input", f"gs://{BUCKET}/safe/out/kept/*", "--output", out]
                ) == 2
    assert "inside the output folder" in capsys.readouterr().err
