"""Every byte of ``kept/``, ``duplicates/`` and ``rejected/`` as the code wrote it before the
bounded-memory rework (digests recorded in ``tests/data/output-digests.json``, see
``tests/digests.py``): on the demo corpus for every command, and on ``../shared/data``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.digests import CASES, DIGESTS, needs_shared, run_case

pytestmark = pytest.mark.slow

RECORDED = json.loads(DIGESTS.read_text())


@pytest.mark.parametrize("name", sorted(CASES))
def test_output_bytes_unchanged(name: str, tmp_path: Path, request: pytest.FixtureRequest
                                ) -> None:
    if needs_shared(name):
        request.getfixturevalue("shared_data")  # skips when ../shared/data is absent
    assert run_case(name, tmp_path) == RECORDED[name]
