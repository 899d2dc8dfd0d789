"""``beam_pipeline.run_outputs``: reading a finished output checks the output contract."""

from __future__ import annotations

from pathlib import Path

import pytest

from beam_pipeline.run_outputs import read_output
from beam_pipeline.truth import EvaluationError
from tests.beam_pipeline.conftest import ROWS, write_output


def test_read_output_checks_the_contract(tmp_path: Path) -> None:
    out = write_output(tmp_path / "ok", ["a", "d", "c"], ROWS)
    run = read_output(str(out))
    assert run.duplicate_of == ROWS and run.doc_ids == frozenset("abcdef")
    (out / "_SUCCESS").unlink()
    with pytest.raises(EvaluationError, match="no _SUCCESS"):
        read_output(str(out))
    with pytest.raises(EvaluationError, match="does not exist"):
        read_output(str(tmp_path / "missing"))
    chained = write_output(tmp_path / "chained", ["a"], {"b": "a", "c": "b"})
    with pytest.raises(EvaluationError, match="itself a removed document"):
        read_output(str(chained))
