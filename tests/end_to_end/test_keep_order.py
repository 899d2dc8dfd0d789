"""The ``smallest_id`` keep order (issue 10) through the CLI: the lower line number is kept.
The order itself: ``tests/transforms/test_exact.py``."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from beam_pipeline.cli import main
from tests.reference import read_docs, reference_dedup


@pytest.mark.slow
def test_cli_keeps_the_lower_line_number(tmp_path: Path) -> None:
    rng = random.Random(3)
    words = [f"w{i}" for i in range(3000)]

    def text(length: int) -> list[str]:
        return [rng.choice(words) for _ in range(length)]

    records = [{"text": " ".join(text(40))} for _ in range(1100)]
    exact = " ".join(text(60))
    records[4 - 1] = {"text": exact}
    records[1072 - 1] = {"text": exact.upper().replace(" ", ", ")}  # same normalised text
    def edited(tokens: list[str]) -> str:
        return " ".join([*tokens[:50], "changed", *tokens[51:]])  # Jaccard about 0.9

    near = text(100)
    records[9 - 1] = {"text": " ".join(near)}
    records[10 - 1] = {"text": edited(near)}
    # Explicit ids: code point order, even when shaped like a derived id.
    records[20 - 1] = {"id": "9", "text": " ".join(text(50))}
    records[21 - 1] = {"id": "10", "text": records[20 - 1]["text"]}
    other = text(100)
    records[30 - 1] = {"id": "foo:9", "text": " ".join(other)}
    records[31 - 1] = {"id": "foo:12", "text": edited(other)}
    path = tmp_path / "in.json.gz"
    path.write_bytes(gzip.compress(
        "".join(json.dumps(r) + "\n" for r in records).encode(), mtime=0))
    out = tmp_path / "out"
    assert main(["-q", "dedup", "--input", str(path), "--output", str(out)]) == 0
    dups = {d["id"]: (d["duplicate_of"], d["reason"])
            for d in pq.read_table(out / "duplicates").to_pylist()}
    assert dups == {
        "in.json.gz:1072": ("in.json.gz:4", "exact"),  # string order kept :1072
        "in.json.gz:10": ("in.json.gz:9", "near"),     # string order kept :10
        "9": ("10", "exact"),
        "foo:9": ("foo:12", "near"),
    }
    assert dups == reference_dedup(read_docs([path]))
