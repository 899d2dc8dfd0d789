"""Imported first by the ``ndcl`` program (``beam_pipeline.cli``): Apache Beam without pandas.

``import apache_beam`` imports pandas (about 0.3 s of the program's start-up, measured: 1.2 s
against 0.9 s for ``import beam_pipeline.cli``) only to register Beam's pandas type hints,
which serve DataFrame-typed batched DoFns; NDCL's graph has none. So, when neither is imported
yet, Beam is imported while ``import pandas`` fails, and pandas stays importable afterwards
for the commands that use it (``ndcl evaluate``, ``ndcl report``). Worker processes that
Beam starts import Beam normally; the graph they run is the same.
"""

from __future__ import annotations

import sys


def import_beam_without_pandas() -> None:
    if "apache_beam" in sys.modules or "pandas" in sys.modules:
        return
    sys.modules["pandas"] = None  # type: ignore[assignment]  # `import pandas` raises
    try:
        import apache_beam  # noqa: F401
    finally:
        del sys.modules["pandas"]


import_beam_without_pandas()
