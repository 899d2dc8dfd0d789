"""``beam_pipeline.outputs``: a commit never leaves a half-deleted output. (The output safety of
the CLI: ``tests/end_to_end/test_output_safety.py``.)"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from beam_pipeline import outputs


def test_commit_never_leaves_a_half_deleted_output(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    staging, _ = outputs.prepare_output(str(out), [])
    (Path(staging) / "kept").mkdir()
    (Path(staging) / "kept" / "part-0.parquet").write_text("old")
    outputs.commit_output(staging, str(out))  # an earlier NDCL output, with its manifest
    new, _ = outputs.prepare_output(str(out), [])
    (Path(new) / "kept").mkdir()
    (Path(new) / "kept" / "part-0.parquet").write_text("new")
    replace = os.replace
    calls: list[str] = []

    def crash_on_second(src: str, dst: str) -> None:
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed between the two renames")
        replace(src, dst)

    monkeypatch.setattr(outputs.os, "replace", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        outputs.commit_output(new, str(out))
    # No OUT at all (nothing to mistake for finished); the old one is whole beside it.
    assert not out.exists()
    aside = Path(outputs.aside_path(str(out)))
    assert (aside / "_SUCCESS").exists()
    assert (aside / "kept" / "part-0.parquet").read_text() == "old"
    monkeypatch.setattr(outputs.os, "replace", replace)
    outputs.commit_output(new, str(out))
    assert (out / "kept" / "part-0.parquet").read_text() == "new" and (out / "_SUCCESS").exists()
    assert not aside.exists() and not Path(new).exists()
