"""``beam_pipeline.report_data``: which recorded runs a report shows by default."""

from __future__ import annotations

import pytest

from beam_pipeline import report_data


def test_select_ids_defaults_to_the_newest_of_each_kind() -> None:
    rows = [(6, "run", "nd_cl"), (5, "dedup", None), (4, "run", "cl_nd"), (3, "run", "nd_cl"),
            (2, "cluster", "cl"), (1, "dedup", None)]
    assert report_data.select_ids(rows, None, None) == [2, 4, 5, 6]
    assert report_data.select_ids(rows, None, 3) == [4, 5, 6]
    assert report_data.select_ids(rows, [3, 1, 3], None) == [1, 3]
    with pytest.raises(report_data.ReportError, match="no run"):
        report_data.select_ids(rows, [7], None)
