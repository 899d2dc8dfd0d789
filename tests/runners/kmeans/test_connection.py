"""ensure_ray's retry of a Ray Client server that died while starting, with a fake ray.init
(the failure itself is a race on the head that a test cannot provoke on demand)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

pytest.importorskip("ray")

from runners.kmeans import connection
from runners.kmeans.errors import ServiceUnavailableError

START_FAILED = ("Initialization failure from server: RuntimeError: Starting Ray client server "
                "failed. See ray_client_server_23000.err for detailed logs.")


@pytest.fixture
def listening_address() -> Iterator[str]:
    """A ray:// address whose port accepts TCP, so the probes pass and ray.init is reached."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield f"ray://127.0.0.1:{server.getsockname()[1]}"
    connection._CONNECTED_ADDRESS.clear()


def fake_init(monkeypatch: pytest.MonkeyPatch, errors: list[Exception]) -> list[str]:
    calls: list[str] = []

    def init(address: str, namespace: str) -> None:
        calls.append(address)
        if errors:
            raise errors.pop(0)

    monkeypatch.setattr(connection, "_init", init)
    monkeypatch.setattr(connection.time, "sleep", lambda _s: None)
    return calls


def test_client_server_start_failure_is_retried(monkeypatch: pytest.MonkeyPatch,
                                                 listening_address: str) -> None:
    calls = fake_init(monkeypatch, [ConnectionAbortedError(START_FAILED)])
    connection.ensure_ray(listening_address, "ns", timeout_s=10)
    assert calls == [listening_address, listening_address]
    assert connection._CONNECTED_ADDRESS == [listening_address]


def test_start_failure_is_retried_after_the_connect_timeout(monkeypatch: pytest.MonkeyPatch,
                                                            listening_address: str) -> None:
    """Ray's proxy waits 30 s for the per-client server before it reports the failure, so the
    first try ends after ``timeout_s``; the retry must not depend on time left (CI, d993d17)."""
    now = [0.0]
    calls: list[str] = []

    def slow_failing_init(address: str, namespace: str) -> None:
        calls.append(address)
        now[0] += 31.0
        if len(calls) == 1:
            raise ConnectionAbortedError(START_FAILED)

    monkeypatch.setattr(connection, "_init", slow_failing_init)
    monkeypatch.setattr(connection.time, "sleep", lambda _s: None)
    monkeypatch.setattr(connection.time, "monotonic", lambda: now[0])
    connection.ensure_ray(listening_address, "ns", timeout_s=30)
    assert calls == [listening_address, listening_address]


def test_client_server_start_failure_gives_up_after_its_attempts(
        monkeypatch: pytest.MonkeyPatch, listening_address: str) -> None:
    calls = fake_init(monkeypatch, [ConnectionAbortedError(START_FAILED)] * 5)
    with pytest.raises(ServiceUnavailableError, match="Starting Ray client server failed"):
        connection.ensure_ray(listening_address, "ns", timeout_s=10)
    assert len(calls) == connection.CLIENT_SERVER_ATTEMPTS


def test_other_connection_errors_are_not_retried(monkeypatch: pytest.MonkeyPatch,
                                                 listening_address: str) -> None:
    calls = fake_init(monkeypatch, [ConnectionError("version mismatch"), None])
    with pytest.raises(ServiceUnavailableError, match="version mismatch"):
        connection.ensure_ray(listening_address, "ns", timeout_s=10)
    assert len(calls) == 1


def test_start_failure_predicate() -> None:
    assert connection._client_server_start_failed(ConnectionAbortedError(START_FAILED))
    assert not connection._client_server_start_failed(ConnectionError("version mismatch"))
