"""``transforms.faults``: an injected fault fires once (its marker file)."""

from __future__ import annotations

from pathlib import Path

import pytest

from transforms import faults


def test_faults_fire_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "marker"
    assert not faults.fires("write_fail")
    monkeypatch.setenv(faults.ENV, f"other=x,write_fail={marker}")
    with pytest.raises(faults.InjectedFault):
        faults.inject("write")
    assert marker.exists()
    faults.inject("write")  # the marker is there: no second fault
