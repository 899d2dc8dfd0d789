"""``beam_pipeline.run``: the accounting check, and the service error found in a worker's text."""

from __future__ import annotations

import pytest

from beam_pipeline.run import AccountingError, check_accounting, service_error_from


def test_check_accounting_is_an_error() -> None:
    check_accounting({"read": 5, "kept": 3, "duplicates": 1, "rejected": 1})
    with pytest.raises(AccountingError, match="read=5 but kept\\+duplicates\\+rejected=4"):
        check_accounting({"read": 5, "kept": 3, "duplicates": 1, "rejected": 0})


def test_service_error_from_worker_text() -> None:
    text = ("Pipeline job failed ... Traceback (most recent call last):\n  File ...\n"
            "runners.kmeans.service.ServiceUnavailableError: K-Means service 'ndcl-kmeans' at "
            "h:1 did not complete predict [while running 'PredictClusters']\n\n")
    error = service_error_from(RuntimeError(text))
    assert type(error).__name__ == "ServiceUnavailableError"
    assert str(error) == ("K-Means service 'ndcl-kmeans' at h:1 did not complete predict "
                          "[while running 'PredictClusters']")
    assert service_error_from(RuntimeError("some other failure")) is None
