"""``runners.kmeans.service_cli``: the service flags' defaults are the service config's."""

from __future__ import annotations

import pytest


def test_service_flag_defaults_are_the_service_config_defaults() -> None:
    pytest.importorskip("ray")
    from runners.kmeans import service, service_cli

    cfg = service.ServiceConfig()
    shown = {k: v for k, v in service_cli.DEFAULTS.items() if k != "state_file"}
    assert shown == {k: getattr(cfg, k) for k in shown}
    assert service_cli.DEFAULTS["state_file"] == str(service.DEFAULT_STATE_FILE)
