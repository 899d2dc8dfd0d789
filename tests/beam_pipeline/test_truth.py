"""``beam_pipeline.truth``: truth files (parsing, malformed files as clear errors)."""

from __future__ import annotations

import pytest

from beam_pipeline.metrics import cluster_labels
from beam_pipeline.truth import TruthFileError, parse_truth

# --------------------------------------------------------------------------- truth files


@pytest.mark.parametrize(("obj", "message"), [
    ([["a", "b"]], "expected a JSON object"),
    ({"threshold": 0.7}, "expected a JSON object"),
    ({"clusters": {"a": 1}}, "must be a list of lists"),
    ({"clusters": [["a", "b"], "c"]}, r"clusters\[1\] is str"),
    ({"clusters": [["a", 1.5]]}, r"clusters\[0\]\[1\] is 1.5"),
    ({"clusters": [["a", True]]}, r"clusters\[0\]\[1\] is True"),
    ({"clusters": [["a", "b"], ["c", "a"]]}, r"in clusters\[0\] and clusters\[1\]"),
    ({"clusters": [["a", "b", "a"]]}, "listed twice"),
    ({"clusters": [], "pairs": {"a": "b"}}, "must be a list of \\[id, id, jaccard\\]"),
    ({"clusters": [], "pairs": [["a", "b"]]}, r"pairs\[0\] is list"),
    ({"clusters": [], "pairs": [["a", "b", 1.5]]}, r"pairs\[0\]\[2\] is 1.5"),
    ({"clusters": [], "pairs": [["a", "b", "0.9"]]}, r"pairs\[0\]\[2\] is '0.9'"),
    ({"clusters": [], "pairs": [["a", None, 0.9]]}, r"pairs\[0\]\[1\] is None"),
    ({"clusters": [], "pairs": [["a", "a", 0.9]]}, "with itself"),
    ({"clusters": [], "identical": [["a", "b"], ["b", "c"]]}, "groups must be disjoint"),
])
def test_malformed_truth_files_are_clear_errors(obj: object, message: str) -> None:
    with pytest.raises(TruthFileError, match=message):
        parse_truth(obj, "t.json")


def test_truth_ids_may_be_integers_and_extra_keys_are_metadata() -> None:
    truth = parse_truth({"threshold": 0.7, "clusters": [[12345, "a"], ["z"]]}, "t.json")
    assert truth.clusters == [["12345", "a"], ["z"]] and truth.metadata == {"threshold": 0.7}
    # A one-document cluster has no pair and nothing to remove.
    assert cluster_labels(truth.clusters) == {"12345": 0, "a": 0}
