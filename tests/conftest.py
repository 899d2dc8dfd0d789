"""Shared fixtures: repository paths and the optional ../shared data folder."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEMO_CORPUS = REPO / "data" / "demo" / "c4-demo.00000-of-00001.json.gz"
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the checkout; tests that need it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent (a user's clone has no shared folder)")
    return SHARED_DATA


@pytest.fixture(autouse=True, scope="session")
def benchmark_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Runs made by tests are recorded in a throwaway SQLite file, not the working directory."""
    import os

    path = tmp_path_factory.mktemp("db") / "ndcl-test.db"
    os.environ["NDCL_DB_URL"] = f"sqlite:///{path}"
    return path


def parse_runner_flags(*argv: str) -> argparse.Namespace:
    """``argv`` parsed by a parser with only ``ndcl``'s runner flags."""
    from runners.options import add_runner_flags

    parser = argparse.ArgumentParser()
    add_runner_flags(parser)
    return parser.parse_args(list(argv))


def beam_args(*argv: str) -> list[str]:
    """The Beam options ``ndcl``'s runner flags ``argv`` turn into."""
    from runners.options import runner_beam_args

    return runner_beam_args(parse_runner_flags(*argv))
